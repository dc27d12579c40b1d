"""`litelora retry DROP`: put a failed drop back under incoming/ so that the watcher trains it again.

The ledger says `pending` first and the files move after: a watcher that saw the files before the ledger would
take them for a re-drop of finished bytes and discard them. Training the retry cannot create a second version:
the watcher finds a version an earlier attempt registered and finishes that attempt instead.
"""

from __future__ import annotations

import getpass

from pipeline.orchestrator.ledger import Entry, Ledger
from pipeline.orchestrator.watcher import FAILED, INCOMING, READY, READY_BODY
from pipeline.registry.objects import Bucket

MIN_ID_PREFIX = 6


class RetryRefused(ValueError):
    """Nothing to retry under that name, or retrying now would lose or mix data; the message says which."""


def find_retryable(ledger: Ledger, selector: str) -> Entry:
    """The failed drop named by a dataset-id prefix or a task name (as `litelora status` shows them)."""
    entries = [e for e in ledger.entries() if e.state in ("failed", "pending") and e.claims]
    matches = [e for e in entries if e.task == selector
               or (len(selector) >= MIN_ID_PREFIX and e.dataset_id.startswith(selector))]
    if not matches:
        raise RetryRefused(f"no failed drop is named {selector!r}: give a task name or at least {MIN_ID_PREFIX} "
                           "characters of a dataset id from `litelora status`")
    if len(matches) > 1:
        ids = ", ".join(e.dataset_id[:12] for e in matches)
        raise RetryRefused(f"{selector!r} names {len(matches)} failed drops ({ids}); give a dataset id")
    return matches[0]


def requeue(bucket: Bucket, ledger: Ledger, selector: str) -> dict:
    entry = find_retryable(ledger, selector)
    kept = f"{FAILED}{entry.task}/{entry.dataset_id[:16]}/"
    files = bucket.list(kept)
    if not files:
        raise RetryRefused(f"the files of {entry.task} ({entry.dataset_id[:12]}) are no longer under "
                           f"s3://{bucket.name}/{kept}; drop the dataset again instead")
    target = f"{INCOMING}{entry.task}/"
    if bucket.list(target):
        raise RetryRefused(f"another drop is waiting under s3://{bucket.name}/{target}; retry once it is processed")
    try:
        ledger.requeue(entry, who=getpass.getuser())
    except ValueError as err:
        raise RetryRefused(str(err)) from err
    for key in files:
        bucket.move(key, target + key[len(kept):])
    if f"{kept}{READY}" not in files:
        bucket.put(target + READY, READY_BODY)
    return {"task": entry.task, "dataset_id": entry.dataset_id, "from": bucket.uri(kept), "to": bucket.uri(target),
            "reason_it_failed": next((e.reason for e in reversed(entry.events) if e.state == "failed"), "")}
