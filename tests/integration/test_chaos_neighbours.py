"""Hostile neighbours on a shared host: loopback is every local user's, so each server of the embedded stack
asks for this installation's secrets, and `up` reports only servers it started itself."""

import os
import stat
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import psutil
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.registry.lineage import Lineage
from pipeline.stack import embedded, process
from pipeline.stack.embedded import Credentials, StackState
from pipeline.stack.process import free_port

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
runner = CliRunner()


def _flag(state: StackState, name: str) -> int:
    seaweed = next(p for p in state.processes if p.name == "seaweedfs")
    return int(next(a for a in seaweed.argv if a.startswith(f"-{name}=")).split("=", 1)[1])


def _status(url: str, method: str = "GET", data: bytes | None = None, auth: str | None = None) -> int:
    request = urllib.request.Request(url, data=data, method=method)
    if auth:
        request.add_header("Authorization", auth)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_neighbour_without_the_keys_can_neither_read_nor_write_the_bucket(stack_home, chaos_report):
    state = StackState.load(stack_home)
    key = f"{state.bucket}/neighbour.txt"
    anonymous = {
        "S3 put": _status(f"{state.s3_endpoint}/{key}", "PUT", b"planted"),
        "S3 get": _status(f"{state.s3_endpoint}/{state.bucket}/"),
    }
    wrong_key = boto3.client(
        "s3",
        endpoint_url=state.s3_endpoint,
        aws_access_key_id=Credentials.load_or_create(stack_home).access_key,
        aws_secret_access_key="not-the-secret",
        region_name="us-east-1",
    )
    with pytest.raises(ClientError) as refused:
        wrong_key.put_object(Bucket=state.bucket, Key="neighbour.txt", Body=b"planted")
    # The filer's own HTTP port writes into the bucket's folder without S3's signature check.
    filer = f"http://127.0.0.1:{_flag(state, 'filer.port')}/buckets/{key}"
    behind_s3 = {
        "filer put": _status(filer, "PUT", b"planted"),
        "filer get": _status(f"http://127.0.0.1:{_flag(state, 'filer.port')}/buckets/{state.bucket}/"),
        "filer delete": _status(filer, "DELETE"),
        "volume read": _status(f"http://127.0.0.1:{_flag(state, 'volume.port')}/1,01"),
    }
    assert anonymous == {"S3 put": 403, "S3 get": 403}
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert behind_s3 == {"filer put": 401, "filer get": 401, "filer delete": 401, "volume read": 401}
    chaos_report(
        expected="S3 without a signature or with a wrong key: 403; the filer and volume ports without this "
        "installation's JWT: 401",
        observed=f"{anonymous | behind_s3}, wrong key 403",
    )


def test_mlflow_refuses_a_neighbour_and_lets_the_pipeline_in(
    stack_home, stack_env, chaos_report, monkeypatch
):
    state = StackState.load(stack_home)
    search = f"{state.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    refused = {
        "no login": _status(search),
        "wrong password": _status(search, auth=_basic("litelora", "guessed-password")),
        "move current, no login": _status(
            f"{state.mlflow_uri}/api/2.0/mlflow/registered-models/alias",
            "POST",
            b'{"name": "litelora-adapter-set", "alias": "current", "version": "1"}',
        ),
    }
    assert refused == {"no login": 401, "wrong password": 401, "move current, no login": 401}
    password = Credentials.load_or_create(stack_home).mlflow_password
    assert _status(search, auth=_basic(embedded.MLFLOW_USERNAME, password)) == 200
    printed = runner.invoke(app, ["env"]).output
    assert f"export MLFLOW_TRACKING_PASSWORD={password}" in printed
    # The pipeline's own client, given only the connection (as a Ray worker is), logs in.
    from pipeline.settings import connection, load_settings

    conn = connection(load_settings())
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    assert Lineage(conn).client.search_experiments(max_results=1)
    chaos_report(
        expected="MLflow without this installation's login: 401; the pipeline's client logs in",
        observed=f"{refused}, 200 with the login; `litelora env` exports it; Lineage from the connection alone "
        "works",
    )


def test_the_state_directories_are_private(stack_home):
    modes = {
        name: oct(stat.S_IMODE(os.stat(stack_home / name).st_mode))
        for name in ("seaweedfs", "mlflow", "logs")
    }
    assert modes == {"seaweedfs": "0o700", "mlflow": "0o700", "logs": "0o700"}


def _owns(state: StackState, name: str, port: int) -> bool:
    server = next(p for p in state.processes if p.name == name)
    proc = psutil.Process(server.pid)
    return any(
        c.status == psutil.CONN_LISTEN and c.laddr.port == port
        for member in [proc, *proc.children(recursive=True)]
        for c in member.net_connections(kind="inet")
    )


def _ports(state: StackState) -> tuple[int, int]:
    return int(state.s3_endpoint.rsplit(":", 1)[1]), int(state.mlflow_uri.rsplit(":", 1)[1])


def test_two_installations_started_at_the_same_moment_each_report_their_own_servers(
    tmp_path, monkeypatch, chaos_report
):
    monkeypatch.setattr(embedded, "PREFERRED_PORTS", {"s3": free_port(), "mlflow": free_port()})
    homes, states, errors = [tmp_path / "alice", tmp_path / "bob"], {}, []

    def up(home):
        try:
            states[home.name] = embedded.up(home)[0]
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=up, args=(home,)) for home in homes]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        alice, bob = states["alice"], states["bob"]
        assert set(_ports(alice)).isdisjoint(_ports(bob))
        for state in (alice, bob):
            s3_port, mlflow_port = _ports(state)
            assert _owns(state, "seaweedfs", s3_port) and _owns(state, "mlflow", mlflow_port)
        search = f"{bob.mlflow_uri}/api/2.0/mlflow/experiments/search?max_results=1"
        bob_login = Credentials.load_or_create(homes[1]).mlflow_password
        assert _status(search, auth=_basic(embedded.MLFLOW_USERNAME, bob_login)) == 200
    finally:
        for home in homes:
            embedded.down(home)
    chaos_report(
        expected="two `up`s at the same moment on the same preferred ports: each on its own ports, each "
        "reporting the servers it started",
        observed=f"alice {_ports(alice)}, bob {_ports(bob)}; each port held by its own server",
    )


class _Impostor(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def test_a_stranger_holding_the_mlflow_port_is_never_reported_as_the_stack(
    tmp_path, monkeypatch, chaos_report
):
    stranger = ThreadingHTTPServer(("127.0.0.1", 0), _Impostor)  # answers /health with 200, like MLflow
    taken = stranger.server_address[1]
    threading.Thread(target=stranger.serve_forever, daemon=True).start()
    monkeypatch.setattr(embedded, "PREFERRED_PORTS", {"s3": free_port(), "mlflow": taken})
    # The stranger took the port between `up`'s look at it and its server's bind.
    looked = process.port_is_free
    monkeypatch.setattr(process, "port_is_free", lambda port: port == taken or looked(port))
    try:
        state, _ = embedded.up(tmp_path / "home")
        try:
            mlflow_port = _ports(state)[1]
            assert mlflow_port != taken and _owns(state, "mlflow", mlflow_port)
        finally:
            embedded.down(tmp_path / "home")
    finally:
        stranger.shutdown()
    chaos_report(
        expected="a stranger on the preferred MLflow port (answering /health): `up` moves to another port",
        observed=f"stranger on {taken}; the stack's MLflow on {mlflow_port}, held by its own process",
    )
