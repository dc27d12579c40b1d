"""Sets written by earlier releases keep loading; a set from a newer release is refused with what to do."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from pipeline.adapters.adapter_set import FORMAT, TASK_SELECTED_FORMAT, AdapterSetError, read_manifest
from pipeline.learn.methods import load_model
from pipeline.learn.model import ContinualModel
from pipeline.methods.share.model import TaskSelectedModel

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.model
def test_a_set_in_format_1_loads_and_gives_the_logits_it_gave_when_written():
    expected = json.loads((FIXTURES / "adapter-set-format-1.expected.json").read_text())
    model = ContinualModel.load(FIXTURES / "adapter-set-format-1").eval()
    assert model.classes == expected["classes"]
    with torch.no_grad():
        logits = model(**model.encode(expected["texts"]))
    # Written on another machine: the same maths, summed in another order, differs in the last bits.
    torch.testing.assert_close(logits, torch.tensor(expected["logits"]), rtol=1e-4, atol=1e-4)


@pytest.mark.model
def test_a_share_set_in_format_2_loads_and_gives_each_task_the_logits_it_gave_when_written():
    expected = json.loads((FIXTURES / "adapter-set-format-2.expected.json").read_text())
    model = load_model(FIXTURES / "adapter-set-format-2")
    assert isinstance(model, TaskSelectedModel) and model.classes == expected["classes"]
    for j, (task, logits) in enumerate(expected["logits"].items()):
        assert model.tasks[j].name == task
        # Written on another machine: the same maths, summed in another order, differs in the last bits.
        torch.testing.assert_close(
            model.task_logits(expected["texts"], j), torch.tensor(logits), rtol=1e-4, atol=1e-4
        )


def test_this_release_writes_each_set_in_the_oldest_format_that_holds_it_and_has_a_fixture_of_each():
    assert read_manifest(FIXTURES / "adapter-set-format-1")["format"] == FORMAT == "litelora-adapter-set/1"
    assert (
        read_manifest(FIXTURES / "adapter-set-format-2")["format"]
        == TASK_SELECTED_FORMAT
        == "litelora-adapter-set/2"
    ), "a new format needs a fixture of its own and an entry in UPGRADES"


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("litelora-adapter-set/3", "written by a newer LiteLoRA .* upgrade litelora-pipeline"),
        ("litelora-adapter-set/0", "no longer readable"),
        ("some-other-tool/1", "not an adapter-set manifest"),
        (None, "not an adapter-set manifest"),
    ],
)
def test_an_unknown_format_is_refused_with_what_to_do(tmp_path, written, message):
    target = tmp_path / "set"
    shutil.copytree(FIXTURES / "adapter-set-format-1", target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["format"] = written
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AdapterSetError, match=message):
        read_manifest(target)
