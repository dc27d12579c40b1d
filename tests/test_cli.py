"""The `litelora` command as a user runs it, on the real MiniLM backbone and real WordNet data (CI tier)."""

import json

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.task_dataset import write_drop
from pipeline.data.wordnet import split_wordnet20

runner = CliRunner()


def test_every_command_has_help():
    names = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert len(names) == 18
    for args in ([], *([name] for name in names)):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, args


@pytest.mark.model
def test_bench_json_rows_carry_the_documented_fields(tmp_path):
    result = runner.invoke(
        app,
        [
            "bench",
            "--tier",
            "ci",
            "--methods",
            "litelora",
            "--orderings",
            "1993",
            "--epochs",
            "1",
            "--first-examples",
            "0",
            "--heads",
            "linear,aligned",
            "--out",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    by_head = {r["head"]: r for r in report["rows"] if r["method"] == "litelora"}
    assert set(by_head) == {"linear", "aligned"}
    # One training run scored two ways: same decisions and adapters, only the aligned head keeps statistics.
    assert by_head["linear"]["decisions"] == by_head["aligned"]["decisions"]
    assert by_head["linear"]["scoring_bytes_per_class"] == 0 < by_head["aligned"]["scoring_bytes_per_class"]
    rows = {r["method"]: r for r in report["rows"] if r["head"] != "aligned"}
    assert set(rows) == {"litelora", "ncm-frozen"}
    counts = [len(task.test_labels) for task in split_wordnet20(1993, "ci")]
    for row in rows.values():
        for key in ("method", "ordering", "avg_accuracy", "forgetting", "active_adapters", "stored_params"):
            assert key in row
        # R[j][t] is a count of task j's test rows over that count, and A the mean over stages of every seen
        # task's rows scored together: recomputed from the matrix and the tier's own test sets.
        matrix = row["accuracy_matrix"]
        correct = [[round(matrix[j][t] * counts[j]) for j in range(t + 1)] for t in range(5)]
        assert all(matrix[j][t] == correct[t][j] / counts[j] for t in range(5) for j in range(t + 1))
        pooled = [sum(correct[t]) / sum(counts[: t + 1]) for t in range(5)]
        assert row["avg_accuracy"] == pytest.approx(sum(pooled) / 5, rel=1e-12)
        assert row["final_accuracy"] == pytest.approx(pooled[-1], rel=1e-12)
    assert 1 <= rows["litelora"]["active_adapters"] <= 5
    assert (
        rows["ncm-frozen"]["avg_accuracy"] > 0.4
    )  # a real backbone on real data, far above chance (0.25 → 0.05)
    assert (tmp_path / "ci-o1993-heads.md").read_text().startswith("# Split-WordNet-20 benchmark")


@pytest.mark.model
def test_train_builds_a_set_then_a_child_set_on_top_of_it(tmp_path):
    tasks = split_wordnet20(1993, "ci")
    drops = [write_drop(t, tmp_path / f"task{i}") for i, t in enumerate(tasks[:2])]
    first = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(drops[0]),
            "--out",
            str(tmp_path / "v1"),
            "--epochs",
            "1",
            "--first-examples",
            "0",
            "--head",
            "prototype",
            "--json",
        ],
    )
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["decision"] == "recruit"
    assert json.loads((tmp_path / "v1" / "manifest.json").read_text())["config"]["first_examples"] == 0
    second = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(drops[1]),
            "--parent",
            str(tmp_path / "v1"),
            "--out",
            str(tmp_path / "v2"),
            "--json",
        ],
    )
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert summary["tasks"] == 2 and summary["decision"] in ("recruit", "reuse")
    manifest = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    assert manifest["parent"] == str(tmp_path / "v1")
    assert manifest["config"]["head"] == "prototype"  # a child keeps its lineage's head option


def test_train_on_an_invalid_dataset_exits_1_with_one_line_reason(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.parquet").write_bytes(b"not parquet")
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "bad"), "--out", str(tmp_path / "v1")])
    assert result.exit_code == 1
    assert "not a readable parquet file" in result.output
    assert not (tmp_path / "v1").exists()


def test_unknown_method_is_a_usage_error():
    result = runner.invoke(app, ["bench", "--methods", "nope"])
    assert result.exit_code == 2


def test_unknown_head_option_is_a_usage_error():
    assert runner.invoke(app, ["bench", "--heads", "linear,nope"]).exit_code == 2
    assert runner.invoke(app, ["train", "--data", ".", "--out", "x", "--head", "nope"]).exit_code == 2


def test_a_version_is_written_3_or_v3_and_anything_else_is_a_usage_error():
    from pipeline.registry.lineage import LineageError, parse_version

    assert parse_version("3") == parse_version("v3") == parse_version("V3") == "3"
    with pytest.raises(LineageError, match="not a version"):
        parse_version("latest")
    for args in (
        ["rollback", "latest"],
        ["export", "v3x", "--peft", "out"],
        ["predict", "--version", "x", "--text", "a"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "not a version" in result.output, args


def test_control_characters_from_a_drop_are_shown_escaped_never_sent_to_the_terminal(tmp_path):
    # A name holding an escape sequence would retitle, clear or rewrite the user's terminal.
    hostile = tmp_path / "drop\x1b]0;owned\x07\x1b[2J\r[red]x"
    result = runner.invoke(app, ["train", "--data", str(hostile), "--out", str(tmp_path / "v1")])
    assert result.exit_code == 1
    assert "\x1b" not in result.output and "\x07" not in result.output and "\r" not in result.output
    assert "drop\\x1b]0;owned\\x07\\x1b[2J\\r[red]x" in result.output
