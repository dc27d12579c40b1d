"""Adapter sets on disk: identical logits after save → load, content addressing, safetensors only."""

import copy
import pickle
import shutil

import pytest
import torch

from pipeline.adapters import GateConfig
from pipeline.adapters.adapter_set import AdapterSetError, read_manifest
from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import predict_logits
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task


@pytest.fixture(scope="module")
def _trained_once(_tiny_bert_template, tokenizer, wordnet_tasks, tmp_path_factory):
    config = TrainConfig(
        epochs=1, batch_size=8, phase2_batch_size=4, lr=5e-3, seed=0, gate=GateConfig(init_logit=5.0)
    )
    model = ContinualModel(config, backbone=copy.deepcopy(_tiny_bert_template), tokenizer=tokenizer)
    for task in wordnet_tasks[:2]:
        train_task(model, task)
    path = tmp_path_factory.mktemp("trained") / "set"
    model.save(path)
    return model, path


@pytest.fixture
def trained(_trained_once, tiny_bert, tokenizer, tmp_path):
    """A model trained on two tasks, a fresh backbone and the set saved from it: each test gets its own copy of
    all three to change (merge, corrupt files), of one training per module (the same seed made every test's)."""
    model, path = _trained_once
    own = copy.deepcopy(model, memo={id(tokenizer): tokenizer})  # the tokenizer is read, never changed
    shutil.copytree(path, tmp_path / "set")
    return own, tiny_bert, tmp_path / "set"


def test_save_then_load_reproduces_identical_logits(trained, tokenizer, wordnet_tasks):
    model, fresh, path = trained
    loaded = ContinualModel.load(path, backbone=fresh, tokenizer=tokenizer)
    inputs = wordnet_tasks[0].test_inputs + wordnet_tasks[1].test_inputs
    # Bit for bit: the loaded set holds the very same tensors in the same shapes, and both forwards run in this
    # process on the same batches, so they are the same computation.
    assert torch.equal(predict_logits(loaded, inputs), predict_logits(model, inputs))
    assert [t.name for t in loaded.tasks] == [t.name for t in wordnet_tasks[:2]]


def test_merged_model_gives_the_same_logits(trained, wordnet_tasks):
    model, _, _ = trained
    inputs = wordnet_tasks[1].test_inputs
    before = predict_logits(model, inputs)
    model.merge()
    assert torch.allclose(predict_logits(model, inputs), before, atol=1e-4, rtol=1e-4)


def test_a_loaded_set_trains_the_next_task(trained, tokenizer, wordnet_tasks, tmp_path):
    _, fresh, path = trained
    loaded = ContinualModel.load(path, backbone=fresh, tokenizer=tokenizer)
    train_task(loaded, wordnet_tasks[2])
    manifest = loaded.save(tmp_path / "child")
    parent = read_manifest(path)
    assert len(manifest["tasks"]) == 3
    # Content addressing: the child reuses the parent's adapter files byte for byte.
    assert {a["file"] for a in parent["adapters"]} <= {a["file"] for a in manifest["adapters"]}


def test_saving_twice_writes_identical_files(trained, tmp_path):
    model, _, path = trained
    again = model.save(tmp_path / "again")
    assert again["adapters"] == read_manifest(path)["adapters"]


def test_a_corrupted_adapter_file_is_rejected(trained, tokenizer):
    _, fresh, path = trained
    victim = next((path / "adapters").iterdir())
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(AdapterSetError, match="does not match its SHA-256"):
        ContinualModel.load(path, backbone=fresh, tokenizer=tokenizer)


def test_a_pickle_disguised_as_safetensors_is_never_unpickled(trained, tokenizer):
    import hashlib
    import json

    _, fresh, path = trained
    payload = pickle.dumps({"boom": torch.zeros(1)})
    name = f"adapters/{hashlib.sha256(payload).hexdigest()}.safetensors"
    (path / name).write_bytes(payload)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["adapters"][0]["file"] = name
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AdapterSetError, match="not a safetensors file"):
        ContinualModel.load(path, backbone=fresh, tokenizer=tokenizer)


def test_a_manifest_pointing_outside_the_set_is_rejected(trained, tokenizer):
    import json

    _, fresh, path = trained
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["tasks"][0]["head"] = "../../etc/passwd"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AdapterSetError, match="outside the adapter set"):
        ContinualModel.load(path, backbone=fresh, tokenizer=tokenizer)


def test_a_missing_manifest_says_the_set_is_incomplete(tmp_path):
    with pytest.raises(AdapterSetError, match="not completely written"):
        read_manifest(tmp_path)


def test_an_unwrapped_merge_leaves_plain_linear_modules_and_the_same_logits(trained, wordnet_tasks):
    model, _, _ = trained
    inputs = wordnet_tasks[1].test_inputs
    before = predict_logits(model, inputs)
    model.merge(unwrap=True)
    assert not any(type(m).__name__ == "SDLoRALinear" for m in model.backbone.modules())
    assert torch.allclose(predict_logits(model, inputs), before, atol=1e-4, rtol=1e-4)
