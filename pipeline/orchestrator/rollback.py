"""`litelora rollback`: make an earlier set `current` again. Nothing is deleted; the next task builds on it."""

from __future__ import annotations

from pipeline.errors import UserError
from pipeline.registry.lineage import AliasMove, LineageError
from pipeline.registry.store import Registry


class RollbackRefused(ValueError, UserError):
    """The version must not become current (the promotion guard rejected it); `current` is unchanged."""


def rollback(registry: Registry, version: str, reason: str = "", force: bool = False) -> AliasMove | None:
    """Move `current` to `version` after checking its files in the bucket (not a cached copy); None if it is
    current already. A version the promotion guard rejected needs `force`."""
    lineage = registry.lineage
    target = lineage.get(version)
    try:
        now = registry.pointer.version()
    except LineageError:  # `current`'s version was deleted from MLflow: a rollback is the way out
        now = None
    if now == target.version:
        return None
    if target.tags.get("promotion") == "rejected" and not force:
        raise RollbackRefused(
            f"v{target.version} was rejected by the promotion guard "
            f"({target.tags.get('rejected_reason', '')}); add --force to make it current anyway"
        )
    registry.sets.verify(registry.sets.set_id_from_uri(target.source))
    return registry.pointer.move(target.version, kind="rollback", reason=reason)
