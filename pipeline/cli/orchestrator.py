"""Drops and the orchestrator: submit a dataset, watch the bucket, read the ledger, collect orphans, retry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.cli.app import (
    EXIT_FAILED,
    JSON,
    check_stream,
    command,
    echo,
    echo_json,
    log,
    open_connection,
    open_registry,
    printable,
    streams_option,
)


@command
def submit(
    path: Annotated[
        Path,
        typer.Argument(
            help="A drop folder (train.parquet or train/*.parquet [, test…, task.json]), an image folder, or one parquet file."
        ),
    ],
    task: Annotated[str, typer.Option(help="Task name: the drop goes to s3://<bucket>/incoming/<task>/.")],
    check: Annotated[bool, typer.Option(help="Validate locally first and refuse an invalid dataset.")] = True,
    stream: Annotated[
        str | None,
        typer.Option(
            help="Write this stream into the drop's task.json (default: what task.json says, else default).",
            callback=check_stream,
        ),
    ] = None,
    backbone: Annotated[
        str | None,
        typer.Option(
            help="A new stream's backbone, written into task.json (e.g. efficientnet-lite0 for images)."
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(help="A new stream's method, written into task.json: litelora (default) or share."),
    ] = None,
    recruits: Annotated[
        str | None,
        typer.Option(
            help="Where a new stream's recruited adapters act, written into task.json: full (default), null "
            "(outside earlier tasks' inputs) or routed (only on the rows routed to them)."
        ),
    ] = None,
) -> None:
    """Upload a dataset as a drop (files first, the _READY marker last), for `litelora watch` to train."""
    from pipeline.orchestrator.watcher import submit_drop

    bucket = open_registry().bucket
    asked = {"stream": stream, "backbone": backbone, "method": method, "recruits": recruits}
    fields = {k: v for k, v in asked.items() if v}
    prefix, files = submit_drop(bucket, path, task, check, fields)
    echo(f"dropped {', '.join(files)} at {bucket.uri(prefix)}")


ONCE = Annotated[bool, typer.Option("--once", help="Process the drops that are there, then exit.")]
QUIET_PERIOD = Annotated[
    float, typer.Option(help="Seconds without change after which a drop without _READY is complete.")
]
POLL = Annotated[float, typer.Option(help="Seconds between looks at the bucket.")]
WORKERS = Annotated[
    int, typer.Option(help="Ray Train workers per job (DDP); 0 = train in this process without Ray.")
]
GPU = Annotated[bool, typer.Option(help="One GPU per Ray Train worker (NCCL).")]
CPUS_PER_WORKER = Annotated[
    float | None,
    typer.Option(
        min=0.1, help="CPUs each Ray Train worker reserves. [default: 0.5 on CPU, Ray's with --gpu]"
    ),
]
TUNE = Annotated[
    str | None,
    typer.Option(
        help="auto: search hyperparameters with Ray Tune before training each drop; off: train with the parent's configuration. Default: auto with --gpu, off on CPU."
    ),
]
TRIALS = Annotated[int, typer.Option(min=1, help="Trials per drop when tuning.")]
LEASE = Annotated[
    float, typer.Option(min=10, help="Seconds of silence after which another watcher takes a drop over.")
]
MAX_ATTEMPTS = Annotated[
    int,
    typer.Option(
        min=1,
        help="Attempts whose watcher died mid-drop (its lease ran out) before the drop fails as poison.",
    ),
]
GUARD = Annotated[
    float | None,
    typer.Option(
        min=0,
        help="Promotion guard: the most (0-1) an earlier task's accuracy may drop for a new set to become current; 1 turns it off. [default: 0.05]",
    ),
]
WATCHED_STREAMS = streams_option(
    "Only the drops of this stream (repeat for several; default: every stream). One watcher per stream lets "
    "streams train at the same time."
)


@command
def watch(
    once: ONCE = False,
    quiet_period: QUIET_PERIOD = 30.0,
    poll: POLL = 5.0,
    workers: WORKERS = 2,
    gpu: GPU = False,
    cpus_per_worker: CPUS_PER_WORKER = None,
    tune: TUNE = None,
    trials: TRIALS = 8,
    lease: LEASE = 300.0,
    max_attempts: MAX_ATTEMPTS = 3,
    guard: GUARD = None,
    stream: WATCHED_STREAMS = None,
) -> None:
    """Run the orchestrator: claim each complete drop once, validate, train (Ray Train), register (Ctrl-C to stop)."""
    from pipeline.orchestrator.service import WatchOptions, build_watcher
    from pipeline.orchestrator.watcher import WatchConfig

    try:
        options = WatchOptions(
            workers=workers,
            gpu=gpu,
            cpus_per_worker=cpus_per_worker,
            tune=tune,
            trials=trials,
            max_accuracy_drop=guard,
            config=WatchConfig(
                quiet_period_s=quiet_period,
                poll_s=poll,
                lease_s=lease,
                max_attempts=max_attempts,
                streams=tuple(stream or ()),
            ),
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    watcher = build_watcher(open_connection(), options, log=log)
    log(
        f"watching {watcher.bucket.uri('incoming/')} as {watcher.ledger.watcher}"
        + (f" for stream(s) {', '.join(stream)}" if stream else "")
        + (" (once)" if once else "")
        + (f", tuning each drop with {trials} trials" if options.tune == "auto" else "")
    )
    done = watcher.run(once=once)
    failed = [d for d in done if d["state"] == "failed"]
    if once:
        echo(f"processed {len(done)} drop(s)" + (f", {len(failed)} failed" if failed else ""))
    if failed:
        raise typer.Exit(EXIT_FAILED)


GRACE = Annotated[
    float,
    typer.Option(
        min=0,
        help="Seconds before an unreferenced object counts as an orphan (a running job's files are younger).",
    ),
]


@command
def status(as_json: JSON = False, grace: GRACE = 3600.0) -> None:
    """Every drop the orchestrator has seen (task, dataset id, state, reason, version) and the orphan objects
    `litelora gc` would delete."""
    from rich.table import Table
    from rich.text import Text

    from pipeline.orchestrator.status import read_status

    registry = open_registry()
    found = read_status(registry, grace)
    orphans = None if found.orphans is None else [o.to_dict() for o in found.orphans]
    if as_json:
        echo_json({"streams": found.streams, "drops": found.drops, "orphans": orphans})
        return
    for row in found.streams or []:
        current = f"v{row['current']}" if row["current"] else "no version yet"
        backbone = f", {row['backbone']}" if row["backbone"] else ""
        echo(f"stream {row['stream']}: {row['registered_model']}{backbone}, current {current}")
    table = Table(title=f"drops in {registry.bucket.uri('')}")
    for col in ("task", "dataset", "state", "version", "reason"):
        table.add_column(col)
    for r in found.drops:
        cells = (r["task"], r["dataset_id"][:12], r["state"], f"v{r['version']}" if r["version"] else "")
        table.add_row(*(Text(printable(c)) for c in (*cells, r["reason"] or "")))
    Console().print(table)
    if orphans is None:
        echo(f"orphans: not checked ({found.orphan_error})")
    elif orphans:
        echo(
            f"{len(orphans)} orphan object(s), {sum(o['size'] for o in orphans):,} bytes, that no version "
            f"refers to (left by jobs that died before registering): `litelora gc --grace {grace:g}` deletes them"
        )


@command
def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    grace: GRACE = 3600.0,
    as_json: JSON = False,
) -> None:
    """Delete objects no registered version refers to: sets and datasets left by jobs that died before registering.
    Never deletes anything a version (of any registered model on the server) needs."""
    from pipeline.orchestrator.status import collect_garbage

    registry = open_registry()
    orphans = collect_garbage(registry, grace, dry_run)
    if as_json:
        echo_json({"deleted": not dry_run, "orphans": [o.to_dict() for o in orphans]})
        return
    for o in orphans:
        echo(
            f"{'would delete' if dry_run else 'deleted'} {registry.bucket.uri(o.key)} ({o.size:,} bytes): {o.why}"
        )
    echo(
        f"{len(orphans)} orphan object(s), {sum(o.size for o in orphans):,} bytes"
        + (" (dry run: nothing deleted)" if dry_run else "")
    )


@command
def retry(
    drop: Annotated[
        str,
        typer.Argument(help="Task name or dataset id (6+ characters) of a failed drop, as `status` shows."),
    ],
    as_json: JSON = False,
) -> None:
    """Queue a failed drop again: its files go back under incoming/ and the next watcher pass trains it."""
    from pipeline.orchestrator.ledger import Ledger
    from pipeline.orchestrator.requeue import requeue

    bucket = open_registry().bucket
    info = requeue(bucket, Ledger(bucket), drop)
    if as_json:
        echo_json(info)
        return
    echo(
        f"requeued {info['task']} (dataset {info['dataset_id'][:12]}) at {info['to']}; it failed with: "
        f"{info['reason_it_failed']}\nthe running watcher picks it up (or: litelora watch --once)"
    )
