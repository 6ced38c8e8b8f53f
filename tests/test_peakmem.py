"""Per-stage peak memory of the recipe (``asr.jobs.peakmem``): a child process that holds a
known amount of memory is seen, and the figure is written in MiB when the watcher is stopped."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import asr.jobs.peakmem as pm

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc")

HOLD = "import time; b = b'\\x01' * (120 << 20); print('ready', flush=True); time.sleep(30)"


def test_descendants_include_grandchildren_and_exclude_root():
    # a shell whose child holds the memory: the grandchild must be counted
    p = subprocess.Popen(["bash", "-c", f"{sys.executable} -c \"{HOLD}\"; true"], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        tree = pm.descendants(os.getpid())
        assert p.pid in tree and os.getpid() not in tree
        kids = pm.children_map().get(p.pid, [])
        assert kids and kids[0] in tree
        pss, hwm = pm.process_kib(kids[0])
        assert pss >= 110 << 10 and hwm >= 120 << 10
    finally:
        for k in pm.descendants(p.pid):
            os.kill(k, signal.SIGKILL)
        p.kill()
        p.wait()


def test_watcher_writes_the_peak_in_mib(tmp_path):
    out = tmp_path / "peak"
    p = subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        # the stop file may appear before the watcher has even started: it still samples once
        (tmp_path / "stop").touch()
        w = subprocess.Popen([sys.executable, pm.__file__, "--pid", str(os.getpid()), "--out", str(out),
                              "--interval", "0.05", "--stop-file", str(tmp_path / "stop")])
        assert w.wait(timeout=60) == 0
    finally:
        p.kill()
        p.wait()
    mib = int(out.read_text())
    assert 120 <= mib < 1000      # the 120 MiB block plus two interpreters, not the machine
    assert not (tmp_path / "peak.tmp").exists()


def test_watcher_stops_when_the_watched_process_is_a_zombie(tmp_path):
    """A watched process that died but is not reaped yet (its parent waits on pipes the watcher
    holds too) counts as gone: the watcher exits, which lets the parent reach EOF and reap it."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    w = subprocess.Popen([sys.executable, pm.__file__, "--pid", str(p.pid), "--out", str(tmp_path / "peak"),
                          "--interval", "0.05"])
    try:
        assert w.wait(timeout=30) == 0           # p exited; never waited for, it is a zombie
        assert not pm.alive(p.pid) and (pm.PROC / str(p.pid)).exists()
    finally:
        w.kill()
        p.wait()
    assert not pm.alive(p.pid) and pm.alive(os.getpid())
