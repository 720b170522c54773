"""Assembling a running runtime: the outcome book, the router, the control actors.

`Runtime.start` calls `assemble` on the running loop, after opening the durable
store (if any, so that a store that cannot be opened leaves nothing started). It
returns the router (`_Core`) with everything it hosts attached:

1. `Outcomes`, the one place messages end (dead letters, latency samples);
2. the router itself, with the sizes and bounds of `RuntimeOptions`;
3. the registry and supervisor actors, started on the loop;
4. with a store, the `Durable` that journals what the router accepts and what
   ends, and actor snapshots kept in the journal; without one, snapshots kept
   in memory;
5. unless `slow_handler` is off (or a `handler_timeout` no longer than it
   settles every handler first), the `SlowWatch` that reports slow handlers.

The runtime then adds what refers back to itself (`context_tell`, `ending`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors._logging import debug_enabled
from actors._outcomes import Outcomes
from actors._registry import RegistryActor
from supervisors._core import _Core
from supervisors._slow import SlowWatch
from supervisors._snapshots import MemorySnapshots
from supervisors._supervisor import SupervisorActor
from supervisors.durable._snapshots import JournalSnapshots

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from typing import Any

    from actors._clock import Clock
    from actors._outcomes import DeadLetter
    from supervisors._options import RuntimeOptions
    from supervisors._policy import Directive, RestartPolicy
    from supervisors.durable._journaling import Durable

__all__ = ["assemble"]


def assemble(
    loop: asyncio.AbstractEventLoop,
    clock: Clock,
    log: Any,
    options: RuntimeOptions,
    policy: RestartPolicy,
    on_escalate: Callable[[BaseException], Directive],
    on_dead_letter: Callable[[DeadLetter], None] | None,
    durable: Durable | None,
) -> _Core:
    """Build and start the parts of a runtime on `loop`; return its router."""
    outcomes = Outcomes(
        log, dead_letter_limit=options.dead_letter_limit, on_dead_letter=on_dead_letter
    )
    core = _Core(
        loop=loop,
        clock=clock,
        factory=options.actor_factory,
        policy=policy,
        outcomes=outcomes,
        log=log,
        trace=debug_enabled(log),
        max_pending=options.max_pending,
        max_total_pending=options.max_total_pending,
        idle_timeout=options.idle_timeout,
        max_active=options.max_active,
        on_escalate=on_escalate,
        batch=options.batch,
        max_workers=options.max_workers,
        knobs=options.knobs(),
        limits=options.limits,
        dedup_window=options.dedup_window,
        dedup_max=options.dedup_max,
    )
    core.registry = RegistryActor(core)
    core.supervisor = SupervisorActor(core)
    core.registry._start_actor_loop()
    core.supervisor._start_actor_loop()
    core.cells = core.registry.cells
    slow = options.slow_handler
    timeout = policy.handler_timeout
    if slow is not None and (timeout is None or slow < timeout):
        core.slow = SlowWatch(core, slow)
    if durable is not None:
        core.durable = core.tracker = outcomes.journal = durable
        core.snapshots = JournalSnapshots(durable.journal, durable.codec)
    else:
        core.snapshots = MemorySnapshots()
    return core
