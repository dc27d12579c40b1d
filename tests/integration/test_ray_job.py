"""The cluster path, locally: `ray start --head`, then `ray job submit` of the entry point a cluster runs
(jobs/watch.py); the drop in the bucket becomes a registered version."""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from pipeline.data.task_dataset import write_drop
from pipeline.data.wordnet import split_wordnet20
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import Lineage
from pipeline.stack.process import free_port

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.model]
REPO = Path(__file__).parents[2]


@pytest.fixture
def ray_head():
    """A Ray head of its own (GCS, raylet, dashboard with the Jobs API) on loopback; stopped by its temp dir,
    because `ray stop` would stop every Ray on the machine."""
    temp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Unix socket paths are limited
    dashboard = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    subprocess.run(
        [
            shutil.which("ray"),
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={free_port()}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            "--num-cpus=2",
            # Agent ports of its own: a second Ray node on the machine (the session's) holds the defaults,
            # and a head whose job agent cannot bind answers every submission "No available agent".
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    try:
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        mine = [p for p in psutil.process_iter(["cmdline"]) if str(temp) in " ".join(p.info["cmdline"] or [])]
        for proc in mine:
            proc.terminate()
        _, alive = psutil.wait_procs(mine, timeout=15)
        for proc in alive:
            proc.kill()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_job_submit_of_the_watcher_entry_point_registers_a_version(conn, ray_head, tmp_path):
    bucket = Bucket.connect(conn)
    task = split_wordnet20(1993, "ci")[0]
    task.train_inputs, task.train_labels = (
        task.train_inputs[::4],
        task.train_labels[::4],
    )  # the path, not accuracy
    folder = write_drop(task, tmp_path / "wn0")
    for file in folder.iterdir():
        bucket.put(f"incoming/wn0/{file.name}", file.read_bytes())
    bucket.put("incoming/wn0/_READY", b"ready")

    # What a platform engineer passes to a cluster: where S3 and MLflow are, never a code change.
    keys = (
        "LITELORA_BUCKET",
        "LITELORA_REGISTERED_MODEL",
        "MLFLOW_TRACKING_URI",
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
        ray_head,
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
    assert "wn0: registered as v1" in job.stdout
    current = Lineage(conn).current()
    assert current is not None and current.version == "1" and current.tags["task"] == "wn0"
