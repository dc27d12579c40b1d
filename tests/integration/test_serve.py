"""`litelora serve` as a user runs it: a real HTTP client against the server (a text, an image and a Share
stream), a rollback mid-stream."""

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from pipeline.data.fashion_mnist import split_fashion_mnist
from pipeline.data.image_folder import as_image_folder
from pipeline.data.task_dataset import TaskDataset, contract_files, write_drop
from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.transaction import train_on_current
from pipeline.registry.lineage import Lineage
from pipeline.registry.store import Registry
from pipeline.serving.predictor import Predictor
from pipeline.stack.process import free_port

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.model]


@pytest.fixture(scope="session")
def registry(session_conn, tmp_path_factory):
    """Two registered versions of the ci-tier stream (1 epoch each, MiniLM); v2 is current. Trained once per test
    process: the tests only read them (a test that moves `current` puts it back)."""
    conn, tmp_path = session_conn, tmp_path_factory.mktemp("serve-drops")
    tasks = split_wordnet20(1993, "ci")[:2]
    for i, task in enumerate(tasks):
        train_on_current(
            TaskDataset.from_dir(write_drop(task, tmp_path / f"t{i}")),
            Registry.connect(conn),
            # One epoch each, the first task too: these tests are about serving, not accuracy.
            TrainConfig(epochs=1, first_examples=None),
            max_accuracy_drop=1.0,
        )
    return conn, tasks


@pytest.fixture(scope="session")
def images(session_conn):
    """One image folder trained in stream `images` (EfficientNet-Lite0, its stream defaults, 1 epoch)."""
    task = split_fashion_mnist(1995, "ci")[0]  # sandals and bags
    folder = {"task.json": json.dumps({"stream": "images", "backbone": "efficientnet-lite0"}).encode()}
    dataset = TaskDataset.from_files("shoes", contract_files(folder | as_image_folder(task)))
    quick = {"epochs": 1, "first_examples": 0}  # as overrides of the stream's defaults (None keeps a default)
    train_on_current(
        dataset, Registry.connect(session_conn).for_stream("images"), overrides=quick, max_accuracy_drop=1.0
    )
    return task


@pytest.fixture(scope="session")
def shared(registry, tmp_path_factory):
    """Stream `shared` running Share: the registry's two ci-tier tasks again, named by the drops' task.json."""
    tmp_path = tmp_path_factory.mktemp("share-drops")
    conn, tasks = registry
    share = json.dumps({"stream": "shared", "method": "share"}).encode()
    for i, task in enumerate(tasks):
        folder = write_drop(task, tmp_path / f"s{i}")
        (folder / "task.json").write_bytes(share)
        train_on_current(
            TaskDataset.from_dir(folder),
            Registry.connect(conn).for_stream("shared"),
            overrides={"epochs": 1},
            max_accuracy_drop=1.0,
        )
    return tasks


class Client(requests.Session):
    """A client of the served API that sends the server's bearer token."""

    def __init__(self, url: str, token: str):
        super().__init__()
        self.url = url
        self.headers["Authorization"] = f"Bearer {token}"


@contextlib.contextmanager
def serving(tmp_path, *args: str):
    """`litelora serve <args>` with a token, as a deployment beyond loopback runs it; stopped whatever happens."""
    port, token_file = free_port(), tmp_path / "serve-token"
    command = [
        shutil.which("litelora"),
        "serve",
        "--port",
        str(port),
        "--poll",
        "0.5",
        "--token-file",
        str(token_file),
    ]
    proc = subprocess.Popen(
        [*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    url = f"http://127.0.0.1:{port}"
    try:  # from here on the server is stopped whatever happens, even if it never became healthy
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{url}/healthz", timeout=5).ok:
                    break
            except requests.RequestException:  # not listening yet, or the proxy is up before the app
                pass
            time.sleep(1)
        yield Client(url, token_file.read_text().strip())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def server(registry, session_env, tmp_path):
    with serving(tmp_path) as client:
        yield client


@pytest.fixture
def three_streams(registry, images, shared, session_env, tmp_path):
    """One server for the text stream (`default`, also at /predict), the image stream and the Share stream."""
    with serving(tmp_path, "--stream", "default", "--stream", "images", "--stream", "shared") as client:
        yield client


def test_served_predictions_need_the_token_match_the_predictor_and_bad_input_gets_a_4xx(
    registry, images, shared, three_streams, tmp_path
):
    conn, tasks = registry
    server = three_streams
    texts = tasks[0].test_inputs[:3] + tasks[1].test_inputs[:3]
    body = {"texts": texts, "top": 2}
    assert requests.post(f"{server.url}/predict", json=body, timeout=30).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert requests.post(f"{server.url}/predict", json=body, headers=wrong, timeout=30).status_code == 401
    assert requests.get(f"{server.url}/version", timeout=5).status_code == 401
    assert requests.get(f"{server.url}/healthz", timeout=5).ok, "liveness probes carry no token"
    answer = server.post(f"{server.url}/predict", json=body, timeout=30).json()
    local = Predictor.from_registry(conn).predict(texts, top=2)
    assert answer["version"] == "2"
    assert [p["label"] for p in answer["predictions"]] == [p.label for p in local]
    for served, mine in zip(answer["predictions"], local, strict=True):
        assert served["scores"] == pytest.approx(mine.scores, abs=1e-5)

    bad = {
        "image": {"image": "aGVsbG8="},
        "empty": {"texts": []},
        "unknown version": {"text": "x", "version": "99"},
        "too long": {"text": "a" * 20_000},
    }
    codes = {
        name: server.post(f"{server.url}/predict", json=body, timeout=30).status_code
        for name, body in bad.items()
    }
    assert codes == {"image": 415, "empty": 422, "unknown version": 409, "too long": 413}
    assert server.get(f"{server.url}/healthz", timeout=5).json() == {
        "status": "ok",
        "version": "2",
        "streams": {"default": "2", "images": "1", "shared": "2"},
    }

    # The image stream, beside it: PNG bytes in base64, labelled as that stream's own predictor labels them.
    pictures = [base64.b64encode(image).decode() for image in images.test_inputs[:4]]
    answer = server.post(f"{server.url}/streams/images/predict", json={"images": pictures}, timeout=30).json()
    local = Predictor.from_registry(conn.for_stream("images")).predict(images.test_inputs[:4])
    assert answer["version"] == "1" and [p["label"] for p in answer["predictions"]] == [
        p.label for p in local
    ]
    assert {p["label"] for p in answer["predictions"]} <= set(images.classes)
    one = server.post(f"{server.url}/streams/images/predict", json={"image": pictures[0]}, timeout=30).json()
    assert one["predictions"][0]["label"] == local[0].label
    refused = {
        "text to images": server.post(f"{server.url}/streams/images/predict", json={"text": "x"}, timeout=30),
        "not an image": server.post(
            f"{server.url}/streams/images/predict", json={"image": "aGVsbG8="}, timeout=30
        ),
        "unknown stream": server.post(f"{server.url}/streams/audio/predict", json={"text": "x"}, timeout=30),
    }
    assert {name: r.status_code for name, r in refused.items()} == {
        "text to images": 415,
        "not an image": 422,
        "unknown stream": 404,
    }

    # The Share stream answers for the task a request names, as its own predictor does; without one, 422.
    texts = shared[1].test_inputs[:4]
    url = f"{server.url}/streams/shared/predict"
    answer = server.post(url, json={"texts": texts, "task": "s1"}, timeout=30).json()
    local = Predictor.from_registry(conn.for_stream("shared")).predict(texts, task="s1")
    assert answer["version"] == "2" and [p["label"] for p in answer["predictions"]] == [
        p.label for p in local
    ]
    assert {p["task"] for p in answer["predictions"]} == {"s1"}
    nameless = server.post(url, json={"texts": texts}, timeout=30)
    assert nameless.status_code == 422 and "name the task" in nameless.json()["detail"]
    assert server.get(f"{server.url}/streams/shared/version", timeout=5).json()["needs_task"] is True

    # From the shell: `litelora predict --task` answers as the server does; the export is a PEFT LoRA per task.
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    predicted = runner.invoke(
        app, ["predict", "--stream", "shared", "--task", "s1", "--text", texts[0], "--json"]
    )
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.stdout)["predictions"][0]["label"] == local[0].label
    nameless = runner.invoke(app, ["predict", "--stream", "shared", "--text", texts[0]])
    assert nameless.exit_code == 1 and "name the task" in nameless.output
    exported = runner.invoke(
        app, ["export", "v2", "--stream", "shared", "--peft", str(tmp_path / "peft"), "--json"]
    )
    assert exported.exit_code == 0, exported.output
    summary = json.loads(exported.stdout)
    assert [t["task"] for t in summary["tasks"]] == ["s0", "s1"]
    for entry in summary["tasks"]:
        assert (tmp_path / "peft" / entry["adapter"] / "adapter_model.safetensors").exists()
        assert (tmp_path / "peft" / entry["head"]).exists()


def test_a_rollback_in_the_mlflow_ui_during_a_stream_of_requests_switches_versions_without_a_failed_request(
    registry, server
):
    conn, tasks = registry
    seen, failures, stop = [], [], threading.Event()

    def stream():
        while not stop.is_set():
            try:
                reply = server.post(
                    f"{server.url}/predict", json={"text": tasks[0].test_inputs[0]}, timeout=30
                )
                (seen if reply.ok else failures).append(
                    reply.json().get("version") if reply.ok else reply.text
                )
            except requests.RequestException as error:
                failures.append(str(error))

    client = threading.Thread(target=stream)
    client.start()
    lineage = Lineage(conn)
    try:
        time.sleep(2)
        # A rollback the way the MLflow UI makes it: the alias alone.
        lineage.client.set_registered_model_alias(lineage.name, "current", "1")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not seen or seen[-1] != "1"):
            time.sleep(0.2)
        time.sleep(1)
    finally:
        stop.set()
        client.join()
        # The other tests read v2 as current.
        lineage.client.set_registered_model_alias(lineage.name, "current", "2")
    assert failures == []
    assert seen[0] == "2" and seen[-1] == "1"
    assert seen == sorted(seen, reverse=True), "once swapped, never back"
    assert server.get(f"{server.url}/version", timeout=5).json()["swaps"] == 1


def test_export_and_predict_commands_read_the_registry_like_the_server(registry, session_env, tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    conn, tasks = registry
    runner = CliRunner()
    exported = runner.invoke(app, ["export", "v2", "--peft", str(tmp_path / "peft"), "--json"])
    assert exported.exit_code == 0, exported.output
    assert (
        json.loads(exported.stdout)["adapters"][0] == "00-t0"
    )  # the first task recruits; folders name the tasks
    assert (tmp_path / "peft" / "combined" / "adapter_model.safetensors").exists()
    predicted = runner.invoke(app, ["predict", "--text", tasks[1].test_inputs[0], "--json"])
    assert predicted.exit_code == 0, predicted.output
    expected = Predictor.from_registry(conn).predict([tasks[1].test_inputs[0]])[0]
    assert json.loads(predicted.stdout)["predictions"][0]["label"] == expected.label
    missing = runner.invoke(app, ["export", "v99", "--peft", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "does not exist" in missing.output

    analysed = runner.invoke(app, ["analyze", "v2", "--out", str(tmp_path / "analysis"), "--json"])
    assert analysed.exit_code == 0, analysed.output
    result = json.loads(analysed.stdout)
    assert [t["task"] for t in result["tasks"]] == ["t0", "t1"] and result["tasks"][0]["coverage"] is None
    assert 0.0 <= result["tasks"][1]["coverage"] <= 1.0  # measured against t0's adapter when the gate decided
    assert len(result["overlap_per_layer"]) == 12  # query and value of MiniLM's 6 blocks
    run_id = Lineage(conn).get("2").run_id
    logged = {a.path for a in Lineage(conn).client.list_artifacts(run_id, "analysis")}
    assert {"analysis/analysis.md", "analysis/layer_overlap.png", "analysis/coverage.png"} <= logged


EXPOSED_SERVE_ALREADY_RUNNING = """
import sys
from pathlib import Path
from types import SimpleNamespace

from ray import serve

from pipeline.orchestrator.ray_node import init_ray
from pipeline.serving.access import AccessRefused
from pipeline.serving.app import run_server
from pipeline.stack.process import free_port

home = Path(sys.argv[1])
init_ray(home)
serve.start(http_options={"host": "0.0.0.0", "port": free_port()})  # someone's earlier Serve, on every interface
try:
    run_server(SimpleNamespace(cache_dir=home / "cache"), "127.0.0.1", free_port())
    print("served")
except AccessRefused as refused:
    print(f"refused: {refused}")
print("apps:", sorted(serve.status().applications))
serve.shutdown()
"""


def test_a_loopback_serve_without_a_token_on_a_cluster_whose_serve_proxy_listens_on_0_0_0_0_is_refused(
    tmp_path,
):
    """Real Ray Serve: `serve.start` keeps the proxy it finds (0.0.0.0 here), whatever host it was given. In its own
    process, so this test process's Ray node is not the one exposed."""
    ran = subprocess.run(
        [sys.executable, "-c", EXPOSED_SERVE_ALREADY_RUNNING, str(tmp_path)],
        check=False,  # its output says why
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "refused: Ray Serve already runs on this cluster and its proxy listens on 0.0.0.0" in ran.stdout, (
        ran.stdout + ran.stderr[-2000:]
    )
    assert "apps: []" in ran.stdout, "nothing was deployed behind the exposed proxy"
