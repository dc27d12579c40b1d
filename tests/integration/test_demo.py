"""The README's main job on the real stack: demo drops → Ray Train jobs → versions, with every timing recorded.
The one test of the watcher training drops as 2-worker Ray Train jobs, a drop on top of another (each job costs
about a minute, mostly Ray's)."""

import pytest

from pipeline.demo import run_demo
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.ledger import Ledger
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import Lineage, parent_of

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.model]


def test_demo_trains_each_drop_as_a_ray_train_job_and_records_its_overhead(conn, ray_node):
    bucket = Bucket.connect(conn)

    # One epoch per task: this test is about the path and its timings, not the defaults' accuracy (the default
    # first task trains 3,000 examples, two dozen epochs of the ci tier).
    config = TrainConfig(epochs=1, first_examples=None, seed=0)
    done = run_demo(conn, tier="ci", workers=2, tasks=2, config=config, log=lambda _: None)

    assert [d["task"] for d in done] == ["wordnet-0", "wordnet-1"]
    assert {d["state"] for d in done} <= {"registered", "rejected"}
    versions = {v.version: v.tags for v in Lineage(conn).versions()}
    assert sorted(versions) == sorted(d["version"] for d in done)
    # Each drop's version is that drop's, the second trained on the first.
    assert [versions[d["version"]]["dataset_id"] for d in done] == [d["dataset_id"] for d in done]
    assert [parent_of(versions[d["version"]]) for d in done] == [None, done[0]["version"]]
    assert not bucket.list("incoming/"), "processed drops must leave incoming/"
    assert bucket.list("checkpoints/"), "Ray Train stores its checkpoints in the bucket"
    entries = {e.dataset_id: e.summary() for e in Ledger(bucket).entries()}
    for d in done:
        timings = entries[d["dataset_id"]]["timings"]
        # The stages run one after another, each on its own clock (the drop's arrival, the watcher's, the
        # transaction's, the Ray job's): together they fit in the drop's total, short of a clock's rounding.
        stages = ("detection_latency_s", "validation_s", "load_s", "train_s", "evaluate_s", "register_s")
        assert all(timings[k] >= 0 for k in stages), timings
        assert sum(timings[k] for k in stages) <= timings["total_s"] + 0.05, timings
        # The Ray job runs inside the transaction's training stage, and its parts one after another inside it.
        ray_parts = ("ray_start_s", "worker_setup_s", "compute_s", "ray_finish_s")
        assert all(timings[k] >= 0 for k in ray_parts), timings
        assert timings["ray_job_s"] <= timings["train_s"] + 0.05, timings
        # What the worker measured of its own epochs falls inside the compute the driver timed around them.
        assert timings["worker_epochs"] >= 1
        assert timings["worker_epochs"] * timings["worker_epoch_s"] <= timings["compute_s"] + 0.05, timings
        assert timings["to_training_start_s"] >= timings["detection_latency_s"] + timings["validation_s"]
