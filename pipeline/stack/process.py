"""Start a server as a detached process with its log in the state directory, wait for health, stop by PID."""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from pipeline.errors import UserError


class StackError(RuntimeError, UserError):
    """A server of the stack could not be started, checked or stopped; the message says which and why."""


class PortTaken(StackError):
    """Another process holds the port a server was started on (it took it between our look and the bind)."""

    def __init__(self, server: str, port: int):
        super().__init__(f"{server}: port {port} was taken by another process")
        self.server, self.port = server, port


# What the servers log when their port is held by someone else: uvicorn/Go, and weed mini's own port check.
_PORT_TAKEN_LOG = re.compile(r"address already in use|port \d+ .*is not available", re.IGNORECASE)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the servers bind: a port whose last connections linger in TIME_WAIT is free to them.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_port(preferred: int | None, taken: set[int]) -> int:
    """The preferred port if it is free, otherwise any free loopback port not already handed out."""
    if preferred and preferred not in taken and port_is_free(preferred):
        taken.add(preferred)
        return preferred
    while True:
        port = free_port()
        # SeaweedFS opens a gRPC port at +10000 of each HTTP port; keep both free.
        if port not in taken and port + 10000 < 65536 and port_is_free(port + 10000):
            taken.update({port, port + 10000})
            return port


@dataclass
class ServerProcess:
    name: str
    pid: int
    create_time: float
    log: str
    argv: list[str] = field(default_factory=list)
    """How it was started (no secrets: those travel in the environment), so it can be started again alike."""
    log_offset: int = 0
    """Where this start's lines begin in the (appended) log."""

    def alive(self) -> bool:
        """True only for the very process we started (a reused PID is not ours)."""
        try:
            proc = psutil.Process(self.pid)
            return abs(proc.create_time() - self.create_time) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        proc = psutil.Process(self.pid)
        family = [*proc.children(recursive=True), proc]
        for p in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.terminate()
        _, survivors = psutil.wait_procs(family, timeout=timeout)
        for p in survivors:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(survivors, timeout=5)

    def to_dict(self) -> dict:
        return asdict(self)

    def listens_on(self, port: int) -> bool:
        """True when this process (or a child it started) holds the listening socket of `port`: then a probe
        of the port reaches this server, not another installation's or a stranger's."""
        try:
            proc = psutil.Process(self.pid)
            family = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            return False
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                for conn in member.net_connections(kind="inet"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                        return True
        return False

    def log_since_start(self) -> str:
        try:
            with open(self.log, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""


def start(name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path) -> ServerProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        offset = out.tell()
        try:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError as err:
            raise StackError(f"cannot start {name}: {argv[0]} not found") from err
    created = psutil.Process(proc.pid).create_time()
    return ServerProcess(name, proc.pid, created, str(log), list(argv), offset)


def wait_healthy(
    server: ServerProcess, check: Callable[[], bool], timeout: float, port: int | None = None
) -> float:
    """Seconds until `check()` passed; StackError (with the log's tail) if the process dies or time runs out.

    With `port`, the check counts only once `server` itself listens on it, so a server that lost its port to
    another process is never reported healthy on the strength of that process's answers (PortTaken)."""
    start_time = time.monotonic()
    while time.monotonic() - start_time < timeout:
        if not server.alive():
            if port is not None and _PORT_TAKEN_LOG.search(server.log_since_start()):
                raise PortTaken(server.name, port)
            raise StackError(f"{server.name} exited during start-up; last log lines:\n{_tail(server.log)}")
        try:
            if (port is None or server.listens_on(port)) and check():
                return time.monotonic() - start_time
        except Exception:  # noqa: BLE001, S110 - any failure of a probe just means "not yet"
            pass
        time.sleep(0.25)
    raise StackError(f"{server.name} not healthy after {timeout:.0f} s; last log lines:\n{_tail(server.log)}")


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
