"""The embedded local stack (SeaweedFS + MLflow on loopback) and the end-to-end demo."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from pipeline.cli.app import EXIT_FAILED, JSON, command, echo, echo_json, err, log, open_connection
from pipeline.cli.lineage import lineage
from pipeline.settings import load_settings


@command
def up(
    s3_port: Annotated[
        int | None, typer.Option(help="S3 port (default 8333, or a free port if busy).")
    ] = None,
    mlflow_port: Annotated[
        int | None, typer.Option(help="MLflow port (default 5000, or a free port if busy).")
    ] = None,
    as_json: JSON = False,
) -> None:
    """Start the embedded stack: SeaweedFS S3 and an MLflow server on 127.0.0.1 (harmless if running)."""
    from pipeline.stack import embedded

    home = load_settings().home
    with err.status("starting SeaweedFS and MLflow…"):
        state, started = embedded.up(
            home, ports={k: v for k, v in (("s3", s3_port), ("mlflow", mlflow_port)) if v}
        )
    if as_json:
        echo_json(
            {
                "s3_endpoint": state.s3_endpoint,
                "mlflow_ui": state.mlflow_uri,
                "bucket": state.bucket,
                "home": str(home),
                "started": started,
                "startup_s": round(state.startup_s, 1),
                "pids": {p.name: p.pid for p in state.processes},
            }
        )
        return
    verb = f"started in {state.startup_s:.1f} s" if started else "already running"
    echo(
        f"stack {verb}\n  S3:        {state.s3_endpoint} (bucket {state.bucket})\n  MLflow UI: "
        f'{state.mlflow_uri}\n  state:     {home}\npoint tools at it: eval "$(litelora env)"'
    )


@command
def down() -> None:
    """Stop exactly the processes `litelora up` started (data is kept)."""
    from pipeline.stack import embedded

    stopped = embedded.down(load_settings().home)
    echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@command
def env() -> None:
    """Print `export` lines pointing aws, boto3 and mlflow (with its login) at the stack: eval "$(litelora env)"."""
    from pipeline.stack import embedded

    for key, value in embedded.env_exports(load_settings().home).items():
        echo(f"export {key}={shlex.quote(value)}")


@command
def demo(
    tier: Annotated[
        str, typer.Option(help="Data tier of the demo tasks: quick (150/100 per class) or ci (tiny).")
    ] = "quick",
    workers: Annotated[int, typer.Option(help="Ray Train workers per task (0 = no Ray).")] = 2,
    tasks: Annotated[int, typer.Option(help="How many of the 5 demo tasks to drop.", min=1, max=5)] = 5,
    images: Annotated[
        bool,
        typer.Option(
            "--images",
            help="Then drop the Split-FashionMNIST tasks as image folders into a second stream, `images` "
            "(EfficientNet-Lite0; ≈ 5 more minutes).",
        ),
    ] = False,
) -> None:
    """The main job end to end: start the stack, drop the demo tasks, train each with Ray Train, show the lineage."""
    from pipeline.demo import run_demo
    from pipeline.stack import embedded

    with err.status("starting SeaweedFS and MLflow…"):
        state, _ = embedded.up(load_settings().home)
    log(f"stack up: S3 {state.s3_endpoint}, MLflow {state.mlflow_uri}")
    conn = open_connection()
    done = run_demo(conn, tier=tier, workers=workers, tasks=tasks, images=images, log=log)
    lineage()
    if images:
        echo("\nstream images:")
        lineage(stream="images")
    for d in done:
        if d["state"] == "rejected":
            echo(
                f"note: {d['task']} (v{d['version']}) was rejected by the promotion guard, so `current` does "
                "not know its classes; `litelora rollback` can still make it current with --force"
            )
    # A drop whose version an earlier, crashed attempt registered reports no accuracy of its own.
    trained = [d for d in done if d["state"] in ("registered", "rejected") and "final_accuracy" in d]
    for prefix in ("wordnet-", "fashion-"):
        last = ([d for d in trained if d["task"].startswith(prefix)] or [None])[-1]
        if last:
            echo(
                f"\n{last['task']} (v{last['version']}): accuracy {100 * last['final_accuracy']:.1f}% over every "
                f"class so far (average over the stream {100 * last['avg_accuracy']:.1f}%); the frozen encoder "
                f"with the same head: {100 * last['frozen_final_accuracy']:.1f}% "
                f"({100 * last['frozen_avg_accuracy']:.1f}%)"
            )
    models = [conn.registered_model, *([conn.for_stream("images").registered_model] if images else [])]
    for model in models:
        echo(f"\nMLflow UI: {conn.mlflow_uri}/#/models/{model}  (lineage, decisions, plots)")
    echo("next: litelora status · litelora rollback VERSION · litelora down")
    if [d for d in done if d["state"] not in ("registered", "rejected", "duplicate")]:
        raise typer.Exit(EXIT_FAILED)
