"""Runs tests/cuda under Numba's CUDA simulator, in a process of its own (the simulator must be
chosen before numba.cuda is first imported)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_cuda_backend_under_the_simulator():
    pytest.importorskip("numba.cuda", reason="numba-cuda is part of the test extra")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", ACTDSL_CUDA_TESTS="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-W", "ignore::RuntimeWarning",
                           "-p", "no:cacheprovider", "tests/cuda", "--ignore=tests/cuda/test_gpu_only.py"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.split("\n")[-2], tail
