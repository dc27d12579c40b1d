"""The ledger: what happened to every dataset, in the bucket, built only on create-once writes.

    ledger/<dataset-id>/claims/<epoch>.json     a watcher's claim (epoch 0 first; a takeover writes epoch + 1)
    ledger/<dataset-id>/events/<seq>.json       one per state change, in order
    ledger/<dataset-id>/heartbeats/<epoch>-<n>  "still alive" while a long step runs
    ledger/<dataset-id>/duplicates/<stamp>.json a later drop of the same bytes

Every key is written with If-None-Match: *, so exactly one writer wins each claim epoch and each event slot
(SeaweedFS's If-Match compare-and-set is not atomic under contention; create-once is). A claim whose holder
has been silent for longer than the lease is expired and can be taken over by writing the next epoch.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import asdict, dataclass, field

from pipeline.registry.bucket import Bucket

STATES = (
    "pending",
    "claimed",
    "validating",
    "training",
    "evaluating",
    "registered",
    "rejected",
    "quarantined",
    "failed",
    "duplicate",
)
TERMINAL = frozenset({"registered", "rejected", "quarantined", "failed", "duplicate"})
PREFIX = "ledger"
RETRY_REQUESTED, TAKEN_OVER = "retry requested", "taken over from an expired claim"
MAX_ATTEMPTS = 3
"""Attempts whose watcher died before a drop counts as poison and fails, instead of being claimed for ever."""


class LostClaim(RuntimeError):
    """Another watcher took this dataset over (our lease expired); stop working on it."""


@dataclass
class Event:
    state: str
    at: float
    watcher: str
    epoch: int
    task: str = ""
    reason: str = ""
    version: str | None = None
    timings: dict = field(default_factory=dict)


@dataclass
class Entry:
    """One dataset's history as read from the bucket."""

    dataset_id: str
    events: list[Event]
    claims: list[dict]
    last_heartbeat: float = 0.0
    duplicates: list[dict] = field(default_factory=list)

    @property
    def state(self) -> str:
        return self.events[-1].state if self.events else "pending"

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def epoch(self) -> int:
        return len(self.claims) - 1

    def last_activity(self) -> float:
        times = [e.at for e in self.events] + [c["at"] for c in self.claims] + [self.last_heartbeat]
        return max(times, default=0.0)

    @property
    def task(self) -> str:
        return next((e.task for e in self.events if e.task), "")

    def dead_attempts(self) -> int:
        """Attempts since the last retry whose watcher went silent mid-drop (a later claim took them over):
        what a drop that kills its watcher (out of memory, a native crash) leaves behind."""
        dead = 0
        for event in self.events:
            if event.state == "pending" and event.reason.startswith(RETRY_REQUESTED):
                dead = 0
            elif event.state == "claimed" and event.reason.startswith(TAKEN_OVER):
                dead += 1
        return dead

    def summary(self) -> dict:
        last = self.events[-1] if self.events else None
        first = self.events[0].at if self.events else None
        return {
            "dataset_id": self.dataset_id,
            "task": self.task,
            "state": self.state,
            "reason": last.reason if last else "",
            "version": last.version if last else None,
            "claimed_by": self.claims[-1]["watcher"] if self.claims else None,
            "first_seen": first,
            "updated": last.at if last else None,
            "timings": _merged_timings(self.events),
            "history": [(e.state, e.at) for e in self.events],
        }


def _merged_timings(events: list[Event]) -> dict:
    out: dict = {}
    for e in events:
        out.update(e.timings)
    return out


class Ledger:
    def __init__(
        self,
        bucket: Bucket,
        watcher: str | None = None,
        lease_s: float = 120.0,
        max_attempts: int = MAX_ATTEMPTS,
    ):
        self.bucket = bucket
        self.watcher = watcher or f"watcher-{uuid.uuid4().hex[:8]}"
        self.lease_s = lease_s
        self.max_attempts = max_attempts
        self._beats = 0

    def _put(self, key: str, payload: dict) -> bool:
        return self.bucket.put_if_absent(key, json.dumps(payload).encode())

    def read(self, dataset_id: str) -> Entry:
        return self._entry(dataset_id, sorted(self.bucket.list(f"{PREFIX}/{dataset_id}/")))

    def _entry(self, dataset_id: str, keys: list[str]) -> Entry:
        base = f"{PREFIX}/{dataset_id}/"
        claims = [json.loads(self.bucket.get(k)) for k in keys if k.startswith(base + "claims/")]
        events = [Event(**json.loads(self.bucket.get(k))) for k in keys if k.startswith(base + "events/")]
        beats = [k for k in keys if k.startswith(base + "heartbeats/")]
        last_beat = max((json.loads(self.bucket.get(k))["at"] for k in beats[-3:]), default=0.0)
        dups = [json.loads(self.bucket.get(k)) for k in keys if k.startswith(base + "duplicates/")]
        return Entry(dataset_id, events, claims, last_beat, dups)

    def entries(self) -> list[Entry]:
        """Every dataset's history, from one listing of the ledger."""
        by_id: dict[str, list[str]] = {}
        for key in sorted(self.bucket.list(f"{PREFIX}/")):
            by_id.setdefault(key.split("/")[1], []).append(key)
        return [self._entry(i, keys) for i, keys in by_id.items()]

    def claim(self, dataset_id: str, task: str, now: float | None = None) -> Entry | None:
        """Claim a dataset (or take over an expired claim). None if another watcher holds it or it is done.

        A dataset queued again by `litelora retry`, or one this very watcher gave up on half-way (its storage
        went away mid-step), is claimed at once: nobody else is working on it. Taking over the `max_attempts`-th
        attempt that died ends the dataset `failed` (poison) instead: the entry returned is then terminal."""
        now = time.time() if now is None else now
        entry = self.read(dataset_id)
        if entry.terminal:
            return None
        ours = entry.claims and entry.claims[-1]["watcher"] == self.watcher
        # Requeued and nobody has claimed it since (a claim is written before its "claimed" event).
        requeued = bool(entry.events) and entry.state == "pending" and entry.events[-1].epoch == entry.epoch
        if entry.claims and not ours and not requeued and now - entry.last_activity() < self.lease_s:
            return None  # a live watcher holds it
        epoch = len(entry.claims)
        claim = {"watcher": self.watcher, "at": now, "epoch": epoch, "task": task}
        if not self._put(f"{PREFIX}/{dataset_id}/claims/{epoch:06d}.json", claim):
            return None  # another watcher won this epoch
        self._beats = 0
        entry.claims.append(claim)  # create-once: what we wrote is what is there
        reason = (
            ""
            if epoch == 0
            else RETRY_REQUESTED
            if requeued
            else "resumed by the same watcher"
            if ours
            else f"{TAKEN_OVER} (epoch {epoch - 1})"
        )
        self.record(entry, "claimed", task=task, reason=reason)
        if (dead := entry.dead_attempts()) >= self.max_attempts:
            self.record(
                entry,
                "failed",
                task=task,
                reason=f"poison: {dead} attempts died without a word (out of memory or a crash in native code?); "
                "`litelora retry` queues it again",
            )
        return entry

    def record(self, entry: Entry, state: str, **fields) -> None:
        """Append a state change; raises LostClaim if a newer claim exists or another writer took the slot."""
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        event = Event(state=state, at=time.time(), watcher=self.watcher, epoch=entry.epoch, **fields)
        while not self._append(entry, event):
            fresh = self.read(entry.dataset_id)
            if fresh.epoch != entry.epoch or fresh.claims[-1]["watcher"] != self.watcher:
                raise LostClaim(f"dataset {entry.dataset_id} was taken over by {fresh.claims[-1]['watcher']}")
            entry.events = fresh.events

    def _append(self, entry: Entry, event: Event) -> bool:
        """Write `event` into the next event slot; False if another writer took that slot first."""
        if not self._put(f"{PREFIX}/{entry.dataset_id}/events/{len(entry.events):06d}.json", asdict(event)):
            return False
        entry.events.append(event)
        return True

    def requeue(self, entry: Entry, who: str) -> None:
        """Mark a failed dataset as pending again (`litelora retry`): its next claim trains it afresh."""
        if entry.state not in ("failed", "pending"):
            raise ValueError(
                f"dataset {entry.dataset_id[:12]} is {entry.state}; only a failed drop can be retried"
            )
        if entry.state == "failed":
            event = Event(
                state="pending",
                at=time.time(),
                watcher=who,
                epoch=entry.epoch,
                task=entry.task,
                reason=f"{RETRY_REQUESTED} by {who}",
            )
            if not self._append(entry, event):
                raise ValueError(
                    f"dataset {entry.dataset_id[:12]} changed meanwhile; look at `litelora status`"
                )

    def heartbeat(self, entry: Entry) -> None:
        self._beats += 1
        self._put(
            f"{PREFIX}/{entry.dataset_id}/heartbeats/{entry.epoch:06d}-{self._beats:06d}.json",
            {"at": time.time(), "watcher": self.watcher},
        )

    def record_duplicate(self, dataset_id: str, task: str, source: str, arrived: float) -> bool:
        """Record a re-drop of finished bytes, once per drop (keyed by where and when it arrived, which every
        watcher sees alike). False if another watcher recorded it first."""
        drop = hashlib.sha256(f"{source}\0{arrived:.6f}".encode()).hexdigest()[:16]
        return self._put(
            f"{PREFIX}/{dataset_id}/duplicates/{arrived:.6f}-{drop}.json",
            {"at": time.time(), "task": task, "source": source, "watcher": self.watcher},
        )
