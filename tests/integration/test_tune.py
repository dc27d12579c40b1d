"""Ray Tune searches on the real stack: nested MLflow runs, resume after Ctrl-C, and no version when every
trial fails."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import time

import pytest
from mlflow import MlflowClient

from pipeline.data.task_dataset import TaskDataset, write_drop
from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.transaction import train_on_current
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import TRAINING_EXPERIMENT, Lineage
from pipeline.registry.store import Registry
from pipeline.tuning.search import TuneFailed, TuneSpec, search_name, tune_task, tune_then_train
from pipeline.tuning.space import SearchSpace

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.model]


@pytest.fixture
def drops(conn, tmp_path):
    """Two ci-tier Split-WordNet-20 drops; the first is trained and current (1 epoch, MiniLM)."""
    tasks = split_wordnet20(1993, "ci")
    folders = [write_drop(task, tmp_path / f"wordnet-{i}") for i, task in enumerate(tasks[:2])]
    train_on_current(
        TaskDataset.from_dir(folders[0]), Registry.connect(conn), TrainConfig(epochs=1, first_examples=None)
    )
    return folders


def _trial_runs(conn, status=None) -> list:
    client = MlflowClient(conn.mlflow_uri)
    experiment = client.get_experiment_by_name(TRAINING_EXPERIMENT)
    query = "tags.kind = 'tune-trial'" + (f" and attributes.status = '{status}'" if status else "")
    return client.search_runs([experiment.experiment_id], query)


TRIALS = 4  # two at a time on 2 cores: an interrupt lands with some finished and some not


def _tune(folder, *extra) -> subprocess.Popen:
    return subprocess.Popen(
        [
            shutil.which("litelora"),
            "tune",
            "--data",
            str(folder),
            "--trials",
            str(TRIALS),
            "--no-register",
            "--json",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def test_an_interrupted_search_resumes_without_rerunning_finished_trials(conn, drops):
    # Other searches of this test process may have left trial runs: only this search's count.
    earlier = {r.info.run_id for r in _trial_runs(conn)}

    def finished() -> list:
        return [r for r in _trial_runs(conn, "FINISHED") if r.info.run_id not in earlier]

    first = _tune(drops[1])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not finished() and first.poll() is None:
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)  # what Ctrl-C does
    _, stderr = first.communicate(timeout=120)
    done_before = {r.info.run_name for r in finished()}
    assert first.returncode == 130, stderr
    assert "same command resumes it" in stderr
    assert 1 <= len(done_before) < TRIALS

    second = _tune(drops[1])
    stdout, stderr = second.communicate(timeout=600)
    assert second.returncode == 0, stderr
    search = json.loads(stdout)["search"]
    assert search["resumed"] is True
    assert len(search["trials"]) == TRIALS
    runs = [r for r in _trial_runs(conn) if r.info.run_id not in earlier]
    for name in done_before:  # a finished trial is never trained again
        assert sum(r.info.run_name == name for r in runs) == 1
    nested = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert nested == {search["run_id"]}
    assert Lineage(conn).find_by_dataset(TaskDataset.from_dir(drops[1]).dataset_id) is None  # --no-register


def test_the_registered_version_is_trained_with_the_best_trials_configuration(conn, drops):
    space = SearchSpace.parse(
        {
            "rank": [2, 4],
            "sparsity": {"low": 0.1, "high": 1.0, "log": True},
            "temperature": None,
            "init_logit": None,
            "lr": None,
        }
    )
    outcome, result = tune_then_train(
        TaskDataset.from_dir(drops[1]), conn, space, TuneSpec(trials=2), log=lambda _: None
    )
    version = Lineage(conn).get(result.version)
    assert json.loads(version.tags["tune.best_config"]) == outcome.best
    trained = json.loads(version.tags["config"])
    assert trained["adapter"]["rank"] == outcome.best["rank"]
    assert trained["gate"]["sparsity"] == pytest.approx(outcome.best["sparsity"])
    assert version.run_id == outcome.run_id  # the search's run is the version's run; the trials nest under it
    artifacts = {a.path for a in MlflowClient(conn.mlflow_uri).list_artifacts(outcome.run_id, "tune")}
    assert {"tune/pareto.png", "tune/trials.md", "tune/trials.json"} <= artifacts


def test_a_search_in_which_every_trial_fails_says_why_and_registers_nothing(conn, tmp_path):
    # A lineage with per-task linear heads, and the first task's classes again: every trial's training refuses it.
    first = write_drop(split_wordnet20(1993, "ci")[0], tmp_path / "wordnet-0")
    linear = TrainConfig(epochs=1, first_examples=None, head="linear")
    train_on_current(TaskDataset.from_dir(first), Registry.connect(conn), linear)
    again = TaskDataset.from_dir(first, name="wordnet-0-again")
    again = TaskDataset.from_files(
        "wordnet-0-again", {**again.files, "task.json": b'{"note": "same classes"}'}
    )
    before = [v.version for v in Lineage(conn).versions()]
    with pytest.raises(TuneFailed, match="none of the 2 trials finished.*already learned"):
        tune_then_train(again, conn, SearchSpace(), TuneSpec(trials=2), log=lambda _: None)
    assert [v.version for v in Lineage(conn).versions()] == before


class _Payload:
    """Unpickling this creates `marker`: a stand-in for any code a planted pickle would run on the driver."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_planted_under_the_search_key_never_runs(conn, tmp_path):
    dataset = TaskDataset.from_dir(write_drop(split_wordnet20(1993, "ci")[0], tmp_path / "wordnet-0"))
    space = SearchSpace.parse({"rank": [2], "temperature": None, "init_logit": None, "lr": None})
    spec, config = TuneSpec(trials=1), TrainConfig(epochs=1, first_examples=None)
    first = tune_task(dataset, conn, space, spec, base_config=config, log=lambda _: None)
    prefix = f"tune/{search_name(dataset.name, dataset.dataset_id, space, spec, None)}/"
    bucket, marker = Bucket.connect(conn), tmp_path / "payload-ran"
    # Where Tuner.restore looked (the predictable key), every attempt's own Tune state, and a trial record.
    planted = [f"{prefix}tuner.pkl", f"{prefix}trials/0000.json.pkl"]
    planted += [key for key in bucket.list(prefix) if key.endswith("tuner.pkl")]
    for key in planted:
        bucket.put(key, pickle.dumps(_Payload(marker)))

    said = []
    again = tune_task(dataset, conn, space, spec, base_config=config, log=said.append)

    assert not marker.exists()
    assert again.resumed and again.best_trial == first.best_trial  # its one trial ended before: not re-run
    assert any(line.startswith("resuming the search") for line in said)
    assert any("trials/0000.json.pkl: not a trial record" in line for line in said)
