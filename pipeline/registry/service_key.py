"""The service's own key: a MAC on the state it writes to the bucket and later trusts, so that bytes anyone else
put there (a dropper's key, a stray writer) are never taken for it.

LITELORA_STATE_KEY when set (a Secret on a cluster), else a random key created once in <home>/state-key (0600).
The key never goes to the bucket, to Ray's object store or to MLflow: only the driver that seals and opens holds it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.settings import Settings

KEY_FILE = "state-key"
MIN_KEY_CHARS = 32


class WeakStateKey(ValueError):
    """LITELORA_STATE_KEY is too short to be a secret."""


@dataclass(frozen=True)
class ServiceKey:
    secret: bytes = field(repr=False)

    @classmethod
    def load(cls, settings: Settings) -> ServiceKey:
        if settings.state_key is not None:
            value = settings.state_key.get_secret_value().strip()
            if len(value) < MIN_KEY_CHARS:
                raise WeakStateKey(
                    f"LITELORA_STATE_KEY has {len(value)} characters; use at least {MIN_KEY_CHARS} random ones "
                    "(e.g. `openssl rand -hex 32`)"
                )
            return cls(value.encode())
        return cls.load_or_create(settings.home)

    @classmethod
    def load_or_create(cls, home: Path) -> ServiceKey:
        path = home / KEY_FILE
        if not path.exists():
            home.mkdir(parents=True, exist_ok=True)
            # Written whole under a private name, then linked into place: a second process starting at the same
            # moment either wins the link or reads the winner's complete key, never a half-written one.
            draft = home / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        value = path.read_text().strip()
        if len(value) < MIN_KEY_CHARS:
            raise WeakStateKey(f"{path} holds {len(value)} characters; delete it to have a new key made")
        return cls(value.encode())

    def _mac(self, purpose: str, body: str) -> str:
        message = f"litelora/{purpose}\n{body}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def seal(self, purpose: str, record: dict) -> bytes:
        """`record` as JSON with its MAC; `purpose` keeps a record of one kind from passing for another."""
        body = json.dumps(record, sort_keys=True, separators=(",", ":"))
        return json.dumps({"body": body, "mac": self._mac(purpose, body)}).encode()

    def open(self, purpose: str, data: bytes) -> dict | None:
        """The record `seal` wrote for `purpose` with this key; None for anything else (not JSON, no MAC, edited,
        another key's or another purpose's)."""
        try:
            doc = json.loads(data)
            body, mac = doc["body"], doc["mac"]
        except (ValueError, TypeError, KeyError, RecursionError):
            return None
        if not (isinstance(body, str) and isinstance(mac, str)):
            return None
        if not hmac.compare_digest(self._mac(purpose, body), mac):
            return None
        record = json.loads(body)
        return record if isinstance(record, dict) else None
