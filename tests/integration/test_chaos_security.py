"""Security defaults of a local installation: every server it starts listens on loopback only; its S3 keys are
generated per installation, kept in 0600 files, and printed by `litelora env` alone."""

import json
import os
import stat

import psutil
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.stack.embedded import Credentials, StackState

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
runner = CliRunner()
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def _listening(processes: list[psutil.Process]) -> list[tuple[str, str, int]]:
    found = []
    for proc in processes:
        try:
            found += [
                (proc.name(), c.laddr.ip, c.laddr.port)
                for c in proc.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN
            ]
        except psutil.NoSuchProcess:
            pass
    return found


def _family(pid: int) -> list[psutil.Process]:
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def test_the_stack_listens_on_loopback_only(stack_home, chaos_report):
    state = StackState.load(stack_home)
    sockets = _listening([p for server in state.processes for p in _family(server.pid)])
    assert len(sockets) >= 5, sockets  # the S3 gateway, filer, master, volume (+ gRPC) and MLflow
    assert [s for s in sockets if s[1] not in LOOPBACK] == []
    chaos_report(
        case="stack binds",
        expected="SeaweedFS and MLflow listen on 127.0.0.1 only",
        observed=f"{len(sockets)} listening sockets, all loopback",
    )


@pytest.mark.ray
def test_the_local_ray_node_listens_on_loopback_only(ray_node, chaos_report):
    import ray

    @ray.remote
    def ping() -> int:
        return os.getpid()

    ray.get(ping.remote())  # a worker process is up, and listening, too
    sockets = _listening(
        _family(os.getpid())
    )  # this driver and every process it started (Ray's, the stack's)
    assert len([s for s in sockets if s[0] in ("gcs_server", "raylet")]) >= 2, sockets
    assert [s for s in sockets if s[1] not in LOOPBACK] == []
    chaos_report(
        case="local Ray node binds",
        expected="every Ray process listens on 127.0.0.1 only",
        observed=f"{len(sockets)} listening sockets across the driver and its Ray processes, all loopback",
    )


def test_keys_are_per_installation_in_0600_files_and_only_env_prints_them(
    stack_home, stack_env, tmp_path, chaos_report
):
    secret = Credentials.load_or_create(stack_home).secret_key
    other = Credentials.load_or_create(tmp_path / "another-installation")
    assert (
        other.secret_key != secret and other.access_key != Credentials.load_or_create(stack_home).access_key
    )

    holding = []
    for root, _, files in os.walk(stack_home):
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    if secret.encode() in f.read():
                        holding.append(path)
            except OSError:
                pass  # sockets and the like
    assert holding, "the keys are somewhere in the state directory"
    assert {oct(stat.S_IMODE(os.stat(p).st_mode)) for p in holding} == {"0o600"}, holding
    state = StackState.load(stack_home)
    for server in state.processes:
        for proc in _family(server.pid):
            assert secret not in " ".join(proc.cmdline()), f"{proc.name()} has the key on its command line"

    printed = {
        verb: runner.invoke(app, list(verb)).output
        for verb in (("up", "--json"), ("status",), ("lineage", "--json"), ("env",))
    }
    assert [v for v, out in printed.items() if secret in out] == [("env",)]
    chaos_report(
        case="keys",
        expected="generated per installation, 0600, printed only by `litelora env`",
        observed=f"{len(holding)} file(s) hold the secret, all 0600; not on any command line; "
        f"of {', '.join(' '.join(v) for v in printed)} only env prints it",
    )
    assert json.loads(printed[("up", "--json")])["started"] is False
