"""`current` as a compare-and-set: a chain of links in the bucket that only one writer can extend, mirrored to
MLflow's alias `current` for the UI.

MLflow aliases have no compare-and-set, so two promoters that both read "current is P" could both move it. Here
moving `current` from P to C creates link n+1 (If-None-Match: *) after reading link n, whose target is P: of two
promoters only one creates link n+1, and the other learns that it lost. The alias follows the chain. The
registered model's tag `current_link` says which link the alias last mirrored; that tells an alias left behind
(a promoter died between its link and the alias: repaired from the chain) from a move made in the MLflow UI
(adopted as a new link). See docs/architecture.md, "Promotion".
"""

from __future__ import annotations

import getpass
import json
import random
import time
from dataclasses import asdict, dataclass

from mlflow.exceptions import MlflowException

from pipeline.registry.bucket import StorageError
from pipeline.registry.lineage import AliasMove, LineageError

LINKS = "current-links"
MAX_ROUNDS = 100
ANY = object()
"""`expected` for a move that does not depend on where `current` is (a rollback)."""


@dataclass(frozen=True)
class Link:
    """One move of `current`, as stored at `current-links/<registered model>/<seq>.json`."""

    seq: int
    from_version: str | None
    to_version: str | None
    kind: str  # promote | rollback | adopt | mlflow-ui
    reason: str
    who: str
    when: float

    def as_move(self) -> AliasMove:
        return AliasMove(self.from_version, self.to_version, self.who, self.when, self.reason, self.kind)


class CurrentPointer:
    """Reads and moves `current` of one registered model; `bucket` and `lineage` as in `Registry`."""

    def __init__(self, bucket, lineage, settle_s: float = 1.0):
        self.bucket, self.lineage = bucket, lineage
        self.prefix = f"{LINKS}/{lineage.name}/"
        self.settle_s = settle_s
        """How long an alias must stay off the chain before it counts as a move made in the MLflow UI."""
        self._known: Link | None = None
        """The last link seen. Links are never changed or removed, so the head is found by probing past it."""

    def links(self) -> list[Link]:
        """The whole chain, oldest first."""
        return [self._link(key) for key in sorted(self.bucket.list(self.prefix))]

    def _link(self, key: str) -> Link:
        # The key, not the body, is what only one writer could create: it says which link this is.
        return Link(**{**json.loads(self.bucket.get(key)), "seq": int(key.rsplit("/", 1)[-1].split(".")[0])})

    def _key(self, seq: int) -> str:
        return f"{self.prefix}{seq:012d}.json"

    def _head(self) -> Link | None:
        """The last link: one listing the first time, then one existence check per read (serving polls this)."""
        if self._known is None:
            keys = self.bucket.list(self.prefix)
            if not keys:
                return None
            self._known = self._link(max(keys))
        while self.bucket.exists(self._key(self._known.seq + 1)):
            self._known = self._link(self._key(self._known.seq + 1))
        return self._known

    def _mirror(self, link: Link, record: bool) -> None:
        """Point the alias at `link`'s target, then look again: a writer that was overtaken while it wrote
        mirrors the newer link too, so the last write always matches the chain's last link."""
        if record:
            self.lineage.record_move(link.as_move())
        while True:
            self.lineage.mirror_current(link.to_version, link.seq)
            newest = self._head()
            if newest is None or newest.seq <= link.seq:
                return
            link = newest

    def _state(self) -> tuple:
        head, alias = self._head(), self.lineage.current()
        alias_version = alias.version if alias else None
        mirrored = self.lineage.mirrored_link() if head is not None or alias_version is not None else None
        return head, alias_version, mirrored

    @staticmethod
    def _next(head: Link | None, to: str | None, kind: str, reason: str) -> Link:
        return Link(
            seq=head.seq + 1 if head else 0,
            from_version=head.to_version if head else None,
            to_version=to,
            kind=kind,
            reason=reason,
            who=getpass.getuser(),
            when=time.time(),
        )

    def _append(self, head: Link | None, to: str | None, kind: str, reason: str) -> Link | None:
        """Link head.seq + 1, or None if another writer created it first."""
        link = self._next(head, to, kind, reason)
        if not self.bucket.put_if_absent(self._key(link.seq), json.dumps(asdict(link)).encode()):
            return None
        self._known = link
        return link

    def _exists(self, version: str | None) -> bool:
        try:
            self.lineage.get(version)
        except LineageError:
            return False
        return True

    def head(self, reconcile: bool = True) -> Link | None:
        """The last link, after bringing the chain and the alias back in step. With `reconcile` False, or when
        the writes fail (read-only credentials), the same answer is computed and nothing is written."""
        for _ in range(MAX_ROUNDS):
            head, alias_version, mirrored = state = self._state()
            if head is None and alias_version is None:
                return None
            if head is not None and alias_version == head.to_version:
                if reconcile and mirrored != head.seq:
                    self._try(self._mirror, head, False)
                return head
            if head is not None and (alias_version is None or mirrored is None or mirrored < head.seq):
                # A move died between its link and the alias (or the alias was deleted): the chain is the truth.
                if not self._exists(head.to_version):
                    raise LineageError(
                        f"`current` is v{head.to_version}, which MLflow no longer has (deleted?): make an existing "
                        "version current with `litelora rollback VERSION`"
                    )
                if reconcile:
                    self._try(self._mirror, head, False)
                return head
            # The alias was moved outside the pipeline (the MLflow UI), or the lineage predates the chain. A
            # promoter between its two MLflow calls can look like that for an instant; a human move stays.
            time.sleep(self.settle_s)
            if self._state() != state:
                continue
            kind, reason = (
                ("adopt", "current as found in MLflow when the chain started")
                if head is None
                else ("mlflow-ui", "alias moved in MLflow")
            )
            adopted = self._next(head, alias_version, kind, reason)
            if not reconcile:
                return adopted
            written = self._try(self._append, head, alias_version, kind, reason)
            if written is False:  # could not write: the answer stands, the next writer records it
                return adopted
            if written is not None:
                self._mirror(written, record=True)
                return written
        raise LineageError(f"`current` kept moving under {MAX_ROUNDS} looks; try again")

    @staticmethod
    def _try(write, *args):
        """Run a reconciling write; False if storage or MLflow refused it (a reader goes on without it)."""
        try:
            return write(*args)
        except (LineageError, StorageError, MlflowException):
            return False

    def version(self, reconcile: bool = True) -> str | None:
        head = self.head(reconcile)
        return head.to_version if head else None

    def read(self, reconcile: bool = True):
        """The registered version under `current`, or None before a lineage's first set."""
        version = self.version(reconcile)
        return self.lineage.get(version) if version else None

    def move(self, to: str, kind: str, reason: str, expected=ANY) -> AliasMove | None:
        """Point `current` at `to` if it still points at `expected` (None: nothing is current), atomically;
        None if it does not (another writer won, or `current` had moved already). A rollback (`expected` ANY)
        also repairs a chain whose last version was deleted from MLflow."""
        self.lineage.get(to)  # refuse a version that does not exist before writing anything
        for _ in range(MAX_ROUNDS):
            try:
                head = self.head()
            except LineageError:
                if expected is not ANY:
                    raise
                head = self._head()
            now = head.to_version if head else None
            if expected is not ANY and now != expected:
                return None
            link = self._append(head, to, kind, reason)
            if link is not None:
                self._mirror(link, record=True)
                return link.as_move()
            time.sleep(random.uniform(0.0, 0.05))  # another writer took the link: look again, not in lockstep
        raise LineageError(
            f"could not move `current` to v{to}: other writers won {MAX_ROUNDS} times in a row"
        )
