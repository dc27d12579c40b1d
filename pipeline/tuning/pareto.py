"""The trade-off a search exposes: accuracy against adapters kept, and the trials no other trial beats on both."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TrialRow:
    trial_id: str
    config: dict
    status: str
    """finished (the gate decided) | stopped (ASHA cut it early) | error"""
    objective: float | None = None
    accuracy: float | None = None
    til_accuracy: float | None = None
    active_adapters: int | None = None
    iterations: int = 0
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def pareto_front(rows: list[TrialRow]) -> list[TrialRow]:
    """Finished trials not dominated by another: no other has ≥ accuracy with ≤ adapters, one strictly."""
    done = [r for r in rows if r.status == "finished"]

    def dominated(r: TrialRow) -> bool:
        return any(
            o.accuracy >= r.accuracy
            and o.active_adapters <= r.active_adapters
            and (o.accuracy > r.accuracy or o.active_adapters < r.active_adapters)
            for o in done
        )

    return sorted((r for r in done if not dominated(r)), key=lambda r: (r.active_adapters, -r.accuracy))


def markdown_table(rows: list[TrialRow], knobs: list[str], front: list[TrialRow]) -> str:
    on_front = {r.trial_id for r in front}
    head = ["trial", *knobs, "status", "objective", "accuracy", "TIL", "#Ad", "Pareto"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: -(r.objective if r.objective is not None else -1e9)):
        cells = [
            r.trial_id,
            *(_fmt(r.config.get(k)) for k in knobs),
            r.status,
            *(_fmt(v) for v in (r.objective, r.accuracy, r.til_accuracy, r.active_adapters)),
            "★" if r.trial_id in on_front else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
