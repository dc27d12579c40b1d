"""The version tree in MLflow, and moving `current` back."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.app import (
    JSON,
    STREAM,
    command,
    echo,
    echo_json,
    fail,
    open_connection,
    open_registry,
    version_option,
)
from pipeline.methods import method_of


@command
def lineage(
    stream: STREAM = None,
    classes: Annotated[
        bool,
        typer.Option(
            "--classes",
            help="Instead of the tree: each class's accuracy after every version of the chain, on its latest "
            "held-out rows, beside the frozen encoder with the same head.",
        ),
    ] = False,
    version: Annotated[
        str | None,
        typer.Option(
            help="Per-class accuracy along the chain ending at this version (implies --classes; default: "
            "`current`).",
            callback=version_option,
        ),
    ] = None,
    as_json: JSON = False,
) -> None:
    """The adapter-set version tree: parent, task, decision, adapters kept, accuracy; `current` marked."""
    from pipeline.registry.lineage import version_label
    from pipeline.registry.store import Registry

    conn = open_connection(stream)
    registry = Registry.connect(conn)
    if classes or version:
        show_classes(registry, version, as_json)
        return
    current = registry.current(reconcile=False)  # a read: never writes, whatever credentials it has
    rows = [
        {**node, "current": current is not None and node["version"] == current.version}
        for node in registry.lineage.nodes()
    ]
    moves = registry.lineage.moves()
    if as_json:
        echo_json(
            {
                "stream": conn.stream,
                "model": conn.registered_model,
                "current": current.version if current else None,
                "versions": rows,
                "alias_moves": moves,
            }
        )
        return
    if not rows:
        echo("no adapter sets registered yet")
        return
    children: dict = {}
    for r in rows:
        children.setdefault(r["parent"], []).append(r)

    def show(r: dict, depth: int) -> None:
        mark = ("  <- current" if r["current"] else "") + (
            "  (rejected by the promotion guard)" if r["promotion"] == "rejected" else ""
        )
        acc = f"avg acc {100 * float(r['avg_accuracy']):.1f}%" if r["avg_accuracy"] else ""
        echo(
            f"{'  ' * depth}v{r['version']}  {r['task']}  {r['decision']}  {r['active_adapters']} adapter(s)  "
            f"{acc}{mark}"
        )
        for child in children.get(r["version"], []):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)
    if moves:
        echo("\nrecent moves of `current` (all of them: --json, or the experiment litelora-alias-moves):")
    for m in moves[-5:]:
        before = version_label(m["from_version"], "none")
        echo(
            f"  {m['when']}  {m['kind']}: {before} -> v{m['to_version']}  by {m['who']}"
            + (f"  ({m['reason']})" if m["reason"] else "")
        )


@command
def rollback(
    version: Annotated[
        str, typer.Argument(help="The version to make current (e.g. 2 or v2).", callback=version_option)
    ],
    reason: Annotated[str, typer.Option(help="Why; recorded with the move.")] = "",
    force: Annotated[
        bool, typer.Option("--force", help="Also make a version current that the promotion guard rejected.")
    ] = False,
    stream: STREAM = None,
) -> None:
    """Make an earlier adapter set live again; the next task trains on top of it. Nothing is deleted."""
    from pipeline.errors import USER_ERRORS
    from pipeline.orchestrator import rollback as rollbacks
    from pipeline.registry.lineage import version_label

    try:
        move = rollbacks.rollback(open_registry(stream), version, reason, force)
    except USER_ERRORS as e:
        fail(f"rollback refused, current unchanged: {e}")
    echo(
        f"v{version} is already current; nothing to do"
        if move is None
        else f"current: {version_label(move.from_version, 'none')} -> v{move.to_version}"
    )


def show_classes(registry, version: str | None, as_json: bool) -> None:
    from pipeline.errors import USER_ERRORS
    from pipeline.registry.current import class_report

    try:
        report = class_report(registry, version)
    except USER_ERRORS as e:
        fail(str(e))
    if report is None:
        fail("no adapter set is current yet; name one with --version")
    rows = report.history.rows()
    if as_json:
        echo_json(
            {"stream": registry.stream, "version": report.version, "stages": report.stages, "classes": rows}
        )
        return
    if not any(r["accuracy"] for r in rows):
        echo(f"v{report.version} was registered before per-class accuracy was recorded")
        return
    width = max(len(r["class"]) for r in rows)
    columns = report.columns()
    echo(f"{'class':<{width}}  " + "  ".join(f"{c:>5}" for c in columns) + "  frozen")
    for r in rows:
        cells = ["    -" if a is None else f"{100 * a:5.1f}" for a in r["accuracy"]]
        frozen = "     -" if r["frozen_accuracy"] is None else f"{100 * r['frozen_accuracy']:6.1f}"
        echo(f"{r['class']:<{width}}  " + "  ".join(cells) + f"  {frozen}")
    among = (
        "its task's classes (the task is named)"
        if method_of(report.method).selects_by_task
        else "every class known"
    )
    echo(
        f"\n% of each class's latest held-out rows classified right among {among}; '-': not known yet."
        "\nfrozen: the bare backbone with the same head, after the last version. Columns: "
        + ", ".join(report.stages)
    )
