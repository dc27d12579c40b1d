"""A failure the user fixes from its message is one line and exit 1, wherever its type is defined."""

import ast
import importlib.util
from pathlib import Path

from typer.testing import CliRunner

import pipeline
from pipeline.cli import app
from pipeline.errors import UserError

ROOT = Path(pipeline.__file__).parent


def test_the_errors_module_imports_nothing_of_the_package():
    tree = ast.parse((ROOT / "errors.py").read_text())
    imported = [
        node.module or "" if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    ]
    assert [name for name in imported if name.startswith("pipeline")] == []


class QuotaExhausted(UserError):
    """A user error that no list names: its type says it, where it is defined."""


def test_a_user_error_defined_anywhere_ends_a_command_in_one_line_and_exit_1(monkeypatch):
    def refuse(stream=None):
        raise QuotaExhausted("the bucket's quota is used up: raise it or run litelora gc")

    monkeypatch.delenv("LITELORA_DEBUG", raising=False)
    monkeypatch.setattr("pipeline.cli.orchestrator.open_registry", refuse)
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines() == [
        "error: the bucket's quota is used up: raise it or run litelora gc"
    ]


def test_a_user_error_ends_the_ray_job_entry_point_in_one_line_and_exit_1(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("watch_job", ROOT.parent / "jobs" / "watch.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)

    def refuse(conn, options):
        raise QuotaExhausted("the bucket's quota is used up")

    monkeypatch.setattr(job, "connection", lambda settings: None)
    monkeypatch.setattr(job, "build_watcher", refuse)
    monkeypatch.setattr("sys.argv", ["watch.py", "--once"])
    assert job.main() == 1
    assert capsys.readouterr().err.strip().splitlines() == ["error: the bucket's quota is used up"]
