"""A state directory that is full or not writable: one clear line naming the path and the fix, exit 1."""

import os
import subprocess
import sys
import textwrap
import uuid

import pytest

from pipeline.cli import main
from pipeline.data.task_dataset import TaskDataset, write_drop
from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.transaction import train_on_current
from pipeline.registry.store import Registry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.fixture
def full_disk(tmp_path):
    """A real 256 KiB filesystem, filled up (a tmpfs: needs the right to mount, as root in a container has)."""
    mount = tmp_path / "full"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=False, capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here to fill up: {result.stderr.decode().strip()}")
    try:
        with open(mount / "filler", "wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_state_directory_is_one_line_and_exit_1(
    conn, tiny_backbone_dir, full_disk, tmp_path, monkeypatch, capsys, chaos_report
):
    task = split_wordnet20(1993, "ci")[0]
    task.train_inputs, task.train_labels = task.train_inputs[::4], task.train_labels[::4]
    config = TrainConfig(
        backbone=BackboneConfig(name=str(tiny_backbone_dir)), epochs=1, batch_size=16, seed=0
    )
    train_on_current(
        TaskDataset.from_dir(write_drop(task, tmp_path / "t0"), name="t0"),
        Registry.connect(conn),
        config,
        max_accuracy_drop=1.0,
    )
    monkeypatch.setenv("LITELORA_HOME", str(full_disk))  # predict caches the set here: the disk is full
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--text", "a small dog"])
    message = capsys.readouterr().err.strip()
    assert exit_.value.code == 1
    assert "No space left on device" in message and str(full_disk) in message and "LITELORA_HOME" in message
    assert len(message.splitlines()) == 1, message
    chaos_report(
        case="state directory full (ENOSPC)",
        expected="one clear line, exit 1",
        observed=f"exit 1: {message[:140]}",
    )


# Runs as root to import everything (the interpreter's files are root's), then drops to `nobody` (root ignores
# permissions) and runs `litelora up`.
AS_NOBODY = textwrap.dedent("""
    import contextlib, os
    import pipeline.cli, pipeline.stack.embedded, pipeline.stack.process
    with contextlib.suppress(SystemExit):
        pipeline.cli.main(["up", "--help"])
    from pipeline.cli.app import err
    with err.status("warming up"):
        pass
    os.setegid(65534)
    os.seteuid(65534)
    pipeline.cli.main(["up"])
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="drops privileges with seteuid, which needs root")
def test_a_state_directory_that_cannot_be_written_is_one_line_and_exit_1(tmp_path, chaos_report):
    locked = tmp_path / f"locked-{uuid.uuid4().hex[:6]}"
    locked.mkdir(mode=0o700)  # root's: nobody may create anything in it
    env = {**os.environ, "LITELORA_HOME": str(locked / "home")}
    result = subprocess.run(
        [sys.executable, "-c", AS_NOBODY], env=env, check=False, capture_output=True, text=True, timeout=120
    )
    message = result.stderr.strip()
    assert result.returncode == 1, message
    assert "Permission denied" in message and str(locked / "home") in message, message
    assert len(message.splitlines()) == 1, message
    chaos_report(
        case="state directory not writable (EACCES)",
        expected="one clear line, exit 1",
        observed=f"exit 1: {message[:140]}",
    )
