"""A Ray Train worker killed mid-training: the job resumes from its last epoch checkpoint, one version results."""

import threading
import time

import psutil
import pytest
from mlflow import MlflowClient

from pipeline.data.task_dataset import TaskDataset, write_drop
from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.ray_train import ScalingSpec, ray_fit
from pipeline.orchestrator.status import collect_garbage
from pipeline.orchestrator.transaction import train_on_current
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import Lineage
from pipeline.registry.store import Registry

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.model, pytest.mark.chaos]


def _train_workers() -> list[psutil.Process]:
    """The Train workers of this process's own Ray node (its raylet is our child): another test process may run
    a Ray node of its own on the same machine."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def test_killing_a_ray_train_worker_mid_training_resumes_from_its_checkpoint(
    conn, ray_node, tmp_path, chaos_report
):
    bucket = Bucket.connect(conn)
    # The real MiniLM on the ci tier's first task, ten epochs of about a second each: long enough to be killed
    # after its first checkpoint and well before its last.
    dataset = TaskDataset.from_dir(write_drop(split_wordnet20(1993, "ci")[0], tmp_path / "t0"), name="t0")
    config = TrainConfig(epochs=10, first_examples=None, seed=0)
    fit = ray_fit(conn, ScalingSpec(num_workers=2, max_failures=2))
    outcome: dict = {}
    job = threading.Thread(
        target=lambda: outcome.update(
            result=train_on_current(dataset, Registry.connect(conn), config, fit=fit, max_accuracy_drop=1.0)
        )
    )
    job.start()

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(
        k.endswith("progress.json") for k in bucket.list("checkpoints/")
    ):
        time.sleep(0.5)
    time.sleep(3)  # the object is uploaded before Ray Train registers it as the latest checkpoint
    victims = _train_workers()
    assert victims, "no Ray Train worker process found to kill"
    victims[0].kill()  # SIGKILL, mid-task: the first epoch checkpoint exists, training goes on
    killed_at = time.monotonic()
    job.join(timeout=600)
    recovered = time.monotonic() - killed_at

    result = outcome["result"]
    assert result.promoted
    assert [v.version for v in Lineage(conn).versions()] == [result.version]
    tags = MlflowClient(conn.mlflow_uri).get_run(result.run_id).data.tags
    assert int(tags["ray_train.resumed_epochs"]) >= 1, "the restarted workers should resume, not start over"
    checkpoints = bucket.list("checkpoints/")
    assert checkpoints, "the job checkpointed to the bucket"
    collected = collect_garbage(Registry.connect(conn), grace_s=0)
    left = [k for k in bucket.list("checkpoints/") if k != "checkpoints/"]  # pyarrow's directory marker
    assert left == [], "a registered drop's checkpoints are garbage"
    assert not any(o.key.startswith(("datasets/", "adapter-sets/")) for o in collected)
    chaos_report(
        case="Ray Train worker SIGKILLed mid-task (2 workers, MiniLM)",
        expected="the group restarts from the last epoch checkpoint; one version",
        observed=f"resumed after {tags['ray_train.resumed_epochs']} epoch(s); v{result.version} registered once; "
        f"gc then collected its {len(checkpoints)} checkpoint object(s) and nothing the version needs",
        recover_s=recovered,
    )
