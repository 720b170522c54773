"""`Runtime.stats()`: the live figures of a runtime, read on its loop thread.

The same keys before `start()` (zeros), while running and after the stop, so
a dashboard can read `stats()["accepted"]` at any time.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from actors._host import HELD

if TYPE_CHECKING:
    from actors._cell import Cell
    from supervisors._core import _Core
    from supervisors.durable._journaling import Durable

__all__ = ["stats_of"]

_COUNTS = (
    "live_actors",
    "known_keys",
    "pending",
    "in_flight",
    "overrunning",
    "accepted",
    "handled",
    "failed",
    "interrupted",
    "dropped",
    "dead_letters",
    "dead_letters_kept",
    "restarts",
    "gave_up",
    "actor_failures",
    "overruns",
    "activations",
    "idle_stops",
    "replayed",
    "duplicates",
    "overflowed",
    "held",
    "retry_afters",
)


def stats_of(core: _Core | None, state: str, durable: Durable | None = None) -> dict[str, Any]:
    """The figures of `core` (None: a runtime not started yet) in runtime `state`.

    With a durable store, `journal` holds the journal's counters; `replayed`
    counts the messages replayed from it at start (0 without a store).
    `duplicates` counts messages not accepted for their `msg_id` (in one process; a
    cluster counts its own in `cluster`), `overflowed` those dropped for room, `held`
    the keys whose gate holds their next turn (a rate, a debounce window, a
    Retry-After pause), `retry_afters` the handlers that raised `RetryAfter`.
    `dead_letters` counts every dead letter since the start, `dead_letters_kept` those
    `dead_letters()` still holds.
    `running_by_key` maps the keys of the 20 handlers that have run longest
    (in flight, or overrunning a timeout) to their running time in seconds,
    longest first: where a stuck handler shows.
    """
    if core is None:
        zeros: dict[str, Any] = dict.fromkeys(_COUNTS, 0)
        wait_ms = {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
        zeros.update(
            state=state, pending_by_key={}, running_by_key={}, wait_ms=wait_ms, run_ms=dict(wait_ms)
        )
        return zeros
    out = core.outcomes
    cells = core.cells.values()
    wait_ms, run_ms = out.latency.summary()
    # By depth only: str and int keys do not compare.
    deepest = heapq.nlargest(20, (c for c in cells if len(c.mailbox)), key=_depth)
    running = heapq.nsmallest(20, (c for c in cells if _running(c)), key=_start)
    now = core.now()
    return {
        "state": state,
        "live_actors": core.live,
        "known_keys": len(core.cells),
        "pending": core.pending + core.ingress_size(),
        "pending_by_key": {c.key: len(c.mailbox) for c in deepest},
        "running_by_key": {c.key: round(now - c._started, 3) for c in running},
        "in_flight": sum(1 for c in cells if c.current is not None),
        "overrunning": sum(1 for c in cells if c.late is not None),
        "accepted": core.accepted,
        "handled": out.handled,
        "failed": out.failed,
        "interrupted": out.interrupted,
        "dropped": out.dropped,
        "dead_letters": out.dead_letter_count,
        "dead_letters_kept": out.kept(),
        "restarts": core.restarts,
        "gave_up": core.gave_up,
        "actor_failures": core.actor_failures,
        "overruns": core.overruns,
        "activations": core.activations,
        "idle_stops": core.idle_stops,
        "replayed": durable.replayed if durable is not None else 0,
        "duplicates": core.dedup.duplicates if core.dedup is not None else 0,
        "overflowed": core.overflowed,
        "held": sum(1 for c in cells if c.state is HELD),
        "retry_afters": out.retry_afters,
        "wait_ms": wait_ms,
        "run_ms": run_ms,
    } | ({"journal": durable.stats()} if durable is not None else {})


def _depth(cell: Cell) -> int:
    return len(cell.mailbox)


def _running(cell: Cell) -> bool:
    return cell.current is not None or cell.late is not None


def _start(cell: Cell) -> float:
    return cell._started
