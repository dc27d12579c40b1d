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
import time
from dataclasses import asdict, dataclass

from pipeline.registry.lineage import AliasMove

LINKS = "current-links"
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

    def links(self) -> list[Link]:
        """The whole chain, oldest first."""
        return [Link(**json.loads(self.bucket.get(key))) for key in sorted(self.bucket.list(self.prefix))]

    def _head(self) -> Link | None:
        keys = self.bucket.list(self.prefix)
        return Link(**json.loads(self.bucket.get(max(keys)))) if keys else None

    def _mirror(self, link: Link, record: bool) -> None:
        # A newer link's writer mirrors that link; writing ours now would put the alias behind the chain.
        head = self._head()
        if head is None or head.seq == link.seq:
            self.lineage.mirror_current(link.to_version, link.seq)
        if record:
            self.lineage.record_move(link.as_move())

    def _state(self) -> tuple:
        head, alias = self._head(), self.lineage.current()
        alias_version = alias.version if alias else None
        mirrored = self.lineage.mirrored_link() if head is not None or alias_version is not None else None
        return head, alias_version, mirrored

    def _append(self, head: Link | None, to: str | None, kind: str, reason: str) -> Link | None:
        """Link head.seq + 1, or None if another writer created it first."""
        link = Link(
            seq=head.seq + 1 if head else 0,
            from_version=head.to_version if head else None,
            to_version=to,
            kind=kind,
            reason=reason,
            who=getpass.getuser(),
            when=time.time(),
        )
        created = self.bucket.put_if_absent(
            f"{self.prefix}{link.seq:012d}.json", json.dumps(asdict(link)).encode()
        )
        return link if created else None

    def head(self) -> Link | None:
        """The last link, after bringing the chain and the alias back in step."""
        while True:
            head, alias_version, mirrored = state = self._state()
            if head is None and alias_version is None:
                return None
            if head is not None and alias_version == head.to_version:
                if mirrored != head.seq:
                    self._mirror(head, record=False)
                return head
            if head is not None and (alias_version is None or mirrored is None or mirrored < head.seq):
                # A move died between its link and the alias (or the alias was deleted): the chain is the truth.
                self._mirror(head, record=False)
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
            link = self._append(head, alias_version, kind, reason)
            if link is not None:
                self._mirror(link, record=True)
                return link

    def version(self) -> str | None:
        head = self.head()
        return head.to_version if head else None

    def read(self):
        """The registered version under `current`, or None before a lineage's first set."""
        version = self.version()
        return self.lineage.get(version) if version else None

    def move(self, to: str, kind: str, reason: str, expected=ANY) -> AliasMove | None:
        """Point `current` at `to` if it still points at `expected` (None: nothing is current), atomically;
        None if it does not (another writer won, or `current` had moved already)."""
        self.lineage.get(to)  # refuse a version that does not exist before writing anything
        while True:
            head = self.head()
            now = head.to_version if head else None
            if expected is not ANY and now != expected:
                return None
            link = self._append(head, to, kind, reason)
            if link is not None:
                self._mirror(link, record=True)
                return link.as_move()
