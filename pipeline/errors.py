"""The failures a user fixes from the message alone. The CLI and the Ray job entry points print them as one line
(exit 1), never as a traceback; anything else is a bug and keeps its traceback.

The types are imported when first needed, so `litelora --help` does not pay for torch.
"""

from __future__ import annotations


class JobFailed(RuntimeError):
    """A Ray Train job or Tune search ended without a result, or a Serve app did not start; the message carries
    Ray's reason."""


def user_errors() -> tuple[type[Exception], ...]:
    from pipeline.adapters.adapter_set import AdapterSetError
    from pipeline.data.task_dataset import InvalidDataset
    from pipeline.learn.backbone import BackboneMissing
    from pipeline.orchestrator.requeue import RetryRefused
    from pipeline.orchestrator.rollback import RollbackRefused
    from pipeline.registry.bucket import StorageError
    from pipeline.registry.lineage import LineageError
    from pipeline.serving.predictor import BadRequest
    from pipeline.settings import NotConfigured
    from pipeline.stack.process import StackError

    return (
        AdapterSetError,
        InvalidDataset,
        BackboneMissing,
        JobFailed,
        LineageError,
        StorageError,
        FileNotFoundError,
        NotConfigured,
        StackError,
        RollbackRefused,
        RetryRefused,
        BadRequest,
        ValueError,  # a configuration value out of range: the message names it and its bounds
    )
