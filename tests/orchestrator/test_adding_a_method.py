"""docs/architecture.md §1b kept honest: a method defined in a module of its own and given one registry entry runs
through the orchestrator (a drop's task.json names it) on the in-memory stand-ins, with nothing else changed."""

import json
import sys
import types

import pytest

from pipeline.methods import registry as method_registry
from pipeline.methods.base import Method
from tests.orchestrator.conftest import drop


class AdaptTwice(Method):
    """A toy: the first two tasks adapt, later ones only fit heads."""

    def adapts(self, task_index: int) -> bool:
        return task_index < 2

    def decision(self, task_index: int, gate_decision: str) -> str:
        return gate_decision if task_index < 2 else "reuse"


@pytest.fixture
def toy_method(monkeypatch):
    module = types.ModuleType("toy_method")
    module.METHOD = AdaptTwice("adapt-twice", "two adaptations, then heads only")
    monkeypatch.setitem(sys.modules, "toy_method", module)
    monkeypatch.setitem(method_registry.METHODS, module.METHOD.name, module.METHOD)  # the one registry line
    return module.METHOD


def test_a_method_registered_in_a_module_of_its_own_trains_a_stream_through_the_orchestrator(
    toy_method, registry, wordnet_files, make_watcher
):
    for i, files in enumerate(wordnet_files[:3]):
        drop(
            registry.bucket, f"t{i}", {**files, "task.json": json.dumps({"method": toy_method.name}).encode()}
        )
        assert [d["state"] for d in make_watcher().run(once=True)] == ["registered"]
    versions = registry.lineage.versions()
    assert {json.loads(v.tags["config"])["method"] for v in versions} == {toy_method.name}
    assert [v.tags["decision"] for v in versions] == ["recruit", "recruit", "reuse"]
    assert versions[-1].tags["active_adapters"] == versions[-2].tags["active_adapters"] == "2"
