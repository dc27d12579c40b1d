"""`litelora`: the command line. Errors print one line on stderr and exit non-zero (1 = failed, 2 = usage)."""

from __future__ import annotations

import errno
import json
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pipeline.settings import load_settings

app = typer.Typer(help="LiteLoRA Pipeline: continual fine-tuning with gated low-rank adapter sets.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True)

EXIT_FAILED = 1
# A full disk or a directory we may not write (state directory, cache) is the user's to fix: one line, not a trace.
STATE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_FAILED)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=False)


def _train_config(method: str, epochs: int | None, sparsity: float | None, rank: int | None, head: str | None = None):
    from pipeline.learn.config import TrainConfig

    settings = load_settings()
    try:
        return TrainConfig(method=method, device=settings.device).with_overrides(
            epochs=epochs, sparsity=sparsity, rank=rank, head=head or settings.head)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def _check_heads(value: str | None) -> str | None:
    """Typer callback: every comma-separated head option is known."""
    from pipeline.learn.head_options import HEAD_OPTIONS

    unknown = sorted(set(_csv(value or "")) - set(HEAD_OPTIONS))
    if unknown:
        raise typer.BadParameter(f"unknown head option(s) {unknown}; choose from {', '.join(HEAD_OPTIONS)}")
    return value


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Quick tier (150/100 per class), one ordering: ≤ 10 min on 2 cores.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Every method (also share, lora-per-task and the joint ceiling), the three orderings, the default, linear and aligned heads, plots: the full report (≈ 1 h on 2 cores at the quick tier).")] = False,
    stream: Annotated[str, typer.Option(help="wordnet (Split-WordNet-20, MiniLM) or fashion-mnist (Split-FashionMNIST, EfficientNet-Lite0 at 64 px, rank 4 unless --rank).")] = "wordnet",
    tier: Annotated[str, typer.Option(help="Data tier: ci, quick or full (full needs Debian's wordnet-base or dataset-fashion-mnist).")] = "quick",
    methods: Annotated[str, typer.Option(help="Comma-separated: litelora, sdlora, seq-lora, frozen (no adapters, the same heads), share, lora-per-task (these two need the task id: task-incremental only), joint (all tasks at once: the ceiling).")] = "litelora,sdlora,seq-lora,frozen",
    orderings: Annotated[str, typer.Option(help="Comma-separated class-ordering seeds.")] = "1993,1995,2000",
    reference: Annotated[bool, typer.Option(help="Also score the frozen nearest-class-mean reference.")] = True,
    epochs: Annotated[int | None, typer.Option(help="Epochs per task (phase 1).")] = None,
    sparsity: Annotated[float | None, typer.Option(help="LiteLoRA sparsity weight λ.")] = None,
    rank: Annotated[int | None, typer.Option(help="Adapter rank.")] = None,
    heads: Annotated[str | None, typer.Option(help="Comma-separated head options to score (one training run serves all): ridge, linear, prototype, aligned, calibrated; default: the default head.", callback=_check_heads)] = None,
    out: Annotated[Path, typer.Option(help="Directory for the JSON and markdown report.")] = Path("benchmarks"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
    speed: Annotated[bool, typer.Option("--speed", help="Instead: training-step time with 0–20 kept adapters vs a PEFT LoRA step, and merged vs plain inference (needs peft).")] = False,
) -> None:
    """Train a stream (Split-WordNet-20 by default) with each method and ordering; print accuracy, forgetting, adapters and parameters
    kept; write markdown, JSON and plots (--speed: training-step and inference time against PEFT instead)."""
    from dataclasses import replace

    from pipeline.bench.continual import ALL_METHODS, STREAMS, BenchPlan, run_bench
    from pipeline.bench.report import print_report, write_report

    if speed:
        _bench_speed(_train_config("litelora", epochs, sparsity, rank), out, as_json)
        return

    if stream not in STREAMS:
        raise typer.BadParameter(f"unknown stream {stream!r}; choose from {', '.join(STREAMS)}")
    chosen = list(ALL_METHODS) if full else _csv(methods)
    unknown = set(chosen) - set(ALL_METHODS)
    if unknown:
        raise typer.BadParameter(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(ALL_METHODS)}")
    try:
        seeds = tuple(int(o) for o in _csv(orderings))
    except ValueError:
        raise typer.BadParameter("orderings must be integers, e.g. 1993,1995,2000") from None
    if quick:
        tier, seeds = "quick", seeds[:1]
    default_head = _train_config("litelora", None, None, None).head
    head_options = tuple(dict.fromkeys((default_head, "linear", "aligned") if full else _csv(heads or default_head)))
    config = _train_config("litelora", epochs, sparsity, rank or STREAMS[stream].rank, head_options[0])
    plan = BenchPlan(stream=stream, tier=tier, methods=tuple(chosen), orderings=seeds, reference=reference,
                     heads=head_options, config=replace(config, backbone=STREAMS[stream].backbone))
    with _progress() as progress:
        # One step per trained task, one per reference run (it scores all tasks at once).
        bar = progress.add_task("bench", total=len(seeds) * (len(chosen) * 5 + int(reference)))
        report = run_bench(plan, on_task=lambda label, t, n: progress.update(bar, advance=1, description=label))
    name = "quick" if quick else f"{tier}-o{'-'.join(map(str, seeds))}"
    if full:
        name = f"full-{tier}"
    elif head_options != (default_head,):
        name += "-heads"
    name = STREAMS[stream].report_prefix + name
    command = "litelora " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    json_path, md_path = write_report(report, out, name, command)
    if as_json:
        typer.echo(json.dumps({**report, "command": command}, indent=2))
    else:
        print_report(report, Console())
    err.print(f"report: {md_path} and {json_path}")


def _bench_speed(config, out: Path, as_json: bool) -> None:
    from pipeline.bench.speed import SpeedPlan, run_speed, speed_markdown

    try:
        result = run_speed(SpeedPlan(config=config), log=lambda m: err.print(m, highlight=False))
    except ImportError as e:
        _fail(f"the speed benchmark compares against PEFT: pip install peft ({e})")
    command = "litelora " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    markdown = speed_markdown(result, command)
    (out / "speed.md").write_text(markdown)
    (out / "speed.json").write_text(json.dumps({**result, "command": command}, indent=2))
    typer.echo(json.dumps(result, indent=2) if as_json else markdown.rstrip())
    err.print(f"report: {out / 'speed.md'} and {out / 'speed.json'}")


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="A drop folder (train.parquet [, test.parquet, task.json]) or one parquet file.")],
    out: Annotated[Path | None, typer.Option(help="Directory to write the new adapter set to.")] = None,
    parent: Annotated[Path | None, typer.Option(help="Adapter set to build on (default: start from the bare backbone).")] = None,
    task: Annotated[str | None, typer.Option(help="Task name (default: the folder name).")] = None,
    method: Annotated[str, typer.Option(help="litelora, sdlora or seq-lora (ignored with --parent).")] = "litelora",
    epochs: Annotated[int | None, typer.Option(help="Epochs per task (phase 1).")] = None,
    sparsity: Annotated[float | None, typer.Option(help="LiteLoRA sparsity weight λ.")] = None,
    head: Annotated[str | None, typer.Option(help="Head option of a new lineage: ridge (default), linear (paper), prototype, aligned or calibrated; LITELORA_HEAD sets the default. A set keeps its parent's.", callback=_check_heads)] = None,
    register: Annotated[bool, typer.Option("--register", help="Train on the registry's `current` set and register the result (S3 + MLflow) instead of --parent/--out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Train one task dataset on top of an adapter set and write the new set (what a pipeline job runs)."""
    from pipeline.adapters.adapter_set import AdapterSetError
    from pipeline.data.task_dataset import InvalidDataset, TaskDataset
    from pipeline.learn.evaluate import evaluate_stage
    from pipeline.learn.model import ContinualModel
    from pipeline.learn.recipe import train_task

    load_settings()
    if register:
        _train_registered(data, task, _train_config(method, epochs, sparsity, None, head),
                          {"epochs": epochs, "sparsity": sparsity}, as_json)
        return
    if out is None:
        raise typer.BadParameter("give --out DIR for the new adapter set, or --register")
    try:
        dataset = TaskDataset.from_dir(data, name=task)
        new_task = dataset.to_task()
        if parent:
            model = ContinualModel.load(parent)
            model.reconfigure(model.config.with_overrides(epochs=epochs, sparsity=sparsity))
        else:
            model = ContinualModel(_train_config(method, epochs, sparsity, None, head))
    except (InvalidDataset, AdapterSetError, ValueError, RuntimeError) as e:
        _fail(str(e))
    with _progress() as progress:
        bar = progress.add_task(f"train {new_task.name}", total=None)
        result = train_task(model, new_task, on_epoch=lambda p, e, loss: progress.update(
            bar, description=f"train {new_task.name}: {p} epoch {e + 1} loss {loss:.3f}"))
    scores = evaluate_stage(model, [new_task]) if not parent else None
    accuracy = None
    if scores is not None:
        accuracy = scores.cil_correct[0] / scores.counts[0]
    manifest = model.save(out, extra={"parent": str(parent) if parent else None})
    summary = {
        "task": new_task.name,
        "dataset_id": new_task.dataset_id,
        "decision": result.decision.decision,
        "gate_logit": result.decision.logit,
        "active_adapters": model.active_adapters,
        "tasks": len(model.tasks),
        "accuracy": accuracy,
        "adapter_set": str(out),
        "wall_time": result.wall_time,
        "adapters": [a["file"] for a in manifest["adapters"]],
    }
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"{summary['task']}: {summary['decision']} (gate logit {summary['gate_logit']:+.3f}); "
                   f"{summary['active_adapters']} adapter(s) for {summary['tasks']} task(s); set written to {out}")


@app.command()
def tune(
    data: Annotated[str, typer.Option(help="A drop folder, one parquet file, or s3://bucket/prefix/ of a drop.")],
    task: Annotated[str | None, typer.Option(help="Task name (default: the folder name).")] = None,
    trials: Annotated[int, typer.Option(min=1, help="Trials to run (random search, ASHA stops weak ones early).")] = 8,
    subsample: Annotated[float, typer.Option(min=0.01, max=1.0, help="Share of the training rows each trial uses.")] = 0.5,
    cost_per_adapter: Annotated[float, typer.Option(help="Objective = accuracy − this × adapters kept (0.01 = a point each).")] = 0.01,
    space: Annotated[Path | None, typer.Option(help="JSON search space (fields: rank, sparsity, temperature, init_logit, lr, phase2_lr; null fixes a knob).")] = None,
    register: Annotated[bool, typer.Option(help="Train the task with the best configuration and register it.")] = True,
    workers: Annotated[int, typer.Option(help="Ray Train workers for the final training (0 = in this process).")] = 2,
    gpu: Annotated[bool, typer.Option(help="Half a GPU per trial, one GPU per Ray Train worker.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the search (and the version) as JSON on stdout.")] = False,
) -> None:
    """Search rank, λ, τ, init logit and learning rate for one task with Ray Tune (nested MLflow runs)."""
    from pipeline.tuning.search import SearchInterrupted, TuneFailed, TuneSpec, tune_task, tune_then_train
    from pipeline.tuning.space import InvalidSearchSpace, SearchSpace

    conn = _connection()
    try:
        search_space = SearchSpace.from_file(space) if space else SearchSpace()
        spec = TuneSpec(trials=trials, subsample=subsample, cost_per_adapter=cost_per_adapter,
                        gpus_per_trial=0.5 if gpu else 0.0)
        dataset = _load_drop(data, task, conn)
    except (InvalidSearchSpace, ValueError, OSError, *_registry_errors()) as e:
        _fail(str(e))
    log = lambda m: err.print(m, highlight=False, soft_wrap=True)
    try:
        with _progress() as progress:
            bar = progress.add_task(f"tune {dataset.name}", total=trials)

            def on_trial(message: str) -> None:
                progress.console.print(message, highlight=False, soft_wrap=True)
                progress.advance(bar)

            if register:
                fit = None
                if workers > 0:
                    from pipeline.orchestrator.ray_train import ScalingSpec, ray_fit

                    fit = ray_fit(conn, ScalingSpec(num_workers=workers, use_gpu=gpu))
                outcome, result = tune_then_train(dataset, conn, search_space, spec, fit=fit, log=log, on_trial=on_trial)
            else:
                outcome, result = tune_task(dataset, conn, search_space, spec, log=log, on_trial=on_trial), None
    except TuneFailed as e:
        _fail(str(e))
    except SearchInterrupted as e:
        err.print(str(e), highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    except _registry_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps({"search": outcome.to_dict(), "version": result.to_dict() if result else None}, indent=2))
        return
    from pipeline.tuning.pareto import markdown_table

    typer.echo(markdown_table(outcome.rows, outcome.knobs, outcome.front).rstrip())
    typer.echo(f"best: {outcome.best_trial.trial_id} {json.dumps(outcome.best, sort_keys=True)}"
               + (" (resumed search)" if outcome.resumed else ""))
    if result:
        state = "now current" if result.promoted else ("rejected: " + result.rejected_reason if result.rejected_reason
                                                       else "registered, not promoted")
        typer.echo(f"v{result.version} ({state}): {result.task} {result.decision}; {result.active_adapters} adapter(s); "
                   f"A {100 * result.avg_accuracy:.1f}%")
    typer.echo(f"MLflow: {conn.mlflow_uri}/#/experiments/ (run {outcome.run_id}: trials nested, tune/pareto.png)")


def _load_drop(data: str, task: str | None, conn):
    from pipeline.data.task_dataset import TaskDataset

    if data.startswith("s3://"):
        from pipeline.registry.store import read_drop

        return read_drop(conn, data, task or data.rstrip("/").rsplit("/", 1)[-1])
    return TaskDataset.from_dir(Path(data), name=task)


@app.command()
def predict(
    text: Annotated[list[str] | None, typer.Option(help="Text to classify (repeat for several).")] = None,
    file: Annotated[typer.FileText | None, typer.Option(
        "--file", help="Texts to classify, one per line ('-' reads stdin).")] = None,
    image: Annotated[Path | None, typer.Option(help="An image file (needs a set trained on a vision backbone).")] = None,
    version: Annotated[str | None, typer.Option(help="Registered version (default: `current`).")] = None,
    top: Annotated[int, typer.Option(min=1, help="Scores of the top classes to show.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print predictions as JSON.")] = False,
) -> None:
    """Classify text with a registered adapter set (merged weights): label, the task it belongs to, scores."""
    from pipeline.serving.predictor import MAX_BATCH, BadRequest, Predictor

    if image is not None:
        _fail("--image needs an adapter set trained on a vision backbone; the registered sets read text (--text)")
    text = [*(text or []), *(line.rstrip("\n") for line in file or [] if line.strip())]
    if not text:
        raise typer.BadParameter("give --text (repeatable) or --file")
    conn = _connection()
    try:
        predictor = Predictor.from_registry(conn, version.lstrip("vV") if version else None)
        predictions = [p for start in range(0, len(text), MAX_BATCH)
                       for p in predictor.predict(text[start : start + MAX_BATCH], top=top)]
    except BadRequest as e:
        _fail(str(e))
    except _registry_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps({"version": predictor.version,
                               "predictions": [p.__dict__ for p in predictions]}, indent=2))
        return
    for t, p in zip(text, predictions, strict=True):
        scores = ", ".join(f"{label} {score:.2f}" for label, score in p.scores.items())
        typer.echo(f"{p.label}  (task {p.task}; v{predictor.version}; {scores})  <- {t[:60]}")


@app.command()
def export(
    version: Annotated[str, typer.Argument(help="Registered version to export (e.g. 3 or v3).")],
    peft: Annotated[Path, typer.Option("--peft", help="Directory for the PEFT LoRA adapters, heads and labels.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a summary as JSON.")] = False,
) -> None:
    """Write a version as standard PEFT LoRA adapters (combined and one per kept adapter) plus its heads."""
    from pipeline.learn.peft_export import export_peft
    from pipeline.orchestrator.step import load_current
    from pipeline.registry.lineage import Lineage
    from pipeline.registry.objects import Bucket
    from pipeline.registry.store import AdapterSetStore

    conn = _connection()
    try:
        found = load_current(Lineage(conn), AdapterSetStore(Bucket.connect(conn), conn.cache_dir), version.lstrip("vV"))
        summary = export_peft(found.model, peft)
    except _registry_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps({"version": found.version, "directory": str(peft), **summary}, indent=2))
        return
    typer.echo(f"v{found.version} -> {peft}/combined (rank {sum(summary['ranks'])}) and "
               f"{len(summary['adapters'])} per-adapter LoRA(s) in {peft}/adapters/; heads and labels beside them\n"
               f"load: PeftModel.from_pretrained(AutoModel.from_pretrained({summary['base_model']!r}), "
               f"{str(peft / 'combined')!r})")


@app.command()
def analyze(
    version: Annotated[str | None, typer.Argument(help="Registered version to analyse (e.g. 3 or v3); default `current`.")] = None,
    bench_report: Annotated[Path | None, typer.Option("--bench", help="Analyse a bench JSON report instead (e.g. benchmarks/full-quick.json).")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for the markdown and figures (default: beside the report for --bench, else a new temporary one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the analysis as JSON.")] = False,
) -> None:
    """How much the adapters' subspaces overlap, per layer, and whether the gate pruned the tasks already covered.
    A version's analysis is also logged to its MLflow run under analysis/."""
    import tempfile

    from pipeline.bench import analysis

    if bench_report is not None:
        try:
            report = json.loads(bench_report.read_text())
            result = analysis.analyze_report(report)
        except (OSError, json.JSONDecodeError, KeyError) as e:
            _fail(f"{bench_report}: not a bench report with LiteLoRA rows ({e})")
        directory = out or bench_report.parent
        figure = analysis.coverage_plot(result, directory / f"{bench_report.stem}-coverage.png")
        (directory / f"{bench_report.stem}-analysis.md").write_text(
            analysis.markdown(result, f"bench report {bench_report.name}", (figure.name,)))
        _print_analysis(result, as_json, directory / f"{bench_report.stem}-analysis.md")
        return

    from pipeline.orchestrator.step import load_current
    from pipeline.registry.lineage import Lineage
    from pipeline.registry.objects import Bucket
    from pipeline.registry.store import AdapterSetStore

    conn = _connection()
    try:
        lineage = Lineage(conn)
        found = load_current(lineage, AdapterSetStore(Bucket.connect(conn), conn.cache_dir),
                             version.lstrip("vV") if version else None)
        if found.model is None:
            _fail("no adapter set is `current` yet: train and register a task first")
        result = analysis.analyze_model(found.model)
        directory = out or Path(tempfile.mkdtemp(prefix="litelora-analysis-"))
        figures = (analysis.layer_overlap_plot(result, directory / "layer_overlap.png"),
                   analysis.coverage_plot(result, directory / "coverage.png"))
        (directory / "analysis.md").write_text(
            analysis.markdown(result, f"v{found.version}", tuple(f.name for f in figures)))
        (directory / "analysis.json").write_text(json.dumps(result, indent=2))
        lineage.client.log_artifacts(lineage.get(found.version).run_id, str(directory), "analysis")
    except _registry_errors() as e:
        _fail(str(e))
    _print_analysis(result, as_json, directory / "analysis.md")


def _print_analysis(result: dict, as_json: bool, markdown_path: Path) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(markdown_path.read_text().rstrip())
    err.print(f"analysis: {markdown_path}")


@app.command()
def serve(
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    poll: Annotated[float, typer.Option(min=0.1, help="Seconds between looks at the `current` alias.")] = 2.0,
    version: Annotated[str | None, typer.Option(help="Serve this version only (default: follow `current`).")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Ray Serve replicas.")] = 1,
) -> None:
    """Answer predictions over HTTP with the set under `current`; follow rollbacks without a restart."""
    import ray
    from ray import serve as ray_serve

    from pipeline.registry.lineage import Lineage
    from pipeline.serving.app import run_server

    conn = _connection()
    pinned = version.lstrip("vV") if version else None
    try:  # fail here, before Ray Serve retries a replica that cannot load
        found = Lineage(conn).get(pinned) if pinned else Lineage(conn).current()
    except _registry_errors() as e:
        _fail(str(e))
    if found is None:
        _fail("no adapter set is `current` yet: train and register a task first")
    try:
        with err.status("starting Ray Serve and loading the adapter set…"):
            run_server(conn, host, port, poll, pinned, replicas)
    except _registry_errors() as e:
        _fail(str(e))
    except RuntimeError as e:  # a replica that failed to start
        _fail((str(e).strip().splitlines() or [type(e).__name__])[-1])
    err.print(f"serving http://{host}:{port}/predict  (GET /healthz, /version); "
              + ("following `current`" if version is None else f"pinned to v{version.lstrip('vV')}")
              + "; Ctrl-C to stop", highlight=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ray's own SIGINT handling would leave the server up
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    err.print("stopping…")
    ray_serve.delete("litelora")  # only our app: on a shared cluster other Serve apps keep running
    ray.shutdown()


def _connection():
    import logging

    from pipeline.settings import NotConfigured, connection

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its per-run "View run at" lines are noise here
    try:
        return connection()
    except NotConfigured as e:
        _fail(str(e))


def _registry_errors():
    from pipeline.adapters.adapter_set import AdapterSetError
    from pipeline.data.task_dataset import InvalidDataset
    from pipeline.registry.lineage import LineageError
    from pipeline.registry.objects import StorageError

    return (AdapterSetError, InvalidDataset, LineageError, StorageError, FileNotFoundError)


def _train_registered(data: Path, task: str | None, config, overrides: dict, as_json: bool) -> None:
    from pipeline.data.task_dataset import TaskDataset
    from pipeline.orchestrator.step import train_on_current

    conn = _connection()
    try:
        dataset = TaskDataset.from_dir(data, name=task)
        with _progress() as progress:
            bar = progress.add_task(f"train {dataset.name}", total=None)
            result = train_on_current(dataset, conn, config, overrides=overrides, on_epoch=lambda p, e, loss: progress.update(
                bar, description=f"train {dataset.name}: {p} epoch {e + 1} loss {loss:.3f}"))
    except _registry_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
        return
    state = "now current" if result.promoted else "registered, NOT promoted (current moved meanwhile)"
    typer.echo(f"v{result.version} ({state}): {result.task} {result.decision} on v{result.parent or '-'}; "
               f"{result.active_adapters} adapter(s); A {100 * result.avg_accuracy:.1f}%, "
               f"F {100 * result.forgetting:.1f}%")
    typer.echo(f"MLflow: {conn.mlflow_uri}/#/models/{conn.registered_model}/versions/{result.version}")


@app.command()
def up(
    s3_port: Annotated[int | None, typer.Option(help="S3 port (default 8333, or a free port if busy).")] = None,
    mlflow_port: Annotated[int | None, typer.Option(help="MLflow port (default 5000, or a free port if busy).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print endpoints as JSON.")] = False,
) -> None:
    """Start the embedded stack: SeaweedFS S3 and an MLflow server on 127.0.0.1 (harmless if running)."""
    from pipeline.stack import embedded
    from pipeline.stack.process import StackError

    home = load_settings().home
    ports = {k: v for k, v in (("s3", s3_port), ("mlflow", mlflow_port)) if v}
    try:
        with err.status("starting SeaweedFS and MLflow…"):
            state, started = embedded.up(home, ports=ports)
    except StackError as e:
        _fail(str(e))
    info = {"s3_endpoint": state.s3_endpoint, "mlflow_ui": state.mlflow_uri, "bucket": state.bucket,
            "home": str(home), "started": started, "startup_s": round(state.startup_s, 1),
            "pids": {p.name: p.pid for p in state.processes}}
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    verb = f"started in {state.startup_s:.1f} s" if started else "already running"
    typer.echo(f"stack {verb}\n  S3:        {state.s3_endpoint} (bucket {state.bucket})\n"
               f"  MLflow UI: {state.mlflow_uri}\n  state:     {home}\n"
               'point tools at it: eval "$(litelora env)"')


@app.command()
def down() -> None:
    """Stop exactly the processes `litelora up` started (data is kept)."""
    from pipeline.stack import embedded

    stopped = embedded.down(load_settings().home)
    typer.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def env() -> None:
    """Print `export` lines that point aws, boto3 and mlflow at the embedded stack: eval "$(litelora env)"."""
    from pipeline.stack import embedded
    from pipeline.stack.process import StackError

    try:
        exports = embedded.env_exports(load_settings().home)
    except StackError as e:
        _fail(str(e))
    for key, value in exports.items():
        typer.echo(f"export {key}={shlex.quote(value)}")


@app.command()
def lineage(as_json: Annotated[bool, typer.Option("--json", help="Print versions as JSON.")] = False) -> None:
    """The adapter-set version tree: parent, task, decision, adapters kept, accuracy; `current` marked."""
    from pipeline.registry.lineage import Lineage

    conn = _connection()
    try:
        registry = Lineage(conn)
        current = registry.current()
        rows = [{**node, "current": current is not None and node["version"] == current.version}
                for node in registry.nodes()]
        moves = registry.moves()
    except _registry_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps({"model": conn.registered_model, "current": current.version if current else None,
                               "versions": rows, "alias_moves": moves}, indent=2))
        return
    if not rows:
        typer.echo("no adapter sets registered yet")
        return
    children: dict = {}
    for r in rows:
        children.setdefault(r["parent"], []).append(r)

    def show(r: dict, depth: int) -> None:
        mark = "  <- current" if r["current"] else ""
        if r["promotion"] == "rejected":
            mark += "  (rejected by the promotion guard)"
        acc = f"avg acc {100 * float(r['avg_accuracy']):.1f}%" if r["avg_accuracy"] else ""
        typer.echo(f"{'  ' * depth}v{r['version']}  {r['task']}  {r['decision']}  "
                   f"{r['active_adapters']} adapter(s)  {acc}{mark}")
        for child in children.get(r["version"], []):
            show(child, depth + 1)

    for root in children.get(None, []):
        show(root, 0)
    if moves:
        typer.echo("\nrecent moves of `current` (all of them: --json, or the experiment litelora-alias-moves):")
        for m in moves[-5:]:
            before = "-" if m["from_version"] in (None, "none") else f"v{m['from_version']}"
            typer.echo(f"  {m['when']}  {m['kind']}: {before} -> v{m['to_version']}  by {m['who']}"
                       + (f"  ({m['reason']})" if m["reason"] not in (None, "-") else ""))


@app.command()
def rollback(
    version: Annotated[str, typer.Argument(help="The version to make current (e.g. 2 or v2).")],
    reason: Annotated[str, typer.Option(help="Why; recorded with the move.")] = "",
    force: Annotated[bool, typer.Option("--force", help="Also make a version current that the promotion guard rejected.")] = False,
) -> None:
    """Make an earlier adapter set live again; the next task trains on top of it. Nothing is deleted."""
    from pipeline.registry.lineage import Lineage
    from pipeline.registry.objects import Bucket
    from pipeline.registry.store import AdapterSetStore

    conn = _connection()
    version = version.lstrip("vV")
    try:
        registry = Lineage(conn)
        target = registry.get(version)
        now = registry.current()
        if now is not None and now.version == target.version:
            typer.echo(f"v{target.version} is already current; nothing to do")
            return
        if target.tags.get("promotion") == "rejected" and not force:
            _fail(f"v{target.version} was rejected by the promotion guard ({target.tags.get('rejected_reason', '')}); "
                  "add --force to make it current anyway")
        sets = AdapterSetStore(Bucket.connect(conn), conn.cache_dir)
        sets.verify(sets.set_id_from_uri(target.source))  # what the bucket holds, not a local cached copy
        move = registry.move_current(version, reason=reason, kind="rollback")
    except _registry_errors() as e:
        _fail(f"rollback refused, current unchanged: {e}")
    typer.echo(f"current: v{move.from_version or '-'} -> v{move.to_version}")


@app.command()
def submit(
    path: Annotated[Path, typer.Argument(help="A drop folder (train.parquet [, test.parquet, task.json]) or one parquet file.")],
    task: Annotated[str, typer.Option(help="Task name: the drop goes to s3://<bucket>/incoming/<task>/.")],
    check: Annotated[bool, typer.Option(help="Validate locally first and refuse an invalid dataset.")] = True,
) -> None:
    """Upload a dataset as a drop (files first, the _READY marker last), for `litelora watch` to train."""
    from pipeline.data.task_dataset import DATA_FILES, InvalidDataset, TaskDataset
    from pipeline.orchestrator.watcher import TASK_NAME, put_drop
    from pipeline.registry.objects import Bucket

    if not TASK_NAME.match(task):
        raise typer.BadParameter("task names are 1-100 letters, digits, '.', '_' or '-'")
    if path.is_file():
        files = {"train.parquet": path.read_bytes()}
    elif path.is_dir():
        files = {f: (path / f).read_bytes() for f in DATA_FILES if (path / f).exists()}
    else:
        _fail(f"{path} is neither a drop folder nor a parquet file")
    if check:
        try:
            TaskDataset.from_files(task, files)
        except InvalidDataset as e:
            _fail(f"{path}: {e} (use --no-check to upload anyway)")
    conn = _connection()
    try:
        prefix = put_drop(Bucket.connect(conn), task, files)
    except _registry_errors() as e:
        _fail(str(e))
    typer.echo(f"dropped {', '.join(files)} at s3://{conn.bucket}/{prefix}")


@app.command()
def watch(
    once: Annotated[bool, typer.Option("--once", help="Process the drops that are there, then exit.")] = False,
    quiet_period: Annotated[float, typer.Option(help="Seconds without change after which a drop without _READY is complete.")] = 30.0,
    poll: Annotated[float, typer.Option(help="Seconds between looks at the bucket.")] = 5.0,
    workers: Annotated[int, typer.Option(help="Ray Train workers per job (DDP); 0 = train in this process without Ray.")] = 2,
    gpu: Annotated[bool, typer.Option(help="One GPU per Ray Train worker (NCCL).")] = False,
    tune: Annotated[str | None, typer.Option(help="auto: search hyperparameters with Ray Tune before training each drop; off: train with the parent's configuration. Default: auto with --gpu, off on CPU.")] = None,
    trials: Annotated[int, typer.Option(min=1, help="Trials per drop when tuning.")] = 8,
    lease: Annotated[float, typer.Option(min=10, help="Seconds of silence after which another watcher takes a drop over.")] = 300.0,
    guard: Annotated[float | None, typer.Option(min=0, help="Promotion guard: the most (0-1) an earlier task's accuracy may drop for a new set to become current; 1 turns it off. [default: 0.05]")] = None,
) -> None:
    """Run the orchestrator: claim each complete drop once, validate, train (Ray Train), register (Ctrl-C to stop)."""
    from pipeline.orchestrator.step import fit_locally, train_on_current
    from pipeline.orchestrator.watcher import WatchConfig, Watcher

    tune = tune or ("auto" if gpu else "off")
    if tune not in ("auto", "off"):
        raise typer.BadParameter("--tune is auto or off")
    conn = _connection()
    log = lambda m: err.print(m, highlight=False, soft_wrap=True)
    fit = None
    if workers > 0:
        from pipeline.orchestrator.ray_train import ScalingSpec, ray_fit

        fit = ray_fit(conn, ScalingSpec(num_workers=workers, use_gpu=gpu))
    guarded = {} if guard is None else {"max_accuracy_drop": guard}
    trainer = lambda ds: train_on_current(ds, conn, fit=fit or fit_locally, **guarded)
    if tune == "auto":
        from pipeline.tuning.search import SearchInterrupted, TuneSpec, tune_then_train
        from pipeline.tuning.space import SearchSpace

        spec = TuneSpec(trials=trials, gpus_per_trial=0.5 if gpu else 0.0)

        def trainer(ds):
            try:
                return tune_then_train(ds, conn, SearchSpace(), spec, fit=fit, log=log, **guarded)[1]
            except SearchInterrupted as stopped:  # Ctrl-C reached Tune first: stop watching, the claim expires
                raise KeyboardInterrupt(str(stopped)) from stopped
    watcher = Watcher(conn, WatchConfig(quiet_period_s=quiet_period, poll_s=poll, lease_s=lease), trainer=trainer,
                      log=log)
    err.print(f"watching s3://{conn.bucket}/incoming/ as {watcher.ledger.watcher}" + (" (once)" if once else "")
              + (f", tuning each drop with {trials} trials" if tune == "auto" else ""))
    try:
        done = watcher.run(once=once)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except _registry_errors() as e:
        _fail(str(e))
    failed = [d for d in done if d["state"] == "failed"]
    if once:
        typer.echo(f"processed {len(done)} drop(s)" + (f", {len(failed)} failed" if failed else ""))
    if failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print drops and orphans as JSON.")] = False,
    grace: Annotated[float, typer.Option(min=0, help="Seconds before an unreferenced object counts as an orphan.")] = 3600.0,
) -> None:
    """Every drop the orchestrator has seen (task, dataset id, state, reason, version) and the orphan objects
    `litelora gc` would delete."""
    from rich.table import Table

    from pipeline.orchestrator.ledger import Ledger
    from pipeline.registry.lineage import Lineage, LineageError
    from pipeline.registry.objects import Bucket
    from pipeline.registry.orphans import find_orphans

    conn = _connection()
    bucket = Bucket.connect(conn)
    try:
        entries = Ledger(bucket).entries()
    except _registry_errors() as e:
        _fail(str(e))
    rows = []
    for entry in sorted(entries, key=lambda e: e.events[0].at if e.events else 0):
        rows.append(entry.summary())
        rows += [{"dataset_id": entry.dataset_id, "task": d["task"], "state": "duplicate",
                  "reason": f"same bytes as a drop that ended {entry.state}", "version": None,
                  "first_seen": d["at"], "timings": {}} for d in entry.duplicates]
    try:  # the ledger lives in S3 alone; orphans need MLflow too, and status must work without it
        busy = {e.dataset_id for e in entries if not e.terminal}
        orphans = [o.to_dict() for o in find_orphans(bucket, Lineage(conn), grace, busy)]
    except LineageError as e:
        orphans, orphan_error = None, str(e)
    if as_json:
        typer.echo(json.dumps({"drops": rows, "orphans": orphans}, indent=2))
        return
    table = Table(title=f"drops in s3://{conn.bucket}")
    for col in ("task", "dataset", "state", "version", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["task"], r["dataset_id"][:12], r["state"], f"v{r['version']}" if r["version"] else "",
                      r["reason"] or "")
    Console().print(table)
    if orphans is None:
        typer.echo(f"orphans: not checked ({orphan_error})")
    elif orphans:
        typer.echo(f"{len(orphans)} orphan object(s), {sum(o['size'] for o in orphans):,} bytes, that no version "
                   f"refers to (left by jobs that died before registering): `litelora gc --grace {grace:g}` deletes them")


@app.command()
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")] = False,
    grace: Annotated[float, typer.Option(min=0, help="Seconds before an unreferenced object counts as an orphan (a running job's files are younger).")] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the orphans as JSON.")] = False,
) -> None:
    """Delete objects no registered version refers to: sets and datasets left by jobs that died before registering.
    Never deletes anything a version (of any registered model on the server) needs."""
    from pipeline.orchestrator.ledger import Ledger
    from pipeline.registry.lineage import Lineage
    from pipeline.registry.objects import Bucket
    from pipeline.registry.orphans import delete_orphans, find_orphans

    conn = _connection()
    bucket = Bucket.connect(conn)
    try:
        busy = {e.dataset_id for e in Ledger(bucket).entries() if not e.terminal}
        orphans = find_orphans(bucket, Lineage(conn), grace, busy)
        if not dry_run:
            delete_orphans(bucket, orphans)
    except _registry_errors() as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps({"deleted": not dry_run, "orphans": [o.to_dict() for o in orphans]}, indent=2))
        return
    for o in orphans:
        typer.echo(f"{'would delete' if dry_run else 'deleted'} s3://{conn.bucket}/{o.key} ({o.size:,} bytes): {o.why}")
    typer.echo(f"{len(orphans)} orphan object(s), {sum(o.size for o in orphans):,} bytes"
               + (" (dry run: nothing deleted)" if dry_run else ""))


@app.command()
def retry(
    drop: Annotated[str, typer.Argument(help="Task name or dataset id (6+ characters) of a failed drop, as `status` shows.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print what was requeued as JSON.")] = False,
) -> None:
    """Queue a failed drop again: its files go back under incoming/ and the next watcher pass trains it."""
    from pipeline.orchestrator.ledger import Ledger
    from pipeline.orchestrator.retry import RetryRefused, requeue
    from pipeline.registry.objects import Bucket

    conn = _connection()
    bucket = Bucket.connect(conn)
    try:
        info = requeue(bucket, Ledger(bucket), drop)
    except (RetryRefused, *_registry_errors()) as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"requeued {info['task']} (dataset {info['dataset_id'][:12]}) at {info['to']}; it failed with: "
               f"{info['reason_it_failed']}\nthe running watcher picks it up (or: litelora watch --once)")


@app.command()
def demo(
    tier: Annotated[str, typer.Option(help="Data tier of the demo tasks: quick (150/100 per class) or ci (tiny).")] = "quick",
    workers: Annotated[int, typer.Option(help="Ray Train workers per task (0 = no Ray).")] = 2,
    tasks: Annotated[int, typer.Option(help="How many of the 5 demo tasks to drop.", min=1, max=5)] = 5,
) -> None:
    """The main job end to end: start the stack, drop the demo tasks, train each with Ray Train, show the lineage."""
    from pipeline.demo import run_demo
    from pipeline.stack import embedded
    from pipeline.stack.process import StackError

    settings = load_settings()
    try:
        with err.status("starting SeaweedFS and MLflow…"):
            state, _ = embedded.up(settings.home)
    except StackError as e:
        _fail(str(e))
    err.print(f"stack up: S3 {state.s3_endpoint}, MLflow {state.mlflow_uri}")
    conn = _connection()
    try:
        done = run_demo(conn, tier=tier, workers=workers, tasks=tasks, log=lambda m: err.print(m, highlight=False, soft_wrap=True))
    except _registry_errors() as e:
        _fail(str(e))
    lineage()
    for d in done:
        if d["state"] == "rejected":
            typer.echo(f"note: {d['task']} (v{d['version']}) was rejected by the promotion guard, so `current` does "
                       "not know its classes; `litelora rollback` can still make it current with --force")
    trained = [d for d in done if d["state"] in ("registered", "rejected")]
    if trained:
        last = trained[-1]
        typer.echo(f"\n{last['task']} (v{last['version']}): accuracy {100 * last['final_accuracy']:.1f}% over every class "
                   f"so far (average over the stream {100 * last['avg_accuracy']:.1f}%); the frozen encoder with the "
                   f"same head: {100 * last['frozen_final_accuracy']:.1f}% ({100 * last['frozen_avg_accuracy']:.1f}%)")
    failed = [d for d in done if d["state"] not in ("registered", "rejected", "duplicate")]
    typer.echo(f"\nMLflow UI: {conn.mlflow_uri}/#/models/{conn.registered_model}  (lineage, decisions, plots)")
    typer.echo("next: litelora status · litelora rollback VERSION · litelora down")
    if failed:
        raise typer.Exit(EXIT_FAILED)



def main(argv: list[str] | None = None) -> None:
    """The console script: `app`, with file-system errors (disk full, permission denied) as one clear line."""
    try:
        app(args=argv, prog_name="litelora")
    except OSError as e:
        home = load_settings().home
        in_home = e.filename is not None and Path(e.filename).is_relative_to(home)
        if e.errno not in STATE_ERRNOS and not (in_home and e.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR)):
            raise
        err.print(f"[red]error:[/red] cannot write {e.filename or 'a file'}: {e.strerror} (state directory {home}; "
                  "free some space, fix its permissions or point LITELORA_HOME elsewhere)", highlight=False,
                  soft_wrap=True)
        raise SystemExit(EXIT_FAILED) from None


if __name__ == "__main__":
    main()
