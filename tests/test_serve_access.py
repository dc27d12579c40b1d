"""Who may call `litelora serve`: refused beyond loopback without a token, before anything else is touched."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.serving.access import AccessRefused, authorized, check_exposure, read_token, token_digest

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


def test_serving_on_a_remote_ray_cluster_without_a_token_is_refused_before_the_registry_is_touched(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("LITELORA_HOME", str(tmp_path / "nothing-here"))
    for var in ("LITELORA_BUCKET", "MLFLOW_TRACKING_URI", "LITELORA_SERVE_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "ray://ray-head.litelora.svc:10001")
    result = runner.invoke(app, ["serve"])  # loopback, as by default: but the cluster's loopback, not ours
    assert result.exit_code == 1
    assert "refusing to serve on the Ray cluster at ray://ray-head.litelora.svc:10001" in result.stderr
    assert not (tmp_path / "nothing-here").exists()
    for remote in ("10.0.0.5:6379", "http://[2001:db8::1]:8265", "ray://head:10001"):
        with pytest.raises(AccessRefused):
            check_exposure("127.0.0.1", None, remote)
    for local in ("127.0.0.1:6379", "ray://localhost:10001", "[::1]:6379", "auto", "local", None):
        check_exposure("127.0.0.1", None, local)
    check_exposure("127.0.0.1", "a-long-enough-secret-token", "ray://head:10001")


def test_a_serve_proxy_already_listening_beyond_loopback_is_refused_without_a_token_and_nothing_deployed(
    monkeypatch,
):
    """`serve.start` on a cluster where Serve already runs keeps the running proxy's HTTP options: a loopback-only
    `litelora serve` without a token would have answered on 0.0.0.0."""
    import ray.serve.context
    from ray import serve
    from ray.serve.config import HTTPOptions

    from pipeline.orchestrator import ray_node
    from pipeline.serving import app as serving_app

    deployed = []
    running = SimpleNamespace(http_config=HTTPOptions(host="0.0.0.0", port=8000))
    monkeypatch.setattr(ray_node, "init_ray", lambda home: None)
    monkeypatch.setattr(serve, "start", lambda **options: None)  # keeps the running proxy, as Serve does
    monkeypatch.setattr(ray.serve.context, "_get_global_client", lambda: running)
    monkeypatch.setattr(serve, "run", lambda app, **options: deployed.append(app))
    conn = SimpleNamespace(cache_dir=Path("/nonexistent/cache"))
    with pytest.raises(AccessRefused, match="its proxy listens on 0.0.0.0, not on 127.0.0.1"):
        serving_app.run_server(conn, host="127.0.0.1", port=8123)
    assert deployed == []
    with_token = serving_app.run_server(
        conn, host="127.0.0.1", port=8123, token_digest=token_digest("x" * 20)
    )
    assert with_token == ("0.0.0.0", 8000) and len(deployed) == 1, (
        "with a token it serves where Serve listens"
    )
