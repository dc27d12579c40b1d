"""Who may call `litelora serve`: refused beyond loopback without a token, before anything else is touched."""

import os

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.serving.access import AccessRefused, authorized, read_token, token_digest

runner = CliRunner()


def test_serving_beyond_loopback_without_a_token_is_refused_before_the_registry_is_touched(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("LITELORA_HOME", str(tmp_path / "nothing-here"))  # no stack: touching it would fail
    for var in ("LITELORA_BUCKET", "MLFLOW_TRACKING_URI", "LITELORA_SERVE_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "refusing to listen on 0.0.0.0 without a token" in result.stderr
    assert not (tmp_path / "nothing-here").exists()


def test_a_missing_token_file_is_created_owner_only_and_read_back(tmp_path):
    path = tmp_path / "secrets" / "token"
    token, created = read_token(path)
    assert created and len(token) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert read_token(path) == (token, False)


def test_a_token_file_anyone_can_read_is_refused_and_a_group_readable_secret_mount_is_not(tmp_path):
    path = tmp_path / "token"
    path.write_text("a-long-enough-secret-token\n")
    os.chmod(path, 0o644)
    with pytest.raises(AccessRefused, match="chmod 600"):
        read_token(path)
    os.chmod(path, 0o440)  # a Kubernetes Secret mounted with defaultMode 0440 and an fsGroup
    assert read_token(path) == ("a-long-enough-secret-token", False)


def test_only_the_right_bearer_token_is_authorized():
    digest = token_digest("the-right-token-1234")
    assert authorized("Bearer the-right-token-1234", digest)
    assert authorized("bearer the-right-token-1234", digest), "the scheme is case-insensitive"
    assert not authorized(None, digest)
    assert not authorized("Bearer the-wrong-token-123", digest)
    assert not authorized("Basic dXNlcjpwYXNz", digest)
    assert authorized(None, None), "no token configured: loopback serving is open"
