"""What a resumed search trusts: one sealed JSON record per ended trial, written by the driver as the trial ends.

    s3://<bucket>/tune/<search>/trials/<slot>.json    {"body": "<the record as JSON>", "mac": HMAC-SHA256}

A slot is the index of a configuration in the search's seeded list (`SearchSpace.samples`). Tune's own state
under the same prefix (tuner.pkl, experiment state) is pickles: it stays there for Ray's logs and is never read
back. A record that does not verify (planted, edited, another installation's key, another search's or slot's)
is ignored with a log line, and its configuration is trained again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.registry.bucket import Bucket
from pipeline.registry.service_key import ServiceKey
from pipeline.tuning.pareto import TrialRow

TUNE_PREFIX = "tune/"
PURPOSE = "tune-trial"
RECORD_LIMIT = 64 * 1024
"""Bytes: a record is a row and a few epochs' objectives; anything larger was not written by us."""
_RECORD_NAME = re.compile(r"(\d{4})\.json")


@dataclass
class TrialRecord:
    slot: int
    row: TrialRow
    history: list[tuple[int, float]] = field(default_factory=list)
    """(training_iteration, objective) of every report: what ASHA's rungs saw of this trial."""


class SearchRecords:
    """The sealed records of one search's ended trials."""

    def __init__(self, bucket: Bucket, search: str, key: ServiceKey, log: Callable[[str], None]):
        self.bucket, self.search, self.key, self.log = bucket, search, key, log
        self.prefix = f"{TUNE_PREFIX}{search}/trials/"

    def write(self, record: TrialRecord) -> None:
        body = {
            "search": self.search,
            "slot": record.slot,
            "row": record.row.to_dict(),
            "history": [list(step) for step in record.history],
        }
        self.bucket.put(f"{self.prefix}{record.slot:04d}.json", self.key.seal(PURPOSE, body))

    def read(self, configs: list[dict]) -> dict[int, TrialRecord]:
        """The verified record of each slot that has one; `configs[slot]` is the configuration it must name."""
        found = {}
        for obj in self.bucket.list_objects(self.prefix):
            name = obj["Key"].removeprefix(self.prefix)
            match = _RECORD_NAME.fullmatch(name)
            slot = int(match[1]) if match else -1
            if not 0 <= slot < len(configs):
                problem = "not a trial record of this search"
            elif obj["Size"] > RECORD_LIMIT:
                problem = f"{obj['Size']} bytes, more than any record holds"
            else:
                record, problem = self._open(slot, configs[slot], self.bucket.get(obj["Key"]))
                if record:
                    found[slot] = record
                    continue
            self.log(f"ignoring {self.bucket.uri(obj['Key'])}: {problem}")
        return found

    def _open(self, slot: int, config: dict, data: bytes) -> tuple[TrialRecord | None, str]:
        body = self.key.open(PURPOSE, data)
        if body is None:
            return None, "its MAC does not verify (this service did not write it); the trial runs again"
        try:
            row = TrialRow(**body["row"])
            history = [(int(i), float(o)) for i, o in body["history"]]
            ours = body["search"] == self.search and body["slot"] == slot and row.config == config
        except (KeyError, TypeError, ValueError):
            return None, "a record of another format; the trial runs again"
        if not ours:
            return None, "a record of another search or configuration; the trial runs again"
        return TrialRecord(slot, row, history), ""
