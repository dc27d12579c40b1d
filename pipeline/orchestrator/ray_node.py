"""This process's Ray: the cluster RAY_ADDRESS names, else a node of its own on loopback, started once and quiet.
Ray Train jobs (ray_train.py), Tune searches and the Serve app all start from here."""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import ray

from pipeline.settings import load_settings
from pipeline.shutdown import sigterm_interrupts


def init_ray(home: Path) -> None:
    """Start (or join, with RAY_ADDRESS) Ray once per process, loopback-only and quiet.

    Call it from the main thread: Ray installs its signal handlers only there, and a driver started from
    another thread was seen to exit silently at its next Train job."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # The Train controller polls its workers this often (default 2 s); every job ends with a few polls, which
    # cost ~4 s a task. Ray Train forwards RAY_TRAIN_* variables from the driver to its controller.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    if address := load_settings().ray_address:
        ray.init(address=address, log_to_driver=False)
        sigterm_interrupts()  # ray.init replaced the handler with one that dumps a native stack
        return
    # A node of our own, on loopback only: nobody else can reach it to present a token. A cluster named by
    # RAY_ADDRESS keeps its own authentication (token mode: RAY_AUTH_TOKEN or ~/.ray/auth_token).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Unix socket paths are limited to 107 bytes: keep Ray's session dir short, keyed by the state dir.
    temp = Path(tempfile.gettempdir()) / f"llray-{hashlib.sha256(str(home).encode()).hexdigest()[:8]}"
    ray.init(
        _node_ip_address="127.0.0.1",
        _temp_dir=str(temp),
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    sigterm_interrupts()
    if ray.util.get_node_ip_address() != "127.0.0.1":  # ray was imported before `pipeline` (see its __init__)
        warnings.warn(
            f"the local Ray node listens on {ray.util.get_node_ip_address()}, not only on loopback: "
            "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Python imports ray",
            stacklevel=2,
        )
