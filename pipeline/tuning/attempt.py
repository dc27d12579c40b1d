"""One `fit()` of a search, on the driver: which of the search's configurations it runs, and the callback that
seals each trial's record the moment the trial ends (an interrupt later loses nothing already finished).

Tune pickles its callbacks and scheduler into its own state, so they carry only the search's name and find the
attempt (bucket, service key, listener) here, in the driver's memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler

from pipeline.registry.bucket import StorageError
from pipeline.tuning.pareto import TrialRow
from pipeline.tuning.records import SearchRecords, TrialRecord


@dataclass
class Attempt:
    records: SearchRecords
    pending: dict[int, dict]
    """slot → configuration, for the slots this fit runs (a trial claims its slot by its configuration)."""
    listener: Callable[[str], None]
    ended: dict[int, TrialRecord] = field(default_factory=dict)
    slots: dict[str, int] = field(default_factory=dict)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    def slot_of(self, trial) -> int | None:
        """The slot whose configuration `trial` runs (None for a configuration this attempt did not ask for)."""
        if trial.trial_id not in self.slots:
            config = dict(trial.config)
            slot = next((s for s, c in self.pending.items() if c == config), None)
            self.slots[trial.trial_id] = slot
            self.pending.pop(slot, None)
        return self.slots[trial.trial_id]


_ATTEMPTS: dict[str, Attempt] = {}


def register(search: str, attempt: Attempt) -> None:
    _ATTEMPTS[search] = attempt


def unregister(search: str) -> None:
    _ATTEMPTS.pop(search, None)


def describe(config: dict) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(config.items())
    )


class TrialLedger(Callback):
    """Seals a record of every trial that ends (finished, or stopped by ASHA) and tells the listener. A trial
    cut short by Ctrl-C never reaches `on_trial_complete`, so it gets no record and runs again on resume."""

    def __init__(self, search: str):
        self.search = search

    def on_trial_result(self, iteration, trials, trial, result, **info):
        attempt = _ATTEMPTS[self.search]
        attempt.slot_of(trial)
        if "objective" in result:
            step = (int(result["training_iteration"]), float(result["objective"]))
            attempt.history.setdefault(trial.trial_id, []).append(step)

    def on_trial_complete(self, iteration, trials, trial, **info):
        attempt, result = _ATTEMPTS[self.search], trial.last_result or {}
        slot = attempt.slot_of(trial)
        if "objective" not in result or slot is None:
            return
        closed = bool(result.get("closed"))
        row = TrialRow(
            trial.trial_id,
            dict(trial.config),
            "finished" if closed else "stopped",
            float(result["objective"]),
            float(result["accuracy"]),
            float(result["til_accuracy"]),
            int(result["active_adapters"]),
            int(result.get("training_iteration", 0)),
        )
        record = TrialRecord(slot, row, attempt.history.get(trial.trial_id, []))
        attempt.ended[record.slot] = record
        try:
            attempt.records.write(record)
        except StorageError as err:
            attempt.listener(
                f"trial {trial.trial_id} is not recorded ({err}): a resumed search runs it again"
            )
        how = "finished" if closed else "stopped early by ASHA"
        attempt.listener(
            f"trial {trial.trial_id} {how}: objective {row.objective:.4f}, {row.active_adapters} adapter(s); "
            + describe(row.config)
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        _ATTEMPTS[self.search].listener(
            f"trial {trial.trial_id} failed (its nested MLflow run and Ray's logs say why)"
        )


class ResumedASHA(ASHAScheduler):
    """ASHA that also knows the trials an earlier attempt of the search ran: their reports fill its rungs, so
    the cut-offs a resumed search applies are those the whole search has seen."""

    def replay(self, record: TrialRecord) -> None:
        known = SimpleNamespace(trial_id=f"earlier-{record.slot}")
        for iteration, objective in record.history:
            for bracket in self._brackets:
                bracket.on_result(known, iteration, self._metric_op * objective)
