"""A watcher SIGKILLed at each stage of a drop: `current` stays on the last complete set, another watcher takes
the drop over once the lease expires and finishes it exactly once, and `litelora gc` removes what the dead one
left behind without touching anything a version needs."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.ledger import Ledger
from pipeline.orchestrator.transaction import train_on_current
from pipeline.orchestrator.watcher import WatchConfig, Watcher, put_drop
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import Lineage
from pipeline.registry.store import AdapterSetStore, Registry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
runner = CliRunner()
LEASE_S = 1.5

# A real watcher process that kills itself (SIGKILL: no handler, no cleanup) when the drop reaches `stage`.
DOOMED_WATCHER = textwrap.dedent("""
    import os, signal, sys
    from pipeline.learn.backbone import BackboneConfig
    from pipeline.learn.config import TrainConfig
    from pipeline.orchestrator.transaction import train_on_current
    from pipeline.orchestrator.watcher import WatchConfig, Watcher
    from pipeline.registry.store import Registry
    from pipeline.settings import connection

    stage, backbone = sys.argv[1], sys.argv[2]
    conn = connection()
    config = TrainConfig(backbone=BackboneConfig(name=backbone), epochs=1, batch_size=16, seed=0)

    def die(at):
        if at == stage:
            os.kill(os.getpid(), signal.SIGKILL)

    def trainer(dataset, registry):
        return train_on_current(dataset, Registry.connect(conn), config, max_accuracy_drop=1.0, at_stage=die,
                                on_epoch=lambda phase, epoch, loss: die("training"))

    Watcher(Registry.connect(conn), WatchConfig(poll_s=0.2), trainer=trainer, log=print).run(once=True)
    sys.exit(3)  # never killed: the stage was not reached
""")


def training_runs(lineage: Lineage, dataset_id: str) -> list:
    """This test's lineage's training runs of one dataset (the session's tests share the experiment)."""
    experiment = lineage.client.get_experiment_by_name("litelora-training")
    if experiment is None:
        return []
    return lineage.client.search_runs(
        [experiment.experiment_id],
        f"tags.dataset_id = '{dataset_id}' and tags.registered_model = '{lineage.name}'",
    )


@pytest.fixture
def drops(wordnet_drops):
    return wordnet_drops[:2]


@pytest.mark.parametrize("stage", ["training", "published", "registered"])
def test_a_watcher_killed_mid_drop_is_taken_over_and_the_drop_ends_registered_once(
    stage, conn, drops, tiny_backbone_dir, chaos_report
):
    config = TrainConfig(
        backbone=BackboneConfig(name=str(tiny_backbone_dir)), epochs=1, batch_size=16, seed=0
    )
    first = train_on_current(drops[0], Registry.connect(conn), config, max_accuracy_drop=1.0)
    bucket, lineage = Bucket.connect(conn), Lineage(conn)
    put_drop(bucket, "victim", drops[1].files)

    doomed = subprocess.run(
        [sys.executable, "-c", DOOMED_WATCHER, stage, str(tiny_backbone_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    killed_at = time.monotonic()
    assert doomed.returncode == -9, doomed.stdout + doomed.stderr
    assert lineage.current().version == first.version, "current must stay on the last complete set"
    stranded = Ledger(bucket).read(drops[1].dataset_id)
    assert stranded.state == "training"
    status = json.loads(runner.invoke(app, ["status", "--json", "--grace", "0"]).stdout)
    orphaned = [o["key"] for o in status["orphans"]]
    if stage == "published":
        assert any(k.startswith("adapter-sets/manifests/") for k in orphaned), (
            "the dead job's set must be reported"
        )
    assert not any(k.startswith(f"datasets/{drops[1].dataset_id}") for k in orphaned), (
        "a claimed drop is busy"
    )

    time.sleep(LEASE_S + 0.5)  # the dead watcher's heartbeats have stopped; its lease runs out
    rescuer = Watcher(
        Registry.connect(conn),
        WatchConfig(poll_s=0.2, lease_s=LEASE_S),
        log=lambda m: None,
        trainer=lambda ds, _registry: train_on_current(
            ds, Registry.connect(conn), config, max_accuracy_drop=1.0
        ),
    )
    done = rescuer.run(once=True)
    recovered = time.monotonic() - killed_at

    assert [d["state"] for d in done] == ["registered"]
    versions = [v for v in lineage.versions() if v.tags["dataset_id"] == drops[1].dataset_id]
    assert len(versions) == 1, "one version per dataset, whoever finished it"
    assert lineage.current().version == versions[0].version
    assert [c["epoch"] for c in Ledger(bucket).read(drops[1].dataset_id).claims] == [0, 1]
    attempts = training_runs(lineage, drops[1].dataset_id)
    # Killed after registering, the dead attempt's version is finished without a new run.
    expected = ["KILLED"] if stage == "registered" else ["FINISHED", "KILLED"]
    assert sorted(r.info.status for r in attempts) == expected, "the dead attempt's run ended"
    dead = next(r for r in attempts if r.info.status == "KILLED")
    assert dead.data.tags["taken_over_by"] == rescuer.ledger.watcher

    dry = json.loads(runner.invoke(app, ["gc", "--grace", "0", "--dry-run", "--json"]).stdout)
    assert all(bucket.exists(o["key"]) for o in dry["orphans"]), "a dry run deletes nothing"
    cleaned = json.loads(runner.invoke(app, ["gc", "--grace", "0", "--json"]).stdout)["orphans"]
    assert [o["key"] for o in cleaned] == [o["key"] for o in dry["orphans"]]
    sets = AdapterSetStore(bucket, conn.cache_dir)
    for version in lineage.versions():
        sets.verify(sets.set_id_from_uri(version.source))  # gc never deletes what a version needs
    assert json.loads(runner.invoke(app, ["status", "--json", "--grace", "0"]).stdout)["orphans"] == []
    chaos_report(
        case=f"watcher SIGKILLed at '{stage}'",
        expected="current stays on the last set; a second watcher takes over after the lease and ends the dead "
        "attempt's run; one version; gc removes the leftovers",
        observed=f"current stayed v{first.version}; {len(orphaned)} orphan(s) reported; taken over at epoch 1; "
        f"the dead attempt's run ended KILLED, tagged taken_over_by; registered v{versions[0].version} once; gc deleted {len(cleaned)} object(s); every set verifies",
        recover_s=recovered,
    )


@pytest.mark.model
def test_sigterm_mid_training_hands_the_drop_back_and_the_next_watcher_takes_it_at_once(
    conn, drops, tiny_backbone_dir, chaos_report
):
    """`litelora watch` as Kubernetes or systemd stop it: SIGTERM while it trains (the real MiniLM)."""
    bucket, lineage = Bucket.connect(conn), Lineage(conn)
    put_drop(bucket, "stopped", drops[0].files)
    watch = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "watch", "--once", "--workers", "0", "--poll", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ledger = Ledger(bucket)
    deadline = time.monotonic() + 120
    while not training_runs(lineage, drops[0].dataset_id) and time.monotonic() < deadline:
        time.sleep(0.2)  # until its MLflow run is open: the watcher is training
    time.sleep(1.0)
    watch.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    stdout, stderr = watch.communicate(timeout=60)
    stop_s = time.monotonic() - stopped_at

    assert watch.returncode == 143, stdout + stderr
    assert "*** SIGTERM received" not in stderr and "Traceback" not in stderr, stderr
    assert "handed back" in stderr and stderr.strip().splitlines()[-1] == "stopped by SIGTERM"
    entry = ledger.read(drops[0].dataset_id)
    assert entry.state == "pending" and "handed back" in entry.events[-1].reason
    [run] = training_runs(lineage, drops[0].dataset_id)
    assert run.info.status == "KILLED"

    # The stopped watcher's lease (120 s by default) has not run out: the next watcher claims at once anyway.
    config = TrainConfig(
        backbone=BackboneConfig(name=str(tiny_backbone_dir)), epochs=1, batch_size=16, seed=0
    )
    rescuer = Watcher(
        Registry.connect(conn),
        WatchConfig(poll_s=0.2),
        log=lambda m: None,
        trainer=lambda ds, _registry: train_on_current(
            ds, Registry.connect(conn), config, max_accuracy_drop=1.0
        ),
    )
    done = rescuer.run(once=True)
    assert [d["state"] for d in done] == ["registered"]
    assert [c["epoch"] for c in ledger.read(drops[0].dataset_id).claims] == [0, 1]
    assert len(lineage.versions()) == 1
    chaos_report(
        case="`litelora watch` sent SIGTERM mid-training",
        expected="stops like Ctrl-C: the drop handed back, its MLflow run KILLED, one line, exit 143; the next "
        "watcher takes the drop at once, not after the lease",
        observed=f"exit {watch.returncode} after {stop_s:.1f} s with '{stderr.strip().splitlines()[-1]}'; "
        f"ledger 'pending' (handed back); run {run.info.status}; claimed again at epoch 1 without waiting; "
        "registered once",
    )
