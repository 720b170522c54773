"""P3 activation and churn, P4 memory per idle actor: each measurement runs
in a child process (``benchmarks._child``) so its memory figures are its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import actors
from benchmarks._measure import ROOT
from benchmarks._peers import IDLE, Peer
from benchmarks._runtime_peer import InorderPeer
from benchmarks._scenarios import (
    Aggregate,
    Cell,
    Check,
    Params,
    Scenario,
    at_least,
    at_most,
    for_each_peer,
    size_label,
)

#: Seconds one child measurement may take (the full churn run is the longest).
CHILD_TIMEOUT = 1_800.0


# The same build as this process for the children: the directory `actors` came from
# first (the compiled copy under `make bench`), and -P so that the working directory's
# sources cannot shadow it.
_BUILT = os.path.dirname(os.path.dirname(os.path.abspath(actors.__file__ or "")))


class ChildFailed(RuntimeError):
    """A child measurement exited with an error."""


async def in_child(**spec: Any) -> dict[str, float]:
    """Run one ``benchmarks._child`` measurement and return its figures."""
    from benchmarks._child import RESULT_MARK

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_BUILT, str(ROOT), env.get("PYTHONPATH")]))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-P",
        "-m",
        "benchmarks._child",
        json.dumps(spec),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CHILD_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    for line in reversed(out.decode(errors="replace").splitlines()):
        if line.startswith(RESULT_MARK):
            return {k: float(v) for k, v in json.loads(line[len(RESULT_MARK) :]).items()}
    lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
    raise ChildFailed(f"exit {proc.returncode}: {lines[-1]}")


def _activation_case(params: Params) -> str:
    return f"{size_label(params.activation_users)} new users"


def _churn_case(params: Params) -> str:
    return f"{size_label(params.churn_users)} users, idle {params.idle_timeout:g} s"


def _memory_case(params: Params) -> str:
    return f"{size_label(params.memory_actors)} idle actors"


async def run_p3_activation(params: Params) -> list[Cell]:
    async def measure(cls: type[Peer]) -> tuple[float, dict[str, float]]:
        r = await in_child(kind="activation", peer=cls.name, users=params.activation_users)
        return r.pop("actors_per_s"), r

    return await for_each_peer(
        params, _activation_case(params), measure, users=params.activation_users
    )


async def run_p3_churn(params: Params) -> list[Cell]:
    async def measure(cls: type[Peer]) -> tuple[float, dict[str, float]]:
        r = await in_child(
            kind="churn", peer=cls.name, users=params.churn_users, idle_timeout=params.idle_timeout
        )
        return r.pop("peak_rss_mb"), r

    return await for_each_peer(
        params, _churn_case(params), measure, needs=(IDLE,), users=params.churn_users
    )


async def run_p4(params: Params) -> list[Cell]:
    async def measure(cls: type[Peer]) -> tuple[float, dict[str, float]]:
        rss = await in_child(kind="memory", peer=cls.name, users=params.memory_actors)
        traced = await in_child(kind="memory_traced", peer=cls.name, users=params.memory_actors)
        extra = {
            "traced_bytes_per_actor": traced["bytes_per_actor"],
            "live": rss["live"],
            "rss_mb": rss["rss_mb"],
        }
        return rss["bytes_per_actor"], extra

    return await for_each_peer(
        params,
        _memory_case(params),
        measure,
        users=params.memory_actors,
        only=(InorderPeer.name, "asyncio-queue"),
        unsupported="n/a (keeps no per-user state when idle)",
    )


def check_p3_activation(agg: Aggregate, params: Params) -> list[Check]:
    return [at_least("≥ 50k new actors/s", agg.value(_activation_case(params)), 50_000.0)]


def check_p3_churn(agg: Aggregate, params: Params) -> list[Check]:
    case = _churn_case(params)
    live_after = agg.extra(case).get("live_after") if agg.value(case) is not None else None
    return [
        at_most(
            f"peak RSS < 1 GB ({size_label(params.churn_users)} users)", agg.value(case), 1024.0
        ),
        at_most("no actor left after idle shutdown", live_after, 0.0),
    ]


def check_p4(agg: Aggregate, params: Params) -> list[Check]:
    return [at_most("≤ 2 KB (2048 B) per idle actor, RSS", agg.value(_memory_case(params)), 2048.0)]


SCENARIOS = [
    Scenario(
        "p3_activation",
        "P3 activation rate",
        "P3: ≥ 50k new user actors/s",
        "actors/s",
        True,
        run_p3_activation,
        check_p3_activation,
        "one message to each of N new users, in batches of 1,000; child process",
    ),
    Scenario(
        "p3_churn",
        "P3 churn with idle shutdown",
        "P3: 1M distinct users, one message each, idle shutdown: peak RSS < 1 GB",
        "MB peak RSS",
        False,
        run_p3_churn,
        check_p3_churn,
        "N distinct users, one message each, short idle timeout; child process",
    ),
    Scenario(
        "p4_memory",
        "P4 memory per idle actor",
        "P4: ≤ 2 KB per live idle actor (100k actors)",
        "B/actor",
        False,
        run_p4,
        check_p4,
        "RSS delta over N live idle actors (tracemalloc figure in the JSON); child process",
    ),
]
