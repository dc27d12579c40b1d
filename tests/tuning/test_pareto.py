"""The accuracy-vs-adapters trade-off a search reports, and the objective that ranks its trials."""

from pipeline.tuning.pareto import TrialRow, markdown_table, pareto_front
from pipeline.tuning.trial import objective


def _row(trial, accuracy, adapters, status="finished"):
    return TrialRow(
        trial, {"rank": 8}, status, objective(accuracy, adapters, 0.01), accuracy, accuracy, adapters
    )


def test_pareto_front_keeps_trials_no_other_beats_on_both_accuracy_and_adapters():
    rows = [
        _row("a", 0.70, 3),
        _row("b", 0.68, 2),
        _row("c", 0.65, 3),
        _row("d", 0.60, 1),
        _row("e", 0.90, 1, status="stopped"),
        TrialRow("f", {}, "error", error="boom"),
    ]
    front = pareto_front(rows)
    assert [r.trial_id for r in front] == [
        "d",
        "b",
        "a",
    ]  # c is beaten by a; stopped and failed trials don't count


def test_each_kept_adapter_costs_the_configured_accuracy():
    assert objective(0.70, 3, 0.01) < objective(0.68, 1, 0.01)
    assert objective(0.70, 3, 0.0) > objective(0.68, 1, 0.0)


def test_trial_table_marks_the_front_and_shows_failed_trials():
    rows = [_row("a", 0.70, 3), TrialRow("f", {"rank": 4}, "error", error="boom")]
    table = markdown_table(rows, ["rank"], pareto_front(rows))
    assert "| a | 8 | finished |" in table and "★" in table
    assert "| f | 4 | error | – |" in table
