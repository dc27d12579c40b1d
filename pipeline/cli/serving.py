"""Using a registered set: predict from the shell, export to PEFT, serve over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.app import (
    JSON,
    STREAM,
    command,
    echo,
    echo_json,
    err,
    fail,
    log,
    open_connection,
    open_registry,
    streams_option,
    version_option,
)
from pipeline.settings import load_settings


@command
def predict(
    text: Annotated[list[str] | None, typer.Option(help="Text to classify (repeat for several).")] = None,
    file: Annotated[
        typer.FileText | None,
        typer.Option("--file", help="Texts to classify, one per line ('-' reads stdin)."),
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option(
            help="A PNG/JPEG file to classify with a set on a vision backbone (repeat for several)."
        ),
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="Registered version (default: `current`).", callback=version_option)
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Scores of the top classes to show.")] = 3,
    task: Annotated[
        str | None,
        typer.Option(
            help="Score only this task's classes (a Share stream needs it: it keeps a delta per task)."
        ),
    ] = None,
    stream: STREAM = None,
    as_json: JSON = False,
) -> None:
    """Classify texts or images with a registered adapter set (merged weights): label, its task, scores."""
    from pipeline.serving.predictor import Predictor

    texts = [*(text or []), *(line.rstrip("\n") for line in file or [] if line.strip())]
    if not texts and not image:
        raise typer.BadParameter("give --text (repeatable), --file or --image")
    if texts and image:
        raise typer.BadParameter("give texts or images, not both: a set reads one kind")
    predictor = Predictor.from_registry(open_connection(stream), version)
    if image and not predictor.reads_images:
        fail(f"v{predictor.version} reads text; --image needs a stream on a vision backbone (--stream)")
    if texts and predictor.reads_images:
        fail(f"v{predictor.version} reads images; give --image (or choose a text stream with --stream)")
    inputs, shown = (
        (texts, [t[:60] for t in texts])
        if texts
        else ([p.read_bytes() for p in image], list(map(str, image)))
    )
    predictions = predictor.predict_all(inputs, top=top, task=task)
    if as_json:
        echo_json({"version": predictor.version, "predictions": [p.__dict__ for p in predictions]})
        return
    for name, p in zip(shown, predictions, strict=True):
        scores = ", ".join(f"{label} {score:.2f}" for label, score in p.scores.items())
        echo(f"{p.label}  (task {p.task}; v{predictor.version}; {scores})  <- {name}")


@command
def export(
    version: Annotated[
        str, typer.Argument(help="Registered version to export (e.g. 3 or v3).", callback=version_option)
    ],
    peft: Annotated[
        Path, typer.Option("--peft", help="Directory for the PEFT LoRA adapters, heads and labels.")
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier export in the directory (else refused).")
    ] = False,
    stream: STREAM = None,
    as_json: JSON = False,
) -> None:
    """Write a version as standard PEFT LoRA adapters (combined and one per kept adapter; a Share set: one per task)
    plus its heads."""
    from pipeline.learn.peft_export import export_peft
    from pipeline.registry.current import load_current

    found = load_current(open_registry(stream), version)
    summary = export_peft(found.model, peft, replace=force)
    if as_json:
        echo_json({"version": found.version, "directory": str(peft), **summary})
        return
    from pipeline.learn.backbone_files import resolve_model_path

    base = (
        "load_efficientnet_lite0()"  # from pipeline.learn.efficientnet: the network as its package ships it
        if "image_size" in summary
        # The packaged copy on local disk: loads offline, as the pipeline does.
        else f"AutoModel.from_pretrained({resolve_model_path(summary['base_model'])!r})"
    )
    if "tasks" in summary:  # a Share set: a LoRA per task, no combined delta
        first = f"{peft}/adapters/{summary['adapters'][0]}"
        echo(
            f"v{found.version} -> {len(summary['adapters'])} per-task LoRA(s) (rank {summary['ranks'][0]}) in "
            f"{peft}/adapters/, a head per task in {peft}/heads/, labels.json beside them\nload: "
            f"PeftModel.from_pretrained({base}, {first!r})"
        )
        return
    echo(
        f"v{found.version} -> {peft}/combined (rank {sum(summary['ranks'])}) and {len(summary['adapters'])} "
        f"per-adapter LoRA(s) in {peft}/adapters/; heads and labels beside them\nload: PeftModel.from_pretrained("
        f"{base}, {str(peft / 'combined')!r})"
    )


@command
def serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between looks at the `current` alias.")] = 2.0,
    version: Annotated[
        str | None,
        typer.Option(help="Serve this version only (default: follow `current`).", callback=version_option),
    ] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Ray Serve replicas.")] = 1,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="Require `Authorization: Bearer <token>` (all but /healthz); the token is read from this file, "
            "created 0600 with a random token if absent. Needed to listen beyond loopback. "
            "[env: LITELORA_SERVE_TOKEN_FILE]"
        ),
    ] = None,
    stream: streams_option(
        "A stream to serve (repeat for several: each at /streams/<stream>/predict, the first also at /predict) "
        "[default: LITELORA_STREAM, else default]."
    ) = None,
) -> None:
    """Answer predictions over HTTP with the set under `current`; follow rollbacks without a restart."""
    from pipeline.serving.access import check_exposure, read_token, token_digest
    from pipeline.serving.app import serve_until_stopped

    token_file = token_file or load_settings().serve_token_file
    token, created = read_token(token_file.expanduser()) if token_file else (None, False)
    check_exposure(host, token, load_settings().ray_address)  # before the registry is touched
    if created:
        log(f"created a new token in {token_file} (mode 0600): send it as `Authorization: Bearer …`")
    starting = err.status("starting Ray Serve and loading the adapter set…")

    def ready(listening_host: str, listening_port: int) -> None:  # a Serve already running keeps its own
        starting.stop()
        following = "following `current`" if version is None else f"pinned to v{version}"
        if stream and len(stream) > 1:
            following += " of " + ", ".join(f"/streams/{s}" for s in stream)
        guarded = "bearer token required" if token else "no token: loopback only"
        log(
            f"serving http://{listening_host}:{listening_port}/predict  (GET /healthz, /version); {following}; "
            f"{guarded}; Ctrl-C to stop"
        )

    starting.start()
    try:
        serve_until_stopped(
            open_connection(stream[0] if stream else None),
            host,
            port,
            poll,
            version,
            replicas,
            on_ready=ready,
            token_digest=token_digest(token) if token else None,
            streams=tuple(stream or ()),
        )
    finally:
        starting.stop()
    log("stopped")
