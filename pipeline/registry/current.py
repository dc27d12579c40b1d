"""The set under `current` (or any registered version): found in MLflow, fetched from the bucket, loaded."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.adapters.adapter_set import read_manifest
from pipeline.learn.class_accuracy import ClassHistory
from pipeline.learn.config import TrainConfig
from pipeline.learn.methods import AnyModel, load_model
from pipeline.methods import DEFAULT_METHOD
from pipeline.registry.store import AdapterSetStore, Registry


@dataclass
class Parent:
    """A registered set loaded to train or serve on top of; all None before a lineage's first set."""

    model: AnyModel | None
    manifest: dict | None
    version: str | None
    set_id: str | None

    @property
    def metrics(self) -> dict | None:
        """The accuracy rows the parent was registered with (None before a lineage's first set)."""
        return self.manifest["metrics"] if self.manifest else None


def load_parent(
    sets: AdapterSetStore, set_id: str | None, version: str | None = None, config: TrainConfig | None = None
) -> Parent:
    """Set `set_id`, fetched into `sets`' cache and loaded as the model that wrote it; with `config`, reconfigured
    to train the next task with. Empty without `set_id` (a lineage's first set). `version` is the set's registered
    version, where the caller knows it: the transaction and serving load a version, a Ray Train worker and a Tune
    trial the set the driver names.

    The one way a parent set is loaded, so that every place that trains on it trains on the same model."""
    if not set_id:
        return Parent(None, None, None, None)
    directory = sets.fetch(set_id)
    model = load_model(directory)
    if config is not None:
        model.reconfigure(config)
    return Parent(model, read_manifest(directory), version, set_id)


def load_current(registry: Registry, version: str | None = None) -> Parent:
    """The set under `current` (or registered `version`), fetched and loaded; empty if nothing is current."""
    found = registry.lineage.get(version) if version else registry.current()
    if found is None:
        return load_parent(registry.sets, None)
    return load_parent(registry.sets, registry.sets.set_id_from_uri(found.source), found.version)


@dataclass
class ClassReport:
    """Per-class accuracy along one version's chain, read from its manifest alone (no weights fetched)."""

    version: str
    stages: list[str]
    """A label per stage, root first: `v<version> <task>` (the task alone where the chain is incomplete)."""
    versions: list[str] | None
    """The version of each stage, if every version of the chain is still registered."""
    history: ClassHistory
    method: str = DEFAULT_METHOD
    """The stream's method: Share scores each class among its task's classes (the task is named)."""

    def columns(self) -> list[str]:
        """Short stage names for a table: `v<version>`, else `t<stage>`."""
        return (
            [f"v{v}" for v in self.versions] if self.versions else [f"t{i}" for i in range(len(self.stages))]
        )


def class_report(registry: Registry, version: str | None = None) -> ClassReport | None:
    """`version`'s (default `current`'s) per-class history; None when nothing is current yet."""
    found = registry.lineage.get(version) if version else registry.current(reconcile=False)
    if found is None:
        return None
    manifest = registry.sets.manifest(registry.sets.set_id_from_uri(found.source))
    nodes = {node["version"]: node for node in registry.lineage.nodes()}
    chain, at = [], found.version
    while at in nodes and nodes[at] not in chain:  # parent tags are editable in the UI: never loop on a cycle
        chain.append(nodes[at])
        at = nodes[at]["parent"]
    tasks = [task["name"] for task in manifest["tasks"]]
    # A chain whose versions were deleted from MLflow still has its tasks in the manifest.
    versions = [node["version"] for node in reversed(chain)] if len(chain) == len(tasks) else None
    stages = [f"v{v} {t}" for v, t in zip(versions, tasks, strict=True)] if versions else tasks
    history = ClassHistory.from_metrics(manifest["metrics"])
    return ClassReport(found.version, stages, versions, history, manifest.get("method", DEFAULT_METHOD))
