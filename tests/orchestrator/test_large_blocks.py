"""A Train worker's features pass gives large blocks back to the system when it frees them, so its heap cannot
keep what a pass of large activations once needed."""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")

# A fresh process: glibc's threshold depends on everything the process allocated before. Freeing a 16 MB block
# raises the default threshold to 16 MB, so a later 8 MB block comes from the heap and stays resident. The blocks
# are bytearrays, which come from the same malloc as torch's CPU tensors, so the process need not import torch
# (two seconds each).
KEPT_AFTER_FREE = """
import sys
import contextlib
from pipeline.orchestrator.worker_memory import large_blocks_mapped, private_mb
with large_blocks_mapped() if sys.argv[1] == "mapped" else contextlib.nullcontext():
    block = bytearray(16 * 2**20); del block
    before = private_mb()
    block = bytearray(8 * 2**20); del block
    print(private_mb() - before)
"""


def kept_mb(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", KEPT_AFTER_FREE, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout)


def test_a_features_pass_gives_its_freed_large_blocks_back():
    assert kept_mb("default") > 6  # what the worker would keep: the 8 MB block, on the heap
    assert kept_mb("mapped") < 1
