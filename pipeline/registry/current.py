"""The set under `current` (or any registered version): found in MLflow, fetched from the bucket, loaded."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.adapters.adapter_set import read_manifest
from pipeline.learn.model import ContinualModel
from pipeline.registry.store import Registry


@dataclass
class Parent:
    """A registered set loaded to train or serve on top of; all None before a lineage's first set."""

    model: ContinualModel | None
    manifest: dict | None
    version: str | None
    set_id: str | None

    @property
    def metrics(self) -> dict | None:
        """The accuracy rows the parent was registered with (None before a lineage's first set)."""
        return self.manifest["metrics"] if self.manifest else None


def load_current(registry: Registry, version: str | None = None) -> Parent:
    """The set under `current` (or registered `version`), fetched and loaded; empty if nothing is current."""
    found = registry.lineage.get(version) if version else registry.current()
    if found is None:
        return Parent(None, None, None, None)
    set_id = registry.sets.set_id_from_uri(found.source)
    directory = registry.sets.fetch(set_id)
    return Parent(ContinualModel.load(directory), read_manifest(directory), found.version, set_id)
