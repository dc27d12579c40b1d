"""The redundancy analysis of a bench report: coverage by gate decision, SD-LoRA's pairwise overlap."""

from pipeline.bench.analysis import analyze_report, markdown


def _row(method, decisions, coverage, overlap, head="linear"):
    return {
        "method": method,
        "head": head,
        "ordering": 1993,
        "decisions": decisions,
        "coverage": coverage,
        "chance_coverage": [None if c is None else 0.1 for c in coverage],
        "overlap": overlap,
    }


def test_coverage_is_averaged_per_gate_decision_and_sdlora_overlap_off_the_diagonal():
    report = {
        "rows": [
            _row(
                "litelora",
                ["recruit", "recruit", "reuse", "reuse"],
                [None, 0.2, 0.6, 0.8],
                [[1, 0.3], [0.3, 1]],
            ),
            _row(
                "litelora", ["recruit", "reuse"], [None, 0.1], [[1]], head="aligned"
            ),  # same run, other head: skipped
            _row("sdlora", ["recruit"] * 3, [None, 0.2, 0.3], [[1, 0.4, 0.2], [0.4, 1, 0.6], [0.2, 0.6, 1]]),
        ]
    }
    result = analyze_report(report)
    assert abs(result["coverage_reused"] - 0.7) < 1e-9 and abs(result["coverage_recruited"] - 0.2) < 1e-9
    assert abs(result["chance_coverage"] - 0.1) < 1e-9
    assert abs(result["sdlora_mean_pairwise_overlap"] - 0.4) < 1e-9
    text = markdown(result, "test")
    assert "pruned** (reused) tasks: 70.0%" in text and "| o1993 t2 | reuse | 60.0% | 10.0% |" in text
