"""`litelora`: the command line. Each command maps its options onto one library call and renders the result; the
commands live by concern in the modules of this package, and `app.py` holds what they share.

Errors print one line on stderr: exit 1 when the command failed, 2 for bad usage, 130 when interrupted,
143 when stopped by SIGTERM.
"""

from pipeline.cli import learning, lineage, orchestrator, serving, stack  # noqa: F401 - registers the commands
from pipeline.cli.app import app, main

__all__ = ["app", "main"]
