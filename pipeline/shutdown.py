"""SIGTERM stops a long-running process the way Ctrl-C does.

Kubernetes, systemd and `ray job stop` send SIGTERM. Python's default dies on the spot, and a Ray driver's handler
(installed by `ray.init`) dumps a native stack; either way a watcher's claim waits out its lease and its MLflow
run stays RUNNING. As a KeyboardInterrupt it unwinds through the same `finally` and `except` blocks as Ctrl-C.
"""

from __future__ import annotations

import signal
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread."""


def _raise(signum, frame):
    raise Terminated("stopped by SIGTERM")


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal, as shells report it: 143 for SIGTERM, 130 for Ctrl-C."""
    return 143 if isinstance(interrupt, Terminated) else 130


def sigterm_interrupts() -> None:
    """Make SIGTERM raise `Terminated` in the main thread (a no-op elsewhere: only it may set handlers). Call it
    after `ray.init`, which replaces the handler."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise)
