"""`litelora`: the command line. Errors print one line on stderr and exit non-zero (1 = failed, 2 = usage)."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
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


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(EXIT_FAILED)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=False)


def _train_config(method: str, epochs: int | None, sparsity: float | None, rank: int | None):
    from pipeline.learn.config import TrainConfig

    config = TrainConfig(method=method, device=load_settings().device)
    if epochs is not None:
        config = replace(config, epochs=epochs)
    if sparsity is not None:
        config.gate = replace(config.gate, sparsity=sparsity)
    if rank is not None:
        config.adapter = replace(config.adapter, rank=rank)
    return config


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Quick tier (150/100 per class), one ordering: ≤ 10 min on 2 cores.")] = False,
    tier: Annotated[str, typer.Option(help="Data tier: ci, quick or full (full needs Debian's wordnet-base).")] = "quick",
    methods: Annotated[str, typer.Option(help="Comma-separated: litelora, sdlora, seq-lora.")] = "litelora,sdlora,seq-lora",
    orderings: Annotated[str, typer.Option(help="Comma-separated class-ordering seeds.")] = "1993,1995,2000",
    reference: Annotated[bool, typer.Option(help="Also score the frozen nearest-class-mean reference.")] = True,
    epochs: Annotated[int | None, typer.Option(help="Epochs per task (phase 1).")] = None,
    sparsity: Annotated[float | None, typer.Option(help="LiteLoRA sparsity weight λ.")] = None,
    rank: Annotated[int | None, typer.Option(help="Adapter rank.")] = None,
    out: Annotated[Path, typer.Option(help="Directory for the JSON and markdown report.")] = Path("benchmarks"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")] = False,
) -> None:
    """Train Split-WordNet-20 with each method and ordering; print accuracy, forgetting and adapters kept."""
    from pipeline.bench.continual import BenchPlan, run_bench
    from pipeline.bench.report import print_report, write_report
    from pipeline.learn.config import METHODS

    chosen = _csv(methods)
    unknown = set(chosen) - set(METHODS)
    if unknown:
        raise typer.BadParameter(f"unknown method(s) {sorted(unknown)}; choose from {', '.join(METHODS)}")
    try:
        seeds = tuple(int(o) for o in _csv(orderings))
    except ValueError:
        raise typer.BadParameter("orderings must be integers, e.g. 1993,1995,2000") from None
    if quick:
        tier, seeds = "quick", seeds[:1]
    plan = BenchPlan(tier=tier, methods=tuple(chosen), orderings=seeds, reference=reference,
                     config=_train_config("litelora", epochs, sparsity, rank))
    with _progress() as progress:
        bar = progress.add_task("bench", total=plan.runs * 5)
        report = run_bench(plan, on_task=lambda label, t, n: progress.update(bar, advance=1 if t < n else 0,
                                                                               description=label))
    name = "quick" if quick else f"{tier}"
    command = "litelora " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    json_path, md_path = write_report(report, out, name, command)
    if as_json:
        typer.echo(json.dumps({**report, "command": command}, indent=2))
    else:
        print_report(report, Console())
    err.print(f"report: {md_path} and {json_path}")


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="A drop folder (train.parquet [, test.parquet, task.json]) or one parquet file.")],
    out: Annotated[Path, typer.Option(help="Directory to write the new adapter set to.")],
    parent: Annotated[Path | None, typer.Option(help="Adapter set to build on (default: start from the bare backbone).")] = None,
    task: Annotated[str | None, typer.Option(help="Task name (default: the folder name).")] = None,
    method: Annotated[str, typer.Option(help="litelora, sdlora or seq-lora (ignored with --parent).")] = "litelora",
    epochs: Annotated[int | None, typer.Option(help="Epochs per task (phase 1).")] = None,
    sparsity: Annotated[float | None, typer.Option(help="LiteLoRA sparsity weight λ.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Train one task dataset on top of an adapter set and write the new set (what a pipeline job runs)."""
    from pipeline.adapters.adapter_set import AdapterSetError
    from pipeline.data.task_dataset import InvalidDataset, TaskDataset
    from pipeline.learn.evaluate import evaluate_stage
    from pipeline.learn.model import ContinualModel
    from pipeline.learn.recipe import train_task

    load_settings()
    try:
        dataset = TaskDataset.from_dir(data, name=task)
        new_task = dataset.to_task()
        model = ContinualModel.load(parent) if parent else ContinualModel(_train_config(method, epochs, sparsity, None))
        if parent and (epochs is not None or sparsity is not None):
            model.config = replace(model.config, epochs=epochs or model.config.epochs)
            if sparsity is not None:
                model.config.gate = replace(model.config.gate, sparsity=sparsity)
                model.gate.config = model.config.gate
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


def main() -> None:  # pragma: no cover - console entry point
    app()
