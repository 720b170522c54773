"""The chat-backend demo (``make demo``) runs, keeps order and prints its summary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from examples.chat_backend import format_summary, plan, run_demo

ROOT = Path(__file__).resolve().parent.parent
KEY_LINES = (
    "platform",
    "telegram",
    "discord",
    "whatsapp",
    "total",
    "outcomes:",
    "order held:    yes",
    "one at a time: yes",
    "restarts:",
    "idle stops:",
    "activations:",
    "dead letters:",
    "steering:",
    "dedup:",
    "wait_ms",
    "run_ms",
    "p99",
    "wall time:",
    "result:        OK",
)


def test_plan_is_seeded_and_numbers_each_users_messages_in_send_order() -> None:
    sends = plan(30, 1.0, seed=3)
    assert sends == plan(30, 1.0, seed=3)
    assert [s.at for s in sends] == sorted(s.at for s in sends)
    seqs: dict[str, list[int]] = {}
    for s in sends:
        if not s.redelivery:  # a retried webhook repeats an update, with its number
            seqs.setdefault(s.key, []).append(s.message.seq)
    assert len(seqs) == 30
    assert all(v == list(range(1, len(v) + 1)) for v in seqs.values())
    assert {k.split(":")[0] for k in seqs} == {"telegram", "discord", "whatsapp"}


async def test_demo_in_process_gives_every_message_one_outcome() -> None:
    report = await run_demo(users=20, seconds=1.0, seed=5, idle_timeout=0.3)
    sent = sum(report.sent.values())
    settled = sum(sum(c.values()) for c in report.outcomes.values())
    assert sent > 20
    assert settled == sent
    assert report.order_violations == 0
    assert report.overlaps == 0
    assert report.ok
    assert sum(report.users.values()) == 20
    assert report.stats["handled"] == sum(c["handled"] for c in report.outcomes.values())
    summary = format_summary(report)
    for line in KEY_LINES:
        assert line in summary


def test_demo_cli_exits_zero_and_prints_the_summary() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.chat_backend",
            "--users",
            "20",
            "--seconds",
            "1",
            "--idle-timeout",
            "0.3",
            "--seed",
            "11",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for line in KEY_LINES:
        assert line in proc.stdout, f"{line!r} missing from:\n{proc.stdout}"
