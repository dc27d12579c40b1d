"""Learning commands: benchmark streams, train one task (locally or on `current`), search its knobs, analyse sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

from pipeline.cli.app import (
    EPOCHS,
    FIRST_EXAMPLES,
    JSON,
    SPARSITY,
    STREAM,
    check_heads,
    command,
    command_line,
    csv,
    echo,
    echo_json,
    fail,
    log,
    open_connection,
    open_registry,
    printable,
    progress_bar,
    stream_for,
    train_config,
    version_option,
)
from pipeline.methods import DEFAULT_METHOD, METHODS, every_class_methods, stream_methods

if TYPE_CHECKING:
    from pipeline.bench.continual import BenchPlan
    from pipeline.learn.config import TrainConfig

QUICK = Annotated[
    bool,
    typer.Option("--quick", help="Quick tier (150/100 per class), one ordering: ≤ 10 min on 2 cores."),
]
FULL = Annotated[
    bool,
    typer.Option(
        "--full",
        help="Every method (also share, lora-per-task and the joint ceiling), the three orderings, the default, linear and aligned heads, plots (≈ 1 h on 2 cores at the quick tier).",
    ),
]
BENCH_STREAM = Annotated[
    str,
    typer.Option(
        help="wordnet (Split-WordNet-20, MiniLM), fashion-mnist (Split-FashionMNIST, EfficientNet-Lite0 at 64 px, rank 4 unless --rank), domains or domains-alternating (Split-Domains-27: WordNet nouns, WordNet verbs and Debian package descriptions, in blocks or in turn; MiniLM; ci and quick tiers only)."
    ),
]
TIER = Annotated[
    str,
    typer.Option(
        help="Data tier: ci, quick or full (full needs Debian's wordnet-base or dataset-fashion-mnist)."
    ),
]
BENCH_METHODS = Annotated[
    str,
    typer.Option(
        help="Comma-separated, of: "
        + "; ".join(f"{m.name} ({m.summary})" for m in METHODS.values())
        + " [default: every method that scores every class]."
    ),
]
EVERY_CLASS_METHODS = ",".join(every_class_methods())
ORDERINGS = Annotated[str, typer.Option(help="Comma-separated class-ordering seeds.")]
REFERENCE = Annotated[bool, typer.Option(help="Also score the frozen nearest-class-mean reference.")]
RANK = Annotated[int | None, typer.Option(help="Adapter rank.")]
BENCH_HEADS = Annotated[
    str | None,
    typer.Option(
        help="Comma-separated head options to score (one training run serves all): ridge, linear, prototype, aligned, calibrated; default: the default head.",
        callback=check_heads,
    ),
]
BENCH_OUT = Annotated[Path, typer.Option(help="Directory for the JSON and markdown report.")]
SPEED = Annotated[
    bool,
    typer.Option(
        "--speed",
        help="Instead: training-step time with 0–20 kept adapters vs a PEFT LoRA step, and merged vs plain inference (needs peft).",
    ),
]


@command
def bench(
    quick: QUICK = False,
    full: FULL = False,
    stream: BENCH_STREAM = "wordnet",
    tier: TIER = "quick",
    methods: BENCH_METHODS = EVERY_CLASS_METHODS,
    orderings: ORDERINGS = "1993,1995,2000",
    reference: REFERENCE = True,
    epochs: EPOCHS = None,
    first_examples: FIRST_EXAMPLES = None,
    sparsity: SPARSITY = None,
    rank: RANK = None,
    heads: BENCH_HEADS = None,
    out: BENCH_OUT = Path("benchmarks/reports"),
    as_json: JSON = False,
    speed: SPEED = False,
) -> None:
    """Train a stream with each method and ordering; print accuracy, forgetting, adapters and parameters kept, beside
    the frozen encoder; write markdown, JSON and plots (--speed: step and inference time against PEFT instead)."""
    from pipeline.bench.continual import STREAMS, run_bench
    from pipeline.bench.report import print_report, report_name, write_report

    if speed:
        _bench_speed(epochs, sparsity, rank, out, as_json)
        return
    config = train_config(epochs=epochs, sparsity=sparsity, first_examples=first_examples)
    plan = _bench_plan(
        stream, tier, methods, orderings, heads, reference, config, rank=rank, quick=quick, full=full
    )
    with progress_bar() as progress:
        bar = progress.add_task("bench", total=plan.steps)
        report = run_bench(
            plan, on_task=lambda label, t, n: progress.update(bar, advance=1, description=label)
        )
    name = report_name(
        STREAMS[stream].report_prefix,
        plan.tier,
        plan.orderings,
        plan.heads,
        config.head,
        quick=quick,
        full=full,
    )
    json_path, md_path = write_report(report, out, name, command_line())
    if as_json:
        echo_json({**report, "command": command_line()})
    else:
        print_report(report, Console())
    log(f"report: {md_path} and {json_path}")


def _bench_speed(
    epochs: int | None, sparsity: float | None, rank: int | None, out: Path, as_json: bool
) -> None:
    """`bench --speed`: the core's step and merged inference timed against PEFT."""
    from pipeline.bench.speed import SpeedPlan, run_speed, write_speed_report

    try:
        result = run_speed(
            SpeedPlan(config=train_config(epochs=epochs, sparsity=sparsity, rank=rank)), log=log
        )
    except ImportError as e:
        fail(f"the speed benchmark compares against PEFT: pip install peft ({e})")
    _, markdown = write_speed_report(result, out, command_line())
    echo(json.dumps(result, indent=2) if as_json else markdown.read_text().rstrip())


def _bench_plan(
    stream: str,
    tier: str,
    methods: str,
    orderings: str,
    heads: str | None,
    reference: bool,
    config: TrainConfig,
    *,
    rank: int | None,
    quick: bool,
    full: bool,
) -> BenchPlan:
    """The bench's options as a plan; what does not make one is a usage error (exit 2), not a failed run."""
    from pipeline.bench.continual import BenchPlan

    try:
        seeds = tuple(int(o) for o in csv(orderings))
    except ValueError:
        raise typer.BadParameter("orderings must be integers, e.g. 1993,1995,2000") from None
    try:
        return BenchPlan.from_options(
            stream,
            tier,
            tuple(csv(methods)),
            seeds,
            tuple(csv(heads or "")),
            reference,
            config,
            rank=rank,
            quick=quick,
            full=full,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


DATA = Annotated[
    Path,
    typer.Option(
        help="A drop folder (train.parquet or train/*.parquet [, test…, task.json]), an image folder, or one parquet file."
    ),
]
SET_OUT = Annotated[Path | None, typer.Option(help="Directory to write the new adapter set to.")]
PARENT = Annotated[
    Path | None, typer.Option(help="Adapter set to build on (default: start from the bare backbone).")
]
TASK = Annotated[str | None, typer.Option(help="Task name (default: the folder name).")]
METHOD = Annotated[
    str,
    typer.Option(
        help=f"One of {', '.join(stream_methods())}; ignored with --parent or on a stream that has sets."
    ),
]
HEAD = Annotated[
    str | None,
    typer.Option(
        help="Head option of a new lineage: ridge (default), linear (paper), prototype, aligned or calibrated; LITELORA_HEAD sets the default. A set keeps its parent's.",
        callback=check_heads,
    ),
]
REGISTER = Annotated[
    bool,
    typer.Option(
        "--register",
        help="Train on the registry's `current` set and register the result (S3 + MLflow) instead of --parent/--out.",
    ),
]


@command
def train(
    data: DATA,
    out: SET_OUT = None,
    parent: PARENT = None,
    task: TASK = None,
    method: METHOD = DEFAULT_METHOD,
    epochs: EPOCHS = None,
    first_examples: FIRST_EXAMPLES = None,
    sparsity: SPARSITY = None,
    head: HEAD = None,
    register: REGISTER = False,
    stream: STREAM = None,
    as_json: JSON = False,
) -> None:
    """Train one task dataset on top of an adapter set and write the new set (what a pipeline job runs)."""
    config = train_config(method, epochs, sparsity, head=head, first_examples=first_examples)
    overrides = {"epochs": epochs, "sparsity": sparsity}
    if not register and out is None:
        raise typer.BadParameter("give --out DIR for the new adapter set, or --register")
    with progress_bar(total_known=False) as progress:
        bar = progress.add_task(f"train {task or data.name}")

        def on_epoch(phase: str, epoch: int, loss: float) -> None:
            progress.update(
                bar, description=f"train {task or data.name}: {phase} epoch {epoch + 1} loss {loss:.3f}"
            )

        if register:
            from pipeline.data.task_dataset import TaskDataset
            from pipeline.orchestrator.transaction import train_on_current

            dataset = TaskDataset.from_dir(data, name=task)
            result = train_on_current(
                dataset,
                open_registry(stream_for(stream, dataset)),
                config,
                overrides=overrides,
                on_epoch=on_epoch,
            ).to_dict()
        else:
            from pipeline.orchestrator.local_set import train_local_set

            result = train_local_set(data, out, config, parent, task, overrides, on_epoch)
    if as_json:
        echo_json(result)
    elif register:
        _echo_registered(result)
    else:
        _echo_local_set(result, out)


def _echo_registered(result: dict) -> None:
    from pipeline.learn.methods import accuracy_scope

    state = result["outcome"]
    on = f"v{result['parent']}" if result["parent"] else "the bare backbone"
    scope = accuracy_scope(result["method"])
    echo(
        f"v{result['version']} ({state}): {result['task']} {result['decision']} on {on}; "
        f"{result['active_adapters']} adapter(s); accuracy {100 * result['final_accuracy']:.1f}% {scope} "
        f"(the frozen encoder with the same head: {100 * result['frozen_final_accuracy']:.1f}%)"
    )


def _echo_local_set(result: dict, out: Path) -> None:
    if result["decision"] == "store":
        echo(
            f"{result['task']}: stored (Share: {result['tasks']} task(s) on one basis); set written to {out}"
        )
    else:
        echo(
            f"{result['task']}: {result['decision']} (gate logit {result['gate_logit']:+.3f}); "
            f"{result['active_adapters']} adapter(s) for {result['tasks']} task(s); set written to {out}"
        )


TUNE_DATA = Annotated[
    str, typer.Option(help="A drop folder, one parquet file, or s3://bucket/prefix/ of a drop.")
]
TRIALS = Annotated[
    int, typer.Option(min=1, help="Trials to run (random search, ASHA stops weak ones early).")
]
SUBSAMPLE = Annotated[
    float, typer.Option(min=0.01, max=1.0, help="Share of the training rows each trial uses.")
]
COST_PER_ADAPTER = Annotated[
    float, typer.Option(help="Objective = accuracy − this × adapters kept (0.01 = a point each).")
]
SPACE = Annotated[
    Path | None,
    typer.Option(
        help="JSON search space (fields: rank, sparsity, temperature, init_logit, lr, phase2_lr; null fixes a knob)."
    ),
]
REGISTER_BEST = Annotated[
    bool, typer.Option(help="Train the task with the best configuration and register it.")
]
WORKERS = Annotated[int, typer.Option(help="Ray Train workers for the final training (0 = in this process).")]
GPU = Annotated[bool, typer.Option(help="Half a GPU per trial, one GPU per Ray Train worker.")]


@command
def tune(
    data: TUNE_DATA,
    task: TASK = None,
    trials: TRIALS = 8,
    subsample: SUBSAMPLE = 0.5,
    cost_per_adapter: COST_PER_ADAPTER = 0.01,
    space: SPACE = None,
    register: REGISTER_BEST = True,
    workers: WORKERS = 2,
    gpu: GPU = False,
    stream: STREAM = None,
    as_json: JSON = False,
) -> None:
    """Search rank, λ, τ, init logit and learning rate for one task with Ray Tune (nested MLflow runs)."""
    from pipeline.registry.store import load_drop
    from pipeline.tuning.search import TuneSpec, tune_task, tune_then_train
    from pipeline.tuning.space import SearchSpace

    conn = open_connection(stream)
    search_space = SearchSpace.from_file(space) if space else SearchSpace()
    spec = TuneSpec(
        trials=trials,
        subsample=subsample,
        cost_per_adapter=cost_per_adapter,
        gpus_per_trial=0.5 if gpu else 0.0,
    )
    dataset = load_drop(conn, data, task)
    conn = conn.for_stream(stream_for(stream, dataset) or conn.stream)  # the stream its task.json names
    with progress_bar() as progress:
        bar = progress.add_task(f"tune {dataset.name}", total=trials)

        def on_trial(message: str) -> None:
            progress.console.print(Text(printable(message)), soft_wrap=True)
            progress.advance(bar)

        if register:
            from pipeline.orchestrator.transaction import fit_with

            fit = fit_with(conn, workers, gpu)
            outcome, result = tune_then_train(
                dataset, conn, search_space, spec, fit=fit, log=log, on_trial=on_trial
            )
        else:
            outcome, result = (
                tune_task(dataset, conn, search_space, spec, log=log, on_trial=on_trial),
                None,
            )
    if as_json:
        echo_json({"search": outcome.to_dict(), "version": result.to_dict() if result else None})
        return
    _echo_search(outcome, result, conn.mlflow_uri)


def _echo_search(outcome, result, mlflow_uri: str) -> None:
    """The trials' table, the winner and, when one was trained with it, the version it became."""
    from pipeline.tuning.pareto import markdown_table

    echo(markdown_table(outcome.rows, outcome.knobs, outcome.front).rstrip())
    echo(
        f"best: {outcome.best_trial.trial_id} {json.dumps(outcome.best, sort_keys=True)}"
        + (" (resumed search)" if outcome.resumed else "")
    )
    if result:
        echo(
            f"v{result.version} ({result.outcome}): {result.task} {result.decision}; {result.active_adapters} "
            f"adapter(s); A {100 * result.avg_accuracy:.1f}%"
        )
    echo(f"MLflow: {mlflow_uri}/#/experiments/ (run {outcome.run_id}: trials nested, tune/pareto.png)")


@command
def analyze(
    version: Annotated[
        str | None,
        typer.Argument(
            help="Registered version to analyse (e.g. 3 or v3); default `current`.", callback=version_option
        ),
    ] = None,
    bench_report: Annotated[
        Path | None,
        typer.Option(
            "--bench", help="Analyse a bench JSON report instead (e.g. benchmarks/reports/full-quick.json)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Directory for the markdown and figures (default: beside the report for --bench, else a new temporary one)."
        ),
    ] = None,
    stream: STREAM = None,
    as_json: JSON = False,
) -> None:
    """How much the adapters' subspaces overlap, per layer, and whether the gate pruned the tasks already covered.
    A version's analysis is also logged to its MLflow run under analysis/."""
    from pipeline.bench.analysis import write_report_analysis, write_version_analysis

    result, markdown = (
        write_report_analysis(bench_report, out)
        if bench_report is not None
        else write_version_analysis(open_registry(stream), version, out)
    )
    echo(json.dumps(result, indent=2) if as_json else markdown.read_text().rstrip())
    log(f"analysis: {markdown}")
