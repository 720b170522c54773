"""Keys that fail once and go idle: the runtime's cost per recently failed key.

An LLM outage makes every user's handler fail once. Each key's actor is then
restarted (the default decider, a short backoff), goes idle, is stopped by
idle shutdown and released; the supervisor keeps the restart history of a
released key for the policy's window, so that passivation does not reset its
restart budget (G6). The cost per key must not grow with the number of keys
that failed recently (issue 8, item 10: it grew linearly, so the total was
quadratic, while those histories were rescanned on every release).

``failing_keys`` tells one message to each of N new keys and stops the clocks
once every key has failed, been restarted, stopped idle and been forgotten.
The figure is CPU time per key (``time.process_time``: the waits for the
backoff and the idle timeout cost none, and a shared machine disturbs it
less than wall time); the wall time of the whole run and of its two phases
is in the JSON. The same run with a handler that does not fail is the
baseline column, so the table shows both the scaling (down a column) and
what a failure adds (across a row). The runtime runs alone: the peers keep
no restart history.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

from benchmarks._measure import now, progress, settle_memory
from benchmarks._runtime_peer import InorderPeer
from benchmarks._scenarios import (
    SUBJECT,
    Aggregate,
    Cell,
    Check,
    Params,
    Scenario,
    at_most,
    error_cell,
    size_label,
)
from benchmarks._throughput import keys_for

#: Column of the same run with a handler that never fails (the baseline).
NO_FAILURE = "no failures"
#: Idle timeout of the run, seconds: short, so that the keys are released soon.
IDLE_TIMEOUT = 0.1
#: Restart backoff, seconds (no jitter): the restart follows the failure at once.
BACKOFF = 0.001
#: Seconds one measurement may take before it is reported as an error. With the
#: quadratic release (issue 8 #10) the full run's 18k keys took 9-12 s of CPU.
TIMEOUT = 120.0
#: Per-key cost at the largest size over the smallest: 1.0 is linear.
SCALING_LIMIT = 2.0


class Outage(Exception):
    """What the handler raises: the LLM is down."""


async def failing_keys(keys: int, *, fail: bool = True) -> dict[str, float]:
    """Tell one message to each of ``keys`` new keys and wait until all are released.

    With ``fail`` the handler raises, so every key fails once, is restarted,
    goes idle and is released with a restart history. Returns CPU and wall
    seconds (``cpu_seconds``, ``seconds``), the wall seconds until the last
    restart (``fail_seconds``) and from the first idle stop to the end
    (``release_seconds``), and the runtime's counts.
    """
    from actors import Context, UserActor
    from supervisors import RestartPolicy, Runtime

    loop = asyncio.get_running_loop()
    all_restarted = loop.create_future() if fail else None
    all_stopped = loop.create_future()
    started = stopped = 0
    first_stop = last_restart = 0.0

    class Bot(UserActor):
        def on_start(self) -> None:
            nonlocal started, last_restart
            started += 1  # each key starts twice when it fails: first, then restarted
            if started == 2 * keys and all_restarted is not None:
                last_restart = now()
                all_restarted.set_result(None)

        async def on_message(self, message: Any, ctx: Context) -> None:
            if fail:
                raise Outage(message)

        def on_stop(self, reason: str) -> None:
            nonlocal stopped, first_stop
            if reason == "idle":
                stopped += 1
                if stopped == 1:
                    first_stop = now()
                if stopped == keys:
                    all_stopped.set_result(None)

    names = keys_for(keys, "key")
    policy = RestartPolicy(backoff_min=BACKOFF, jitter=0.0)
    rt = Runtime(
        Bot,
        idle_timeout=IDLE_TIMEOUT,
        restart=policy,
        log_level=logging.CRITICAL,  # one actor_failed line per key is not what is measured
    )
    async with rt:
        settle_memory()
        cpu0, t0 = time.process_time(), now()
        tell = rt.tell
        for i, key in enumerate(names):
            tell(key, i)
        async with asyncio.timeout(TIMEOUT):
            if all_restarted is not None:
                await all_restarted
            await all_stopped
            await rt.wait_idle()  # the releases that follow the last on_stop
        cpu, t1 = time.process_time() - cpu0, now()
        stats = rt.stats()
    if stats["known_keys"] or stats["live_actors"]:
        msg = f"{stats['known_keys']} keys, {stats['live_actors']} actors left"
        raise AssertionError(msg)
    expected = keys if fail else 0
    if stats["failed"] != expected or stats["restarts"] != expected:
        msg = f"{stats['failed']} failed, {stats['restarts']} restarts, expected {expected}"
        raise AssertionError(msg)
    return {
        "keys": float(keys),
        "cpu_seconds": cpu,
        "seconds": t1 - t0,
        "fail_seconds": last_restart - t0 if fail else 0.0,
        "release_seconds": t1 - first_stop,
        "restarts": float(stats["restarts"]),
        "idle_stops": float(stats["idle_stops"]),
    }


def _case(keys: int) -> str:
    return f"{size_label(keys)} keys"


async def run_failing_keys(params: Params) -> list[Cell]:
    """Both columns per size, back to back; each repeat starts with the other one."""
    cells: list[Cell] = []
    columns = [(SUBJECT, True), (NO_FAILURE, False)]
    if params.rotation % 2:
        columns.reverse()
    for keys in params.failing_keys:
        case = _case(keys)
        reason = InorderPeer.missing()
        if reason is not None:
            cells += [Cell(case, SUBJECT, na=reason), Cell(case, NO_FAILURE, na=reason)]
            continue
        for column, fail in columns:
            progress(f"{case}: {column}")
            try:
                r = await failing_keys(keys, fail=fail)
            except Exception as exc:
                cells.append(error_cell(case, column, exc))
            else:
                cells.append(Cell(case, column, r["cpu_seconds"] / keys * 1e6, extra=r))
            gc.collect()
    return cells


def scaling(agg: Aggregate, params: Params) -> float | None:
    """Per-key cost at the largest size over the smallest (1.0: linear)."""
    small = agg.value(_case(min(params.failing_keys)))
    big = agg.value(_case(max(params.failing_keys)))
    if small is None or big is None or small <= 0:
        return None
    return big / small


def check_failing_keys(agg: Aggregate, params: Params) -> list[Check]:
    small, big = size_label(min(params.failing_keys)), size_label(max(params.failing_keys))
    return [
        at_most(
            f"per-key cost at {big} keys over {small} keys ≤ {SCALING_LIMIT:g}x (1 = linear)",
            scaling(agg, params),
            SCALING_LIMIT,
        )
    ]


SCENARIOS = [
    Scenario(
        "failing_keys",
        "Keys that fail once",
        "issue 8 #10: linear in the recently failed keys; per-key cost at the largest N "
        f"≤ {SCALING_LIMIT:g}x the smallest",
        "µs CPU/key",
        False,
        run_failing_keys,
        check_failing_keys,
        "one message to each of N new keys, the handler raises; restart after 1 ms, "
        f"idle stop after {IDLE_TIMEOUT:g} s; baseline: a handler that does not fail",
    ),
]
