"""`litelora retry DROP`: put a failed drop back under incoming/ so that the watcher trains it again.

The ledger says `pending` first and the files move after: a watcher that saw the files before the ledger would
take them for a re-drop of finished bytes and discard them. Training the retry cannot create a second version:
the watcher finds a version an earlier attempt registered and finishes that attempt instead.
"""

from __future__ import annotations

import getpass

from pipeline.errors import UserError
from pipeline.orchestrator.ledger import Entry, Ledger
from pipeline.orchestrator.watcher import FAILED, INCOMING, READY, READY_BODY
from pipeline.registry.bucket import Bucket

MIN_ID_PREFIX = 6


class RetryRefused(ValueError, UserError):
    """Nothing to retry under that name, or retrying now would lose or mix data; the message says which."""


def find_retryable(ledger: Ledger, selector: str) -> Entry:
    """The failed drop named by a dataset-id prefix or a task name (as `litelora status` shows them)."""
    named = [
        e
        for e in ledger.entries()
        if e.claims
        and (e.task == selector or (len(selector) >= MIN_ID_PREFIX and e.dataset_id.startswith(selector)))
    ]
    matches = [e for e in named if e.state in ("failed", "pending")]
    if not matches and named:
        states = ", ".join(
            sorted({e.state + (f" (v{e.events[-1].version})" if e.events[-1].version else "") for e in named})
        )
        raise RetryRefused(f"{selector!r} is {states}; only a failed drop can be retried")
    if not matches:
        raise RetryRefused(
            f"no drop is named {selector!r}: give a task name or at least {MIN_ID_PREFIX} "
            "characters of a dataset id from `litelora status`"
        )
    if len(matches) > 1:
        ids = ", ".join(e.dataset_id[:12] for e in matches)
        raise RetryRefused(f"{selector!r} names {len(matches)} failed drops ({ids}); give a dataset id")
    return matches[0]


def requeue(bucket: Bucket, ledger: Ledger, selector: str) -> dict:
    entry = find_retryable(ledger, selector)
    kept = f"{FAILED}{entry.task}/{entry.dataset_id[:16]}/"
    target = f"{INCOMING}{entry.task}/"
    files = bucket.list(kept)
    if not files:
        if entry.state == "pending" and bucket.list(target):
            raise RetryRefused(
                f"{entry.task} ({entry.dataset_id[:12]}) is already queued again under "
                f"s3://{bucket.name}/{target}"
            )
        raise RetryRefused(
            f"the files of {entry.task} ({entry.dataset_id[:12]}) are no longer under "
            f"s3://{bucket.name}/{kept}; drop the dataset again instead"
        )
    if bucket.list(target):
        raise RetryRefused(
            f"another drop is waiting under s3://{bucket.name}/{target}; retry once it is processed"
        )
    try:
        ledger.requeue(entry, who=getpass.getuser())
    except ValueError as err:
        raise RetryRefused(str(err)) from err
    markers = [k for k in files if k.endswith(f"/{READY}")]
    for key in files:
        if key not in markers:
            bucket.move(key, target + key[len(kept) :])
    # The marker last: a watcher listing mid-move must not see a complete drop with files still missing.
    bucket.put(target + READY, READY_BODY)
    for key in markers:
        bucket.delete(key)
    return {
        "task": entry.task,
        "dataset_id": entry.dataset_id,
        "from": bucket.uri(kept),
        "to": bucket.uri(target),
        "reason_it_failed": next((e.reason for e in reversed(entry.events) if e.state == "failed"), ""),
    }
