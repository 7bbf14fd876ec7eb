"""Launching multi-process training runs from tests: a free port, and a run that can never hang the test session.

A launcher stuck on a collective is killed with its whole process group after ``timeout`` seconds, and the test
fails naming the hang, so CI never sticks.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SCRIPT = TESTS / "test_training_utils.py"
CONFIGS = REPO / "examples" / "accelerate_configs"
LAUNCH_TIMEOUT = 480
"""Seconds a launched training run may take: about 30 s on a quiet 2-core machine, several minutes when the
machine is shared; beyond it the run counts as hung and the test fails."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tool(name: str) -> str:
    """Path of a console script of this environment (``torchrun``, ``accelerate``), or skip the test."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def cpu_env(**extra: str) -> dict[str, str]:
    """Environment of a CPU run: accelerate on CPU, one thread per process, this checkout importable."""
    src = str(REPO / "src")
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
                PYTHONPATH=src + (os.pathsep + path if path else ""), **extra)


def start(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Starts ``cmd`` in its own process group (so that a hang can be killed with all its workers)."""
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    """``(return code, output)``; kills the process group and fails the test when ``timeout`` s pass."""
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the launched run did not end within {timeout} s (hang?); output tail:\n{out[-3000:]}")
    return proc.returncode, out


def run(cmd: list[str], env: dict[str, str], timeout: float = LAUNCH_TIMEOUT) -> tuple[int, str]:
    """Runs ``cmd`` to its end within ``timeout`` seconds (see :func:`finish`)."""
    return finish(start(cmd, env), timeout)
