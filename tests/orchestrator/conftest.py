"""The orchestration logic on in-memory stand-ins for the bucket and MLflow (tests/fakes.py): seconds, no servers."""

import copy
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.task_dataset import TaskDataset
from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.transaction import train_on_current
from pipeline.orchestrator.watcher import READY_BODY, WatchConfig, Watcher
from pipeline.registry.store import Registry
from tests.fakes import MemoryBucket, MemoryLineage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def parquet(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def drop(bucket, task: str, files: dict, ready: bool = True) -> None:
    """What `aws s3 cp` of a drop folder does: plain puts, the marker last."""
    for name, data in files.items():
        bucket.put(f"incoming/{task}/{name}", data)
    if ready:
        bucket.put(f"incoming/{task}/_READY", READY_BODY)


@pytest.fixture(autouse=True)
def figures_not_drawn(monkeypatch):
    """Every version's figures are computed from its data as in production and logged, but matplotlib is not asked
    to draw them: that was two thirds of these tests' time. tests/registry/test_plots.py and the integration tests
    draw them for real."""
    from pipeline.registry import plots

    def placeholder(*args) -> Path:
        path = args[-1]  # every figure function takes its output path last
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(PNG_SIGNATURE)
        return path

    for figure in ("accuracy_heatmap", "class_accuracy", "adapter_usage", "overlap_heatmap", "lineage_tree"):
        monkeypatch.setattr(plots, figure, placeholder)


@pytest.fixture(scope="session")
def _read_encoders() -> dict:
    return {}


@pytest.fixture(autouse=True)
def backbone_read_once(monkeypatch, _read_encoders):
    """A backbone is read from its files (from_pretrained, safetensors only) the first time a test process loads
    it; every later load gets its own fresh copy of that network, and the same tokenizer, which nothing changes
    (reference_copy shares it too). Reading the files again was a third of a drop's training on the tiny
    backbone. tests/learn, tests/methods and the integration tests read them on every load."""
    from pipeline.learn import backbone

    read = backbone.load_text_encoder

    def load_text_encoder(config):
        key = (config.name, config.revision)
        if key not in _read_encoders:
            _read_encoders[key] = read(config)
        network, tokenizer = _read_encoders[key]
        return copy.deepcopy(network), tokenizer

    monkeypatch.setattr(backbone, "load_text_encoder", load_text_encoder)


@pytest.fixture(scope="session")
def frozen_caches(tmp_path_factory) -> Path:
    """The frozen encoder's features and kept references, shared by every test of the session as a long-lived
    watcher shares them across drops: both are named by backbone, configuration and dataset content, so a test
    that trains the same drops as another reads what the first fitted (tests/learn/test_frozen.py fits them
    cold). Without this, every test paid for a reference no test before it had kept: ~40% of a training."""
    return tmp_path_factory.mktemp("frozen-caches")


@pytest.fixture
def registry(tmp_path, frozen_caches):
    (tmp_path / "cache").mkdir()
    for cache in ("features", "frozen-stages"):  # where transaction.score keeps them
        (frozen_caches / cache).mkdir(exist_ok=True)
        (tmp_path / "cache" / cache).symlink_to(frozen_caches / cache, target_is_directory=True)
    registry = Registry(MemoryBucket(), MemoryLineage(), tmp_path / "cache")
    registry.pointer.settle_s = 0.0  # no human moves the fake alias behind a test's back
    return registry


@pytest.fixture(scope="session")
def wordnet_files():
    """The five CI-tier Split-WordNet-20 tasks, cut to a quarter, as drop files."""
    return [
        {
            "train.parquet": parquet(
                text=t.train_inputs[::4], label=[t.classes[y] for y in t.train_labels[::4]]
            ),
            "test.parquet": parquet(
                text=t.test_inputs[::4], label=[t.classes[y] for y in t.test_labels[::4]]
            ),
        }
        for t in split_wordnet20(1993, "ci")
    ]


@pytest.fixture
def datasets(wordnet_files):
    return [TaskDataset.from_files(f"wn-t{i}", files) for i, files in enumerate(wordnet_files)]


@pytest.fixture
def config(tiny_backbone_dir):
    return TrainConfig(
        backbone=BackboneConfig(name=str(tiny_backbone_dir)),
        epochs=1,
        first_examples=None,
        batch_size=16,
        seed=0,
    )


@pytest.fixture
def make_watcher(registry, config):
    def make(max_accuracy_drop=1.0, trainer=None, **settings) -> Watcher:
        # The tiny random backbone forgets freely: the guard is off unless a test is about the guard.
        trainer = trainer or (
            lambda ds, reg: train_on_current(ds, reg, config, max_accuracy_drop=max_accuracy_drop)
        )
        return Watcher(registry, WatchConfig(poll_s=0.01, **settings), trainer=trainer, log=lambda m: None)

    return make
