"""The cluster path, locally: a two-node Ray cluster (`ray start --head`, then `ray start --address` with its own
temp directory), then `ray job submit` of the entry point a cluster runs (jobs/watch.py); the drop in the bucket
becomes a registered version on top of the current one, trained by workers on both nodes from the parent set and
the drop in the bucket, so nothing relies on the driver's local disk."""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from pipeline.data.task_dataset import TaskDataset, write_drop
from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.transaction import train_on_current
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import Lineage, parent_of
from pipeline.registry.store import Registry
from pipeline.stack.process import free_port

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.model]
REPO = Path(__file__).parents[2]


# `pipeline` sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 so that its own local node stays on loopback; that also makes
# Ray refuse to join a second node. This cluster is multi-node on purpose (and on loopback by --node-ip-address).
CLUSTER_ENV = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"} | {
    "RAY_AUTH_MODE": "disabled"
}


def ray_start(temp: Path, *args: str) -> None:
    """`ray start` of one node on loopback, with agent and metrics ports of its own: other Ray nodes on the machine
    (the session's, the cluster's other node) hold the defaults, and a head whose job agent cannot bind answers
    every submission "No available agent"."""
    started = subprocess.run(
        [
            shutil.which("ray"),
            "start",
            "--node-ip-address=127.0.0.1",
            *args,
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        check=False,
        env=CLUSTER_ENV,
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]


@pytest.fixture
def ray_cluster():
    """A Ray cluster of its own: a head (GCS, raylet, dashboard with the Jobs API) and a second node, three CPUs each,
    each with its own temp directory; stopped by those directories, because `ray stop` would stop every Ray on the
    machine. Yields the dashboard's address."""
    temps = [
        Path(tempfile.mkdtemp(prefix=p, dir="/tmp")) for p in ("rh", "rn")
    ]  # short: socket paths are limited
    dashboard, gcs = free_port(), free_port()
    try:
        ray_start(
            temps[0],
            "--head",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=3",
        )
        ray_start(temps[1], f"--address=127.0.0.1:{gcs}", "--num-cpus=3")
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        mine = [
            p
            for p in psutil.process_iter(["cmdline"])
            if any(str(t) in " ".join(p.info["cmdline"] or []) for t in temps)
        ]
        for proc in mine:
            proc.terminate()
        _, alive = psutil.wait_procs(mine, timeout=15)
        for proc in alive:
            proc.kill()
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_of_the_watcher_entry_point_trains_on_two_nodes_and_registers_a_version(
    conn, ray_cluster, tmp_path
):
    bucket = Bucket.connect(conn)
    first, task = split_wordnet20(1993, "ci")[:2]
    for t in (first, task):
        t.train_inputs, t.train_labels = t.train_inputs[::4], t.train_labels[::4]  # the path, not accuracy
    # The job's drop is a later task: jobs/watch.py trains with the shipped recipe, whose first task runs twenty
    # epochs (first_examples) where a later one runs two; the path is the same, and the workers load a parent.
    train_on_current(
        TaskDataset.from_dir(write_drop(first, tmp_path / "wn0")),
        Registry.connect(conn),
        TrainConfig(epochs=1, first_examples=None),
    )
    folder = write_drop(task, tmp_path / "wn1")
    for file in folder.iterdir():
        bucket.put(f"incoming/wn1/{file.name}", file.read_bytes())
    bucket.put("incoming/wn1/_READY", b"ready")

    # What a platform engineer passes to a cluster: where S3 and MLflow are, never a code change.
    keys = (
        "LITELORA_BUCKET",
        "LITELORA_REGISTERED_MODEL",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    )
    runtime_env = {"env_vars": {k: os.environ[k] for k in keys}}
    submit = [
        shutil.which("ray"),
        "job",
        "submit",
        "--address",
        ray_cluster,
        "--working-dir",
        str(REPO),
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        "python",
        "jobs/watch.py",
        "--once",
        "--workers",
        "2",
        # Over half a node's three CPUs each: the two workers must land on different nodes, and a CPU stays free
        # on each for Ray Data's tasks, which stream the task to them (its repartition takes a whole CPU).
        "--cpus-per-worker",
        "2",
        "--guard",  # a few dozen rows for one epoch forget freely: the path is this test's subject
        "1",
    ]
    for _ in range(30):  # a fresh head answers before its job agent has registered: Ray says to try again
        job = subprocess.run(
            submit,
            check=False,
            env={**os.environ, "RAY_AUTH_MODE": "disabled"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        if "No available agent" not in job.stderr:
            break
        time.sleep(2)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "wn1: registered as v2" in job.stdout
    current = Lineage(conn).current()
    assert current is not None and current.version == "2" and current.tags["task"] == "wn1"
    assert parent_of(current.tags) == "1"

    from ray.util.state import list_actors, list_nodes

    nodes = {n.node_id for n in list_nodes(address=ray_cluster) if n.state == "ALIVE"}
    workers = list_actors(address=ray_cluster, filters=[("class_name", "=", "RayTrainWorker")], limit=100)
    assert len(nodes) == 2 and {w.node_id for w in workers} == nodes, "a Train worker on each node"
