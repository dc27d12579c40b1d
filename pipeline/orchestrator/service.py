"""The orchestrator as a service (`litelora watch`, `jobs/watch.py`): a watcher whose trainer is a Ray Train job,
optionally preceded by a Ray Tune search, per drop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.transaction import fit_with, train_on_current
from pipeline.orchestrator.watcher import WatchConfig, Watcher
from pipeline.registry.store import Registry
from pipeline.settings import Connection, load_settings


@dataclass
class WatchOptions:
    workers: int = 2
    """Ray Train workers per job (DDP); 0 trains in this process without Ray."""
    gpu: bool = False
    cpus_per_worker: float | None = None
    """CPUs each Ray Train worker reserves (None: 0.5 without a GPU, Ray's default with one)."""
    tune: str | None = None
    """"auto": a Ray Tune search before each drop; "off": the parent's configuration. None: auto with a GPU."""
    trials: int = 8
    max_accuracy_drop: float | None = None
    """The promotion guard's bound (None: its default)."""
    config: WatchConfig = field(default_factory=WatchConfig)

    def __post_init__(self) -> None:
        self.tune = self.tune or ("auto" if self.gpu else "off")
        if self.tune not in ("auto", "off"):
            raise ValueError("--tune is auto or off")


def build_watcher(conn: Connection, options: WatchOptions, log: Callable[[str], None] = print) -> Watcher:
    registry = Registry.connect(conn)
    fit = fit_with(conn, options.workers, options.gpu, options.cpus_per_worker)
    guarded = {} if options.max_accuracy_drop is None else {"max_accuracy_drop": options.max_accuracy_drop}
    # LITELORA_DEVICE, as `litelora train` honours it: a new lineage's sets and every later one run there.
    device = load_settings().device
    config = TrainConfig(device=device)

    def trained(dataset, stream_registry):
        return train_on_current(
            dataset, stream_registry, config, overrides={"device": device}, fit=fit, **guarded
        )

    def tuned(dataset, stream_registry):
        from pipeline.tuning.search import NothingToTune, TuneSpec, tune_then_train
        from pipeline.tuning.space import SearchSpace

        spec = TuneSpec(trials=options.trials, gpus_per_trial=0.5 if options.gpu else 0.0)
        # Ctrl-C or SIGTERM that reaches Tune first ends the search with SearchInterrupted, a KeyboardInterrupt:
        # the watcher hands the drop back and stops.
        stream_conn = conn.for_stream(stream_registry.stream)
        try:
            return tune_then_train(
                dataset, stream_conn, SearchSpace(), spec, fit=fit, base_config=config, log=log, **guarded
            )[1]
        except NothingToTune as why:  # a Share stream: trained with its settings
            log(f"{dataset.name}: {why}")
            return trained(dataset, stream_registry)

    return Watcher(registry, options.config, trainer=tuned if options.tune == "auto" else trained, log=log)
