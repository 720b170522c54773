"""A property of the durable mode: runs cut short at any point lose nothing and keep order.

Hypothesis draws a workload of runs on one journal file. Each run accepts some
messages (several keys, two priorities; some handlers fail, some await part-way),
lets the loop turn a drawn number of times, then stops without draining
(`stop(drain=False)`): whatever waits or is in flight stays journaled. A last run
handles everything. Across the runs:

* every accepted message was handled at least once;
* per key and priority, the order of first handling is the order of acceptance
  (the journal's replay comes before the next run's messages);
* a message handled more than once was cut short by a stop: each later run of it
  has a higher `ctx.attempt` and `ctx.redelivered`; a message is redelivered
  exactly when it was accepted by an earlier run;
* nothing stays pending, and every failed message is a journaled dead letter;
* the actors' snapshots, saved at every stop, hold every completed handling in
  order (no state is lost or reordered across the runs).
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Codec, Context, SQLiteJournal, UserActor
from supervisors import Directive, RestartPolicy, Runtime

KEYS = ("a", "b", 7)


@dataclass(frozen=True)
class Send:
    key: str | int
    priority: int
    kind: str  # "ok", "fail" or "slow"


@dataclass(frozen=True)
class Run:
    sends: tuple[Send, ...]
    turns: int  # loop turns before the stop


sends = st.builds(
    Send,
    st.sampled_from(KEYS),
    st.sampled_from((0, 0, 1)),
    st.sampled_from(("ok", "ok", "fail", "slow")),
)
runs = st.lists(
    st.builds(Run, st.lists(sends, max_size=12).map(tuple), st.integers(0, 12)),
    min_size=1,
    max_size=4,
)

HANDLED: list[tuple[int, Any, int, int, bool]] = []  # (run, key, id, attempt, redelivered)
COMPLETED: list[tuple[Any, int]] = []  # (key, id) of every handling that ran to its end
RUN = [0]


class Worker(UserActor):
    decider = staticmethod(lambda error: Directive.RESUME)

    def __init__(self, key: str | int) -> None:
        super().__init__(key)
        self.done: list[int] = []

    async def on_message(self, message: Any, ctx: Context) -> Any:
        ident, kind = message
        HANDLED.append((RUN[0], ctx.key, ident, ctx.attempt, ctx.redelivered))
        if kind == "fail":
            raise ValueError(ident)
        if kind == "slow":
            for _ in range(3):
                await asyncio.sleep(0)
        self.done.append(ident)
        COMPLETED.append((ctx.key, ident))

    def snapshot(self) -> Any:
        return self.done

    def restore(self, state: Any) -> None:
        self.done = list(state)


async def _play(path: Path, plan: list[Run]) -> dict[int, tuple[Any, int, int]]:
    """Run `plan`; return id -> (key, priority, run that accepted it)."""
    accepted: dict[int, tuple[Any, int, int]] = {}
    policy = RestartPolicy(max_retries=0)
    for number, run in enumerate([*plan, Run((), 0)]):
        RUN[0] = number
        last = number == len(plan)
        async with Runtime(Worker, store=path, idle_timeout=None, restart=policy) as rt:
            for send in run.sends:
                ident = len(accepted)
                rt.tell(send.key, (ident, send.kind), priority=send.priority)
                accepted[ident] = (send.key, send.priority, number)
            if last:
                await asyncio.wait_for(rt.wait_idle(), 10)
            else:
                for _ in range(run.turns):
                    await asyncio.sleep(0)
                await rt.stop(drain=False)
    return accepted


@settings(max_examples=40)
@given(runs)
def test_runs_cut_short_anywhere_lose_nothing_and_keep_order(plan: list[Run]) -> None:
    HANDLED.clear()
    COMPLETED.clear()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "j.db"
        accepted = asyncio.run(_play(path, plan))
        with SQLiteJournal(path) as journal:
            pending = journal.pending_count()
            dead = journal.dead_letters()
            codec = Codec()
            saved = {key: journal.load_snapshot(key) for key in KEYS}
            states = {key: codec.loads(data) if data else [] for key, data in saved.items()}

    first: dict[int, int] = {}  # id -> position of its first handling
    runs_of: dict[int, list[tuple[int, int, bool]]] = {}
    for position, (run, _key, ident, attempt, redelivered) in enumerate(HANDLED):
        first.setdefault(ident, position)
        runs_of.setdefault(ident, []).append((run, attempt, redelivered))

    assert set(first) == set(accepted), "every accepted message was handled at least once"
    for key in KEYS:
        for priority in (0, 1):
            mine = [i for i, (k, p, _) in accepted.items() if k == key and p == priority]
            assert sorted(mine, key=first.__getitem__) == mine, (key, priority)
    for ident, handlings in runs_of.items():
        accepted_in = accepted[ident][2]
        for run, _attempt, redelivered in handlings:
            assert redelivered == (run > accepted_in), (ident, handlings)
        attempts = [attempt for _, attempt, _ in handlings]
        assert attempts == sorted(set(attempts)), (ident, handlings)
    assert pending == 0
    fails = sum(1 for send in _flat(plan) if send.kind == "fail")
    assert len(dead) == fails, "each failed message is a journaled dead letter (no retries)"
    for key in KEYS:
        assert states[key] == [ident for k, ident in COMPLETED if k == key], key


def _flat(plan: list[Run]) -> list[Send]:
    return [send for run in plan for send in run.sends]
