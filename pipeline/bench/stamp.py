"""The commit a benchmark ran on, for its report: a number the README cites must name the code that made it."""

from __future__ import annotations

import subprocess


def commit_stamp(*paths: str) -> str:
    """The short commit hash, marked when the code under `paths` (default: the package and the benchmarks)
    differed from it in the work tree."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--", *(paths or ("pipeline", "benchmarks")))
    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if dirty else "")
