"""The README's main job on the real stack: demo drops → Ray Train jobs → versions, with every timing recorded."""

import pytest

from pipeline.demo import run_demo
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.ledger import Ledger
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import Lineage

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.model]


def test_demo_trains_each_drop_as_a_ray_train_job_and_records_its_overhead(conn, ray_node):
    bucket = Bucket.connect(conn)

    # One epoch per task: this test is about the path and its timings, not the defaults' accuracy (the default
    # first task trains 3,000 examples, two dozen epochs of the ci tier).
    config = TrainConfig(epochs=1, first_examples=None, seed=0)
    done = run_demo(conn, tier="ci", workers=2, tasks=2, config=config, log=lambda _: None)

    assert [d["task"] for d in done] == ["wordnet-0", "wordnet-1"]
    assert {d["state"] for d in done} <= {"registered", "rejected"}
    versions = Lineage(conn).versions()
    assert sorted(v.version for v in versions) == sorted(d["version"] for d in done)
    assert not bucket.list("incoming/"), "processed drops must leave incoming/"
    for entry in Ledger(bucket).entries():
        timings = entry.summary()["timings"]
        # The stages a user needs to see where time goes, and their sums.
        for key in (
            "detection_latency_s",
            "ray_start_s",
            "worker_setup_s",
            "compute_s",
            "ray_finish_s",
            "evaluate_s",
            "register_s",
            "to_training_start_s",
            "overhead_s",
        ):
            assert timings[key] >= 0, key
        assert timings["overhead_s"] + timings["compute_s"] + timings["evaluate_s"] == pytest.approx(
            timings["total_s"]
        )
        assert timings["to_training_start_s"] < timings["total_s"] - timings["compute_s"]
