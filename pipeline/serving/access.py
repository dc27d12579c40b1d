"""Who may call `litelora serve`: anyone on loopback; beyond it, only requests that carry the bearer token.

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


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token, before anything else is touched."""
    if token is None and not is_loopback(host):
        raise AccessRefused(
            f"refusing to listen on {host} without a token: anyone who reaches it could query your models; "
            "pass --token-file PATH (created 0600 if absent; or a mounted secret)"
        )


def authorized(authorization: str | None, digest: str | None) -> bool:
    """Whether a request with this Authorization header may be answered (anything goes without a token)."""
    if digest is None:
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token_digest(presented.strip()), digest)
