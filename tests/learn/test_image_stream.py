"""The learning core on images: Split-FashionMNIST (ci tier) through EfficientNet-Lite0 at a tiny input size."""

import copy

import pytest
import torch

from pipeline.adapters import GateConfig
from pipeline.baselines.ncm import run_ncm
from pipeline.data.fashion_mnist import split_fashion_mnist
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import predict_logits
from pipeline.learn.model import ContinualModel
from pipeline.learn.sequence import run_sequence

pytestmark = pytest.mark.model

IMAGE = BackboneConfig(name="efficientnet-lite0", image_size=32)


@pytest.fixture(scope="module")
def network():
    from pipeline.learn.efficientnet import load_efficientnet_lite0

    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def tasks():
    """Two tasks of the ci tier, cut to 16 train / 8 test images each (both classes: rows are grouped by class)."""
    tasks = split_fashion_mnist(1993, "ci")[:2]
    for t in tasks:
        t.train_inputs, t.train_labels = t.train_inputs[::2], t.train_labels[::2]
        t.test_inputs, t.test_labels = t.test_inputs[::2], t.test_labels[::2]
    return tasks


def _config(**changes) -> TrainConfig:
    return TrainConfig(
        backbone=IMAGE, epochs=1, batch_size=8, phase2_batch_size=8, eval_batch_size=16, seed=0, **changes
    ).with_overrides(rank=2)


def test_a_two_task_litelora_stream_runs_on_images_and_adapts_the_pointwise_maps(network, tasks):
    # l_t starts at 5: phase 2 (two Adam steps of phase2_lr = 0.05 on l_t) cannot bring it to 0, so the second
    # task recruits its adapter whatever the images do.
    config = _config(gate=GateConfig(init_logit=5.0))
    model = ContinualModel(config, backbone=copy.deepcopy(network))
    results, model = run_sequence(tasks, config, model=model)
    assert [t.decision for t in model.tasks] == ["recruit", "recruit"] and model.adapters.num_frozen == 2
    assert 4.8 < model.tasks[1].logit < 5.2
    assert all(name.endswith(("_expand_conv.linear", "_project_conv.linear")) for name, _ in model.adapters)
    # The last stage scores what the final model predicts on each task's images, over all four classes.
    stage = results[config.head].cil
    predicted = [
        int(
            (
                predict_logits(model, t.test_inputs).argmax(1) == model.class_index(t.classes)[t.test_labels]
            ).sum()
        )
        for t in tasks
    ]
    assert stage.correct[-1] == predicted and stage.counts == [len(t.test_labels) for t in tasks]


def test_frozen_nearest_class_mean_on_images_beats_chance():
    tasks = split_fashion_mnist(1993, "ci")[:2]
    result = run_ncm(tasks, IMAGE)
    assert result.cil.final_accuracy > 0.5  # chance over the 4 classes seen is 0.25


def test_an_image_adapter_set_loads_back_with_identical_logits(network, tasks, tmp_path):
    config = _config(gate=GateConfig(init_logit=5.0))
    model = ContinualModel(config, backbone=copy.deepcopy(network))
    run_sequence(tasks, config, model=model)
    model.save(tmp_path / "set")
    loaded = ContinualModel.load(tmp_path / "set", backbone=copy.deepcopy(network))
    inputs = tasks[0].test_inputs + tasks[1].test_inputs
    assert loaded.config.backbone == IMAGE
    # Bit for bit: the same tensors in the same shapes, the same batches, one process: the same computation.
    assert torch.equal(predict_logits(loaded, inputs), predict_logits(model, inputs))


def test_a_predictor_on_an_image_set_reads_image_bytes_and_refuses_text_and_hostile_images(network, tasks):
    from pipeline.learn.recipe import train_task
    from pipeline.serving.predictor import BadRequest, Predictor
    from tests.data.test_images import png_declaring

    model = ContinualModel(_config(), backbone=copy.deepcopy(network))
    train_task(model, tasks[0])
    predictor = Predictor(model, version="1")
    assert predictor.reads_images
    predictions = predictor.predict(tasks[0].test_inputs[:4], top=2)
    assert [p.label in tasks[0].classes for p in predictions] == [True] * 4
    assert all(len(p.scores) == 2 for p in predictions)
    with pytest.raises(BadRequest, match="inputs must be images"):
        predictor.predict(["a text"])
    with pytest.raises(BadRequest, match="declares 10000×10000 pixels"):
        predictor.predict([png_declaring(10_000, 10_000)])
    with pytest.raises(BadRequest, match="does not decode"):  # a sound header over cut-off pixel data
        predictor.predict([tasks[0].test_inputs[0][: len(tasks[0].test_inputs[0]) // 2]])


def test_peft_loads_an_image_sets_export_onto_the_unmodified_network_and_gives_its_logits(
    network, tasks, tmp_path
):
    from peft import PeftModel
    from safetensors.torch import load_file

    from pipeline.learn.image_backbone import ImageBackbone, normalised
    from pipeline.learn.peft_export import export_peft
    from pipeline.learn.recipe import train_task

    model = ContinualModel(_config(gate=GateConfig(init_logit=5.0)), backbone=copy.deepcopy(network))
    train_task(model, tasks[0])
    model.eval()
    labels = export_peft(model, tmp_path)
    assert labels["image_size"] == IMAGE.image_size and "pooling" not in labels

    # PEFT's Conv2d LoRA on the network as it ships: 1×1 convolutions, no `.linear` wrapper of ours.
    plain = copy.deepcopy(network).eval()
    first = next(iter(model.adapters))[0]
    assert isinstance(plain.get_submodule(first.removesuffix(".linear")), torch.nn.Conv2d)
    peft_model = PeftModel.from_pretrained(plain, tmp_path / "combined").eval()
    images = tasks[0].test_inputs[:8]
    pixels = normalised(ImageBackbone(copy.deepcopy(network), IMAGE.image_size).encode(images)["pixels"])
    heads = load_file(tmp_path / "heads.safetensors")
    with torch.no_grad():
        features = peft_model.base_model.model.pooled(pixels)
        if labels["normalize_features"]:
            features = torch.nn.functional.normalize(features, dim=-1)
        logits = features @ heads["weight"].T + heads["bias"]
        ours = predict_logits(model, images)
    torch.testing.assert_close(logits, ours, rtol=1e-4, atol=1e-4)  # the same maths in another order


def test_peft_loads_each_task_of_an_image_share_set_onto_the_unmodified_network(network, tasks, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from pipeline.learn.image_backbone import ImageBackbone, normalised
    from pipeline.learn.peft_export import export_peft
    from pipeline.methods.share.model import TaskSelectedModel, train_selected_task

    model = TaskSelectedModel(_config().running("share"), backbone=copy.deepcopy(network))
    for task in tasks:  # the second task trains coefficients on the first's basis
        train_selected_task(model, task)
    labels = export_peft(model, tmp_path)
    for j, (task, entry) in enumerate(zip(tasks, labels["tasks"], strict=True)):
        plain = copy.deepcopy(network).eval()  # 1×1 convolutions as the package ships them
        peft_model = PeftModel.from_pretrained(plain, tmp_path / entry["adapter"]).eval()
        pixels = normalised(
            ImageBackbone(copy.deepcopy(network), IMAGE.image_size).encode(task.test_inputs)["pixels"]
        )
        head = load_file(tmp_path / entry["head"])
        with torch.no_grad():
            logits = peft_model.base_model.model.pooled(pixels) @ head["weight"].T + head["bias"]
        # The export multiplies basis and coefficients out once; the layer does it per forward: rounding only.
        torch.testing.assert_close(logits, model.task_logits(task.test_inputs, j), rtol=1e-4, atol=1e-4)


def test_images_are_encoded_as_bytes_and_normalised_where_the_network_runs(tasks):
    from pipeline.learn.image_backbone import IMAGENET_MEAN, IMAGENET_STD, encode_images, normalised

    images = tasks[0].train_inputs[:4]
    encoded = encode_images(images, IMAGE.image_size)
    pixels = encoded["pixels"]
    assert set(encoded) == {"pixels"} and pixels.dtype == torch.uint8
    assert pixels.shape == (4, 3, IMAGE.image_size, IMAGE.image_size)
    # What a streamed block carries is a quarter of float pixels; the network still reads ImageNet-normalised
    # floats in [0, 1] space.
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = (pixels.double() / 255 - mean.double()) / std.double()
    torch.testing.assert_close(normalised(pixels), expected.float(), rtol=1e-6, atol=1e-6)
