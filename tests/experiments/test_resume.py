"""Issue 20: one writer per run directory, and pool workers that die with the command that started
them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facecraft._locks import run_lock


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.time() + timeout
    line = ""
    while time.time() < deadline and not line:
        line = proc.stdout.readline().strip()
    return line


def test_a_second_writer_waits_with_a_message_until_the_first_is_done(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom facecraft._locks import run_lock\n"
        "with run_lock(sys.argv[1], on_wait=lambda m: print('WAIT ' + m, flush=True)):\n"
        "    print('GOT', flush=True)\n"
    )
    with run_lock(tmp_path):
        with run_lock(tmp_path):  # nested in one process: passes through
            pass
        second = subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        try:
            line = _read_line(second, 180)
            assert line.startswith("WAIT ") and f"pid {os.getpid()}" in line
            time.sleep(0.5)
            assert second.poll() is None  # still waiting while this process holds the directory
        except BaseException:
            second.kill()
            raise
    out, _ = second.communicate(timeout=30)
    assert out.strip() == "GOT" and second.returncode == 0


def test_the_lock_of_a_killed_writer_is_free(tmp_path: Path) -> None:
    code = (
        "import sys, time\nfrom facecraft._locks import run_lock\nwith run_lock(sys.argv[1]):\n"
        "    print('GOT', flush=True)\n    time.sleep(60)\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert _read_line(first, 180) == "GOT"
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    waited = []
    with run_lock(tmp_path, on_wait=waited.append):
        pass
    assert waited == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_die_with_their_parent() -> None:
    code = (
        "import time\nfrom facecraft.experiments.pool import process_pool\n"
        "pool = process_pool(2)\n"
        "warm = [pool.apply_async(time.sleep, (2,)) for _ in range(2)]\n"
        "[w.get() for w in warm]\n"  # the workers have started (and run their initializer)
        "jobs = [pool.apply_async(time.sleep, (120,)) for _ in range(2)]\n"
        "time.sleep(0.5)\n"
        "print(' '.join(str(p.pid) for p in pool._pool), flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in _read_line(parent, 180).split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "a worker outlived its killed parent"
