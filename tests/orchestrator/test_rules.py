"""Pure rules of the orchestrator: which object keys are hostile, when a new set may become current."""

import pytest

from pipeline.data.task_dataset import TASK_NAME
from pipeline.learn.evaluate import StageScores
from pipeline.orchestrator.promotion import guard_reason
from pipeline.orchestrator.watcher import _unsafe, orchestration_overhead


@pytest.mark.parametrize(
    "key",
    [
        "incoming/t/../ledger/x.json",
        "incoming/t/./train.parquet",
        "incoming//train.parquet",
        "incoming/t/..",
        "incoming/t\\..\\x",
        "incoming/t/" + "a" * 1100,
    ],
)
def test_keys_that_escape_or_abuse_the_prefix_are_unsafe(key):
    assert _unsafe(key)


@pytest.mark.parametrize(
    "key", ["incoming/t/train.parquet", "incoming/t/_READY", "incoming/t/sub/test.parquet"]
)
def test_ordinary_keys_are_safe(key):
    assert not _unsafe(key)


@pytest.mark.parametrize(
    "name, ok",
    [
        ("animals", True),
        ("task-2.v1_b", True),
        ("", False),
        ("-x", False),
        ("a" * 101, False),
        ("ünïcode", False),
        ("a b", False),
        ("trailing-newline\n", False),
    ],
)
def test_task_names_are_plain(name, ok):
    assert bool(TASK_NAME.match(name)) is ok


PARENT = {"til_correct": [[90], [80, 95]], "correct": [[90], [60, 95]], "counts": [100, 100]}


def _scores(til: list[int], cil: list[int]) -> StageScores:
    return StageScores(cil_correct=cil, til_correct=til, counts=[100] * len(til))


def test_the_guard_refuses_a_set_that_drops_an_earlier_task_beyond_the_bound():
    assert guard_reason(PARENT, _scores([76, 90, 50], [0, 0, 0]), 0.05) == ""  # TIL drops of 4 and 5: allowed
    reason = guard_reason(PARENT, _scores([74, 94, 50], [90, 95, 50]), 0.05)
    assert "task 0 TIL" in reason and "6.0 points" in reason


def test_the_guard_can_judge_class_incremental_accuracy_instead():
    assert "task 1 CIL" in guard_reason(PARENT, _scores([90, 95, 50], [60, 80, 50]), 0.05, metric="cil")


def test_the_first_set_has_nothing_to_guard():
    assert guard_reason(None, _scores([10], [10]), 0.05) == ""


def test_overhead_is_everything_but_training_compute_and_evaluation():
    timings = {
        "detection_latency_s": 0.5,
        "ray_start_s": 7.0,
        "worker_setup_s": 3.0,
        "compute_s": 20.0,
        "ray_finish_s": 1.5,
        "evaluate_s": 5.0,
        "register_s": 0.5,
    }
    out = orchestration_overhead(timings, total_s=38.0)
    assert out["overhead_s"] == pytest.approx(13.0)
    # Training starts once the drop is detected, validated and the workers are set up: total minus what follows.
    assert out["to_training_start_s"] == pytest.approx(38.0 - 20.0 - 1.5 - 5.0 - 0.5)


def test_each_ray_train_worker_reserves_half_a_cpu_by_default_and_what_it_is_told_beside_its_gpu():
    from pipeline.orchestrator.ray_train import ScalingSpec

    assert ScalingSpec().resources_per_worker() == {"CPU": 0.5}
    assert ScalingSpec(cpus_per_worker=1).resources_per_worker() == {"CPU": 1}
    assert ScalingSpec(use_gpu=True).resources_per_worker() is None  # Ray's default: one GPU, one CPU
    assert ScalingSpec(use_gpu=True, cpus_per_worker=8).resources_per_worker() == {"CPU": 8, "GPU": 1}


def test_the_connection_a_ray_job_shows_in_its_dashboard_holds_no_s3_key(tmp_path, monkeypatch):
    from pipeline.settings import Connection, with_keys

    conn = Connection(
        "http://127.0.0.1:1",
        "AKIDEXAMPLE",
        "s3cr3t-never-shown",
        "us-east-1",
        "b",
        "http://m",
        "m",
        tmp_path / "cache",
    )
    assert "s3cr3t" not in repr(conn)
    travelling = conn.without_keys()
    assert travelling.secret_key is None and travelling.access_key is None
    # A worker finds the keys itself: its environment first, then this installation's credentials file.
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)
    assert with_keys(travelling).secret_key is None, "no keys anywhere: an instance profile's turn"
    (tmp_path / "credentials.json").write_text('{"access_key": "LLFILE", "secret_key": "from-file"}')
    assert (with_keys(travelling).access_key, with_keys(travelling).secret_key) == ("LLFILE", "from-file")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    assert with_keys(travelling).secret_key == "from-env"


def test_the_train_loop_config_of_a_ray_train_job_carries_no_secret(monkeypatch, tmp_path):
    import ray.train.torch

    from pipeline.learn.config import TrainConfig
    from pipeline.orchestrator import ray_train
    from pipeline.settings import Connection

    seen = {}

    class Stop(Exception):
        pass

    def trainer(loop, train_loop_config, **kwargs):
        seen.update(train_loop_config)
        raise Stop

    monkeypatch.setattr(ray_train, "TorchTrainer", trainer)
    monkeypatch.setattr(ray_train, "init_ray", lambda home: None)
    monkeypatch.setattr(ray_train, "held_out_record", lambda conn, dataset_id: {"rule": "seeded"})
    conn = Connection(
        None, "AKIDEXAMPLE", "s3cr3t-never-shown", "us-east-1", "b", "http://m", "m", tmp_path / "c"
    )
    with pytest.raises(Stop):
        ray_train.fit_with_ray_train(conn, TrainConfig(), None, "d" * 64, "t", ray_train.ScalingSpec())
    assert "s3cr3t" not in repr(seen) and "AKIDEXAMPLE" not in repr(seen) and "mlfl0w" not in repr(seen)
    assert ray.train.torch  # the real module was importable: the trainer above stands in for it only


def test_watch_trains_every_set_on_the_device_litelora_device_names(monkeypatch, tmp_path):
    from pipeline.orchestrator import service
    from pipeline.registry.store import Registry
    from pipeline.settings import Connection
    from tests.fakes import MemoryBucket, MemoryLineage

    seen = {}
    monkeypatch.setenv("LITELORA_DEVICE", "cpu")
    monkeypatch.setattr(Registry, "connect", lambda conn: Registry(MemoryBucket(), MemoryLineage(), tmp_path))
    monkeypatch.setattr(
        service, "train_on_current", lambda ds, reg, config, **kw: seen.update(config=config, **kw)
    )
    conn = Connection(None, None, None, "us-east-1", "b", "http://m", "m", tmp_path / "cache")
    service.build_watcher(conn, service.WatchOptions(workers=0)).trainer("a dataset", "its registry")
    assert seen["config"].device == "cpu" and seen["overrides"] == {"device": "cpu"}
