"""Steering through a `kill -9`: a turn holding taken messages dies with its process.

The messages it had taken (`ctx.next_message()`) were not acknowledged: the next
start replays them, in order, after the message whose turn took them and before
anything newer. A real child process, killed with SIGKILL by its own pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import actors
from actors import SQLiteJournal

pytestmark = pytest.mark.timeout(120)

CHILD = Path(__file__).with_name("_steering_child.py")
PACKAGE_DIR = Path(actors.__file__).resolve().parent.parent


def child(journal: Path, facts: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-P", str(CHILD), str(PACKAGE_DIR), str(journal), str(facts), mode],
        stdout=subprocess.PIPE if mode == "hold" else subprocess.DEVNULL,
        text=True,
    )


def test_a_killed_steering_turn_replays_its_taken_messages_in_order(tmp_path: Path) -> None:
    journal, facts = tmp_path / "journal.db", tmp_path / "facts"
    holder = child(journal, facts, "hold")
    try:
        assert holder.stdout is not None
        lines = {holder.stdout.readline().strip(), holder.stdout.readline().strip()}
        assert lines == {"holding", "sent"}
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(30)
        if holder.stdout is not None:
            holder.stdout.close()
    assert holder.returncode == -signal.SIGKILL
    store = SQLiteJournal(journal)
    try:
        # q, m1 and m2, none acknowledged (their start marks may or may not have been
        # committed before the kill: that only changes `ctx.attempt` after the restart)
        assert store.pending_count() == 3
    finally:
        store.close()
    after = child(journal, facts, "after")
    try:
        assert after.wait(60) == 0
    finally:
        if after.poll() is None:
            os.kill(after.pid, signal.SIGKILL)
            after.wait(30)
    assert facts.read_text().splitlines() == [
        "T hold q m1 m2 0",
        "T after q m1 m2 1",  # replayed: the same turn takes the same messages again
        "T after m3 0",  # and only then the newer one
    ]
    store = SQLiteJournal(journal)
    try:
        assert store.pending_count() == 0
    finally:
        store.close()
