"""Who may call `litelora serve`: anyone on loopback; beyond it, only requests that carry the bearer token.

"Beyond it" is judged three times: the host asked for, the Ray cluster joined (RAY_ADDRESS on another machine:
its proxies are reached from that machine's network), and the host Serve's proxy really listens on once started
(on a cluster where Serve already runs, `serve.start` keeps the proxy it finds, whatever host was asked).

The token lives in a file only its owner can read (or a mounted secret). Replicas receive its SHA-256, never the
token itself, so it is not in Ray's object store or dashboard.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

MIN_TOKEN_CHARS = 16


class AccessRefused(ValueError):
    """The server would be reachable beyond this machine without a token, or the token file is unsafe."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def read_token(path: Path, create: bool = True) -> tuple[str, bool]:
    """The token in `path` (created with a fresh random token, mode 0600, if absent and `create`); True if it
    was created now. A file anyone may read, or group or others may write, is refused; group-read is allowed,
    as a Kubernetes Secret mounted with `defaultMode: 0440` and an `fsGroup` is."""
    if not path.exists() and not path.is_symlink() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        return read_token(path, create=False)[0], True
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        raise AccessRefused(f"{path} points nowhere (a dangling link?)") from None
    if mode & 0o026:
        raise AccessRefused(f"{path} can be read or changed by others (mode {mode:03o}): chmod 600 {path}")
    token = path.read_text().strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise AccessRefused(
            f"the token in {path} has {len(token)} characters; use at least {MIN_TOKEN_CHARS}"
        )
    return token, False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def names_a_remote_cluster(ray_address: str | None) -> bool:
    """Whether RAY_ADDRESS joins a cluster on another machine (`auto` and `local` are this machine's)."""
    if not ray_address or ray_address in ("auto", "local"):
        return False
    host = urlsplit(ray_address if "://" in ray_address else f"//{ray_address}").hostname
    return host is None or not is_loopback(host)


def check_exposure(host: str, token: str | None, ray_address: str | None = None) -> None:
    """Refuse to listen beyond loopback, or to serve from another machine's cluster, without a token, before
    anything else is touched."""
    if token is not None:
        return
    if not is_loopback(host):
        raise AccessRefused(
            f"refusing to listen on {host} without a token: anyone who reaches it could query your models; "
            "pass --token-file PATH (created 0600 if absent; or a mounted secret)"
        )
    if names_a_remote_cluster(ray_address):
        raise AccessRefused(
            f"refusing to serve on the Ray cluster at {ray_address} without a token: its Serve proxies listen on "
            "that cluster's machines, not on this one's loopback; pass --token-file PATH"
        )


def check_listening(host: str | None, asked: str, guarded: bool) -> None:
    """Refuse to deploy behind a Serve proxy that really listens beyond loopback when requests need no token."""
    if guarded or host is None or is_loopback(host):  # host None: Serve's HTTP proxy is off
        return
    raise AccessRefused(
        f"Ray Serve already runs on this cluster and its proxy listens on {host}, not on {asked}: Serve keeps "
        "the proxy it finds. Refusing to serve there without a token; pass --token-file PATH, or run "
        "`serve shutdown` first if nothing else on the cluster uses Serve"
    )


def authorized(authorization: str | None, digest: str | None) -> bool:
    """Whether a request with this Authorization header may be answered (anything goes without a token)."""
    if digest is None:
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token_digest(presented.strip()), digest)
