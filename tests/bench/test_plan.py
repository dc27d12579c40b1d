"""What `litelora bench` options turn into: the plan it runs and the report's file name."""

import pytest

from pipeline.bench.continual import ALL_METHODS, STREAMS, BenchPlan
from pipeline.bench.report import report_name
from pipeline.learn.config import TrainConfig


def test_full_runs_every_method_with_the_default_linear_and_aligned_heads():
    plan = BenchPlan.from_options(
        "fashion-mnist", "quick", ("litelora",), (1993, 1995), (), True, TrainConfig(), full=True
    )
    assert plan.methods == ALL_METHODS
    assert plan.heads == (TrainConfig().head, "linear", "aligned")
    assert plan.config.backbone.name == "efficientnet-lite0" and plan.config.adapter.rank == 4
    assert plan.steps == 2 * (len(ALL_METHODS) * 5 + 1)
    assert report_name("fashion-", plan.tier, plan.orderings, plan.heads, "ridge", full=True) == (
        "fashion-full-quick"
    )


def test_quick_keeps_the_first_ordering_and_a_given_rank_wins_over_the_streams():
    plan = BenchPlan.from_options(
        "fashion-mnist",
        "full",
        ("frozen",),
        (2000, 1993),
        ("linear",),
        False,
        TrainConfig(),
        rank=16,
        quick=True,
    )
    assert (plan.tier, plan.orderings, plan.heads, plan.config.adapter.rank) == (
        "quick",
        (2000,),
        ("linear",),
        16,
    )
    assert plan.config.head == "linear" and plan.steps == 5
    assert report_name("", plan.tier, plan.orderings, plan.heads, "ridge", quick=True) == "quick-heads"


@pytest.mark.parametrize(
    ("stream", "methods"), [("mnist", ("litelora",)), ("wordnet", ("litelora", "magic"))]
)
def test_an_unknown_stream_or_method_is_refused_with_the_choices(stream, methods):
    with pytest.raises(ValueError, match="choose from"):
        BenchPlan.from_options(stream, "quick", methods, (1993,), (), True, TrainConfig())


@pytest.mark.parametrize("stream", ["domains", "domains-alternating"])
def test_the_domain_shift_streams_run_minilm_and_count_their_nine_tasks(stream):
    plan = BenchPlan.from_options(stream, "quick", ("litelora", "frozen"), (1993,), (), True, TrainConfig())
    assert (
        plan.config.backbone == TrainConfig().backbone
        and plan.config.adapter.rank == TrainConfig().adapter.rank
    )
    assert plan.steps == 2 * 9 + 1
    assert len(STREAMS[stream].tasks(1993, "ci")) == STREAMS[stream].num_tasks == 9
