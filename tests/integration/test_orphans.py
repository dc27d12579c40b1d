"""What `litelora gc` may delete on the real stack: never a file a set being published reuses (S3 refreshes its
age), never the dataset of a training MLflow shows RUNNING."""

import time

import pytest

from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import Lineage
from pipeline.registry.orphans import find_orphans
from pipeline.registry.store import AdapterSetStore

pytestmark = pytest.mark.integration


def test_publishing_a_set_again_refreshes_the_files_it_reuses_so_gc_spares_them(
    conn, tiny_backbone_dir, wordnet_drops, tmp_path
):
    model = ContinualModel(
        TrainConfig(backbone=BackboneConfig(name=str(tiny_backbone_dir)), epochs=1, seed=0)
    )
    train_task(model, wordnet_drops[0].to_task())
    model.save(tmp_path / "set")
    bucket, lineage = Bucket.connect(conn), Lineage(conn)
    sets = AdapterSetStore(bucket, conn.cache_dir)
    sets.publish(tmp_path / "set")
    # S3 times are truncated to whole seconds, so a fresh object can look up to 1 s older than it is; the grace
    # leaves 3 s beyond that for the second publish and the listing on a slow machine.
    grace_s = 4.0
    time.sleep(grace_s + 1.0)
    assert find_orphans(bucket, [lineage], grace_s), "an unregistered set older than the grace is an orphan"
    # What a retried job that trains the same bytes does, just before registering.
    sets.publish(tmp_path / "set")
    assert find_orphans(bucket, [lineage], grace_s) == []


def test_the_dataset_of_a_training_run_in_progress_is_never_an_orphan(conn):
    bucket, lineage = Bucket.connect(conn), Lineage(conn)
    bucket.put("datasets/abc123/train.parquet", b"PAR1")
    with lineage.training_run("a job in progress", {"dataset_id": "abc123"}):
        assert find_orphans(bucket, [lineage], grace_s=0) == []
    assert [o.key for o in find_orphans(bucket, [lineage], grace_s=0)] == ["datasets/abc123/train.parquet"]
