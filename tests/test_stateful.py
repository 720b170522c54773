"""A stateful model test of the runtime (G1-G7) with hypothesis.

Each example gets a fresh event loop, `FakeClock` and `Runtime`. Rules send
batches of tells and asks to a few keys (priorities, interrupts, clears),
inject failures (in handlers, `on_start`, `on_stop`), leave handlers hanging
past `handler_timeout`, and jump virtual time across backoffs and idle
timeouts. After every step the invariants compare the runtime with a model:

* G1: per key and priority, messages start in acceptance order;
* G2: never two hooks/handlers of one key at once;
* G3: a message starts only if no older-accepted, higher-priority one waits;
* G4: at most one outcome per message, consistent between the ask future, the
  dead letters and the stats; once quiet, every accepted message has exactly
  one outcome or is still waiting; nothing is lost across restarts and idle
  stops (checked to the end in `teardown`, after draining);
* G7: restart budgets honoured, restarts at exactly failure time + delay,
  retries bounded, each kind of message ends only in the outcomes it can have.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from structlog.testing import capture_logs

from actors import Context, DeadLetter, Dropped, Interrupted, LoopFuture, UserActor
from actors.testing import FakeClock
from supervisors import Directive, RestartPolicy, Runtime

KEYS = ("k0", "k1", "k2")
IDLE_TIMEOUT = 5.0
HANDLER_TIMEOUT = 2.0
WITHIN = 10.0
SPINS = 100  # loop turns given to the runtime to settle when a hung handler keeps it busy


class Boom(Exception):
    """Restart (the policy's decider)."""


class ResumeMe(Exception):
    """Resume."""


class StopMe(Exception):
    """Stop."""


class EscalateMe(Exception):
    """Escalate (the default root stops)."""


class StopBoom(Exception):
    """An `on_stop` failure."""


def decider(error: BaseException) -> Directive:
    if isinstance(error, ResumeMe):
        return Directive.RESUME
    if isinstance(error, StopMe):
        return Directive.STOP
    if isinstance(error, EscalateMe):
        return Directive.ESCALATE
    return Directive.RESTART


RAISES: dict[str, type[Exception]] = {
    "boom": Boom,
    "resume": ResumeMe,
    "stop": StopMe,
    "escalate": EscalateMe,
}
KINDS = ("ok", "ok", "ok", "ok", "ok", "boom", "flaky", "resume", "stop", "escalate", "hang", "hang")


@dataclass
class Msg:
    """One accepted message, as the model sees it."""

    n: int
    key: str
    kind: str
    priority: int
    future: LoopFuture[Any] | None = None
    attempts: list[int] = field(default_factory=list)  # ctx.attempt of each handler run
    returned: int = 0  # handler runs that returned normally
    dead: list[str] = field(default_factory=list)  # dead-letter reasons
    ask_outcome: tuple[str, Any] | None = None  # ("result", v) or ("error", exc)

    def record_ask(self, future: LoopFuture[Any]) -> None:
        try:
            self.ask_outcome = ("result", future.get())
        except Exception as error:
            self.ask_outcome = ("error", error)

    def known_outcome(self) -> str | None:
        if self.returned:
            return "handled"
        if self.dead:
            return self.dead[0]
        if self.ask_outcome is not None and isinstance(self.ask_outcome[1], Interrupted):
            return "interrupted"
        return None


@dataclass
class World:
    """Everything the actors report to the model."""

    clock: FakeClock
    msgs: dict[int, Msg] = field(default_factory=dict)
    active: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    fail_starts: Counter[str] = field(default_factory=Counter)
    fail_stops: Counter[str] = field(default_factory=Counter)
    hanging: int = 0
    stream: list[dict[str, Any]] = field(default_factory=list)  # logs and on_stop, in order
    serials: itertools.count[int] = field(default_factory=itertools.count)

    def enter(self, key: str, hook: str) -> None:
        if self.active[key]:
            self.violations.append(f"G2: {hook} of {key} began while another hook ran")
        self.active[key] += 1

    def leave(self, key: str) -> None:
        self.active[key] -= 1

    def handler_started(self, key: str, n: int, attempt: int) -> None:
        msg = self.msgs[n]
        msg.attempts.append(attempt)
        self.stream.append({"event": "run", "key": key, "n": n, "attempt": attempt})
        if attempt != 1:
            return
        for other in self.msgs.values():
            if (
                other.key == key
                and other.priority > msg.priority
                and not other.attempts
                and other.known_outcome() is None
                and other.ask_outcome is None
            ):
                self.violations.append(
                    f"G3: {n} (priority {msg.priority}) started while {other.n} "
                    f"(priority {other.priority}) waited"
                )

    def on_dead_letter(self, letter: DeadLetter) -> None:
        n = letter.message[0]
        self.msgs[n].dead.append(letter.reason)


class ModelBot(UserActor):
    """Fails, hangs or answers as its message says; reports everything to the `World`."""

    def __init__(self, key: str | int, world: World) -> None:
        super().__init__(key)
        self.world = world
        self.serial = next(world.serials)

    async def on_start(self) -> None:
        world, key = self.world, str(self.key)
        world.enter(key, "on_start")
        try:
            if world.fail_starts[key] > 0:
                world.fail_starts[key] -= 1
                raise Boom("on_start")
        finally:
            world.leave(key)

    async def on_message(self, message: Any, ctx: Context) -> Any:
        world, key = self.world, str(self.key)
        n, kind = message
        world.enter(key, "on_message")
        try:
            world.handler_started(key, n, ctx.attempt)
            if kind in RAISES:
                raise RAISES[kind](n)
            if kind == "flaky" and ctx.attempt == 1:
                raise Boom(n)
            if kind == "hang":
                world.hanging += 1
                try:
                    await asyncio.get_running_loop().create_future()
                finally:
                    world.hanging -= 1
            world.msgs[n].returned += 1
            return n
        finally:
            world.leave(key)

    async def on_stop(self, reason: str) -> None:
        world, key = self.world, str(self.key)
        world.enter(key, "on_stop")
        try:
            world.stream.append({"event": "on_stop", "key": key, "reason": reason})
            if world.fail_stops[key] > 0:
                world.fail_stops[key] -= 1
                raise StopBoom(reason)
        finally:
            world.leave(key)


async def advance_busy(clock: FakeClock, seconds: float) -> None:
    """`clock.advance()` that also works while a handler hangs.

    `advance()` waits for quiescence after every timer, which a hung handler
    prevents until its own timeout timer; each step here gets `SPINS` loop
    turns and is then abandoned, and the next step goes on from there.
    """
    for _ in range(SPINS):
        await asyncio.sleep(0)
    target = clock.now() + seconds
    while True:
        step = asyncio.ensure_future(clock.advance(target - clock.now()))
        for _ in range(SPINS):
            if step.done():
                step.result()
                return
            await asyncio.sleep(0)
        step.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await step
        if clock.now() >= target and not [t for t in clock.pending_timers() if t <= target]:
            return


messages = st.tuples(
    st.sampled_from(KEYS),
    st.sampled_from(KINDS),
    st.integers(0, 2),  # priority
    st.booleans(),  # ask (else tell)
    st.sampled_from([False, False, False, True]),  # interrupt
    st.sampled_from([False] * 9 + [True]),  # clear
)


class RuntimeMachine(RuleBasedStateMachine):
    """The runtime against a model of its guarantees."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda _loop, context: self.loop_errors.append(context))
        self.clock = FakeClock()
        self.world = World(self.clock)
        self.numbers = itertools.count()
        self.rt: Runtime | None = None
        self.quiet = True
        self.max_restarts = 0
        self.max_retries = 0
        self._seq = itertools.count()
        self._logs = capture_logs(processors=[self._stamp])
        self._logs.__enter__()

    def _stamp(self, _logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        event["t"] = self.clock.now()
        if event.get("event") in {
            "actor_restart_scheduled",
            "actor_restarted",
            "supervisor_gave_up",
            "actor_failed",
        }:
            self.world.stream.append(dict(event))
        return event

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    # -- setup and rules ----------------------------------------------------------------

    @initialize(
        max_restarts=st.integers(1, 3),
        max_retries=st.integers(0, 1),
        park_for=st.sampled_from([None, 3.0]),
        max_active=st.sampled_from([None, 2]),
        jitter=st.sampled_from([0.0, 0.5]),
        seed=st.integers(0, 2**16),
    )
    def start(
        self,
        max_restarts: int,
        max_retries: int,
        park_for: float | None,
        max_active: int | None,
        jitter: float,
        seed: int,
    ) -> None:
        self.max_restarts = max_restarts
        self.max_retries = max_retries
        policy = RestartPolicy(
            max_restarts=max_restarts,
            within=WITHIN,
            backoff_min=0.5,
            backoff_factor=2.0,
            backoff_max=2.0,
            jitter=jitter,
            reset_after=5.0,
            max_retries=max_retries,
            handler_timeout=HANDLER_TIMEOUT,
            park_for=park_for,
            decider=decider,
            rng=random.Random(seed),
        )
        world = self.world
        self.rt = Runtime(
            lambda key: ModelBot(key, world),
            clock=self.clock,
            idle_timeout=IDLE_TIMEOUT,
            max_active=max_active,
            restart=policy,
            on_dead_letter=world.on_dead_letter,
        )
        self.run(self.rt.start())

    @rule(batch=st.lists(messages, min_size=1, max_size=6))
    def send(self, batch: list[tuple[str, str, int, bool, bool, bool]]) -> None:
        """Send a batch in one go (so priorities and interrupts meet waiting messages)."""
        self.run(self._send(batch))
        self.settle()

    async def _send(self, batch: list[tuple[str, str, int, bool, bool, bool]]) -> None:
        rt: Runtime = self.rt  # type: ignore[assignment]
        for key, kind, priority, ask, interrupt, clear in batch:
            n = next(self.numbers)
            msg = Msg(n, key, kind, priority)
            self.world.msgs[n] = msg  # before the call: a drop is reported during it
            options = {"priority": priority, "interrupt": interrupt, "clear": clear}
            if ask:
                msg.future = rt.ask(key, (n, kind), **options)
                msg.future.add_done_callback(msg.record_ask)
            else:
                rt.tell(key, (n, kind), **options)

    @rule(key=st.sampled_from(KEYS), priority=st.integers(1, 3), ask=st.booleans())
    def interrupt(self, key: str, priority: int, ask: bool) -> None:
        """One urgent message that interrupts a lower-priority handler in flight."""
        self.run(self._send([(key, "ok", priority, ask, True, False)]))
        self.settle()

    @rule(key=st.sampled_from(KEYS), times=st.integers(1, 2))
    def break_start(self, key: str, times: int) -> None:
        """The next `times` `on_start` calls of `key` raise."""
        self.world.fail_starts[key] += times

    @rule(key=st.sampled_from(KEYS))
    def break_stop(self, key: str) -> None:
        """The next `on_stop` of `key` raises."""
        self.world.fail_stops[key] += 1

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0]))
    def advance(self, seconds: float) -> None:
        """Jump virtual time (across backoffs, handler timeouts, idle timeouts)."""
        self.run(advance_busy(self.clock, seconds))
        self.settle()

    def settle(self) -> None:
        self.quiet = self.run(self._settle())
        if not self.quiet and self.world.hanging == 0:
            self.world.violations.append("not quiet although no handler hangs")

    async def _settle(self) -> bool:
        rt: Runtime = self.rt  # type: ignore[assignment]
        for _ in range(SPINS):
            await asyncio.sleep(0)
        waiter = asyncio.ensure_future(rt.wait_idle())
        for _ in range(2 * SPINS):
            if waiter.done():
                return True
            await asyncio.sleep(0)
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter
        return False

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def no_violation_reported_by_the_actors(self) -> None:
        """G2 and G3 (checked by the actors as they run), and no loop errors."""
        assert self.world.violations == []
        assert self.loop_errors == []

    @invariant()
    def per_key_order_within_a_priority(self) -> None:
        """G1: by key and priority, first runs happen in acceptance order."""
        firsts: dict[tuple[str, int], list[int]] = defaultdict(list)
        for event in self.world.stream:
            if event["event"] == "run" and event["attempt"] == 1:
                msg = self.world.msgs[event["n"]]
                firsts[msg.key, msg.priority].append(msg.n)
        for lane, ns in firsts.items():
            assert ns == sorted(ns), f"lane {lane} ran out of order: {ns}"

    @invariant()
    def outcomes_are_single_and_consistent(self) -> None:
        """G4: at most one outcome per message, the same in the future, dead letters and
        handler runs; each kind ends only in outcomes it can have; retries are bounded."""
        for msg in self.world.msgs.values():
            assert msg.returned <= 1, msg
            assert len(msg.dead) <= 1, msg
            assert not (msg.returned and msg.dead), msg
            assert len(msg.attempts) <= 1 + self.max_retries, msg
            assert msg.attempts == list(range(1, len(msg.attempts) + 1)), msg
            if msg.ask_outcome is not None:
                what, value = msg.ask_outcome
                if what == "result":
                    assert (value, msg.returned) == (msg.n, 1), msg
                elif isinstance(value, Dropped):
                    assert msg.dead == [value.reason], msg
                elif isinstance(value, Interrupted):
                    assert (msg.dead, msg.returned) == ([], 0), msg
                else:
                    assert msg.dead == ["failed"], msg
            outcome = msg.known_outcome()
            if outcome is None:
                continue
            if msg.kind == "ok":
                assert outcome not in {"failed", "interrupted"}, msg
            elif msg.kind in RAISES:
                assert outcome not in {"handled", "interrupted"}, msg
            elif msg.kind == "flaky":
                assert outcome != "interrupted", msg
                assert outcome != ("failed" if self.max_retries else "handled"), msg
            elif msg.kind == "hang":
                assert outcome != "handled", msg

    @invariant()
    def once_quiet_every_message_has_an_outcome_or_waits(self) -> None:
        """G4/G5: when quiet, outcomes + waiting == accepted, message by message."""
        if self.rt is None or not self.quiet:
            return
        stats = self.rt.stats()
        msgs = self.world.msgs.values()
        assert stats["accepted"] == len(self.world.msgs)
        outcomes = stats["handled"] + stats["failed"] + stats["interrupted"] + stats["dropped"]
        assert outcomes + stats["pending"] == stats["accepted"], stats
        assert stats["handled"] == sum(m.returned for m in msgs)
        assert stats["failed"] == sum(m.dead == ["failed"] for m in msgs)
        assert stats["dropped"] == sum(bool(m.dead) and m.dead != ["failed"] for m in msgs)
        ask_interrupted = sum(m.known_outcome() == "interrupted" for m in msgs)
        unknown = sum(m.known_outcome() is None for m in msgs)
        assert unknown == stats["pending"] + stats["interrupted"] - ask_interrupted
        for key in KEYS:
            waiting_asks = sum(
                m.key == key and m.future is not None and not m.future.done() for m in msgs
            )
            assert waiting_asks <= self.rt.pending(key), key

    @invariant()
    def restart_budget_and_backoff_are_honoured(self) -> None:
        """G7: per key, never more than `max_restarts` restarts within `within` (between
        budget resets); gave up only with the budget spent; restarts at failure + delay."""
        restarts: dict[str, list[float]] = defaultdict(list)  # since the last reset of any kind
        since_gave_up: dict[str, list[float]] = defaultdict(list)
        scheduled: dict[str, tuple[float, float]] = {}
        for event in self.world.stream:
            key, kind = event.get("key"), event["event"]
            if kind == "actor_restart_scheduled":
                t = event["t"]
                assert event["restarts"] <= self.max_restarts, event
                restarts[key].append(t)
                since_gave_up[key].append(t)
                recent = [r for r in restarts[key] if r > t - WITHIN]
                assert len(recent) <= self.max_restarts, (key, recent)
                scheduled[key] = (t, event["delay_s"])
            elif kind == "actor_restarted":
                t0, delay = scheduled.pop(key)
                assert abs(event["t"] - (t0 + delay)) < 1e-6, (key, t0, delay, event["t"])
            elif kind == "supervisor_gave_up":
                t = event["t"]
                recent = [r for r in since_gave_up[key] if r > t - WITHIN]
                assert len(recent) >= self.max_restarts, (key, recent, t)
                restarts[key].clear()
                since_gave_up[key].clear()
            elif kind == "on_stop" and event["reason"] in {"idle", "stopped"}:
                restarts[key].clear()  # the entry may be released: a fresh budget

    # -- the end ----------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.rt is not None:
                self.run(self._drain())
                self.no_violation_reported_by_the_actors()
                self.outcomes_are_single_and_consistent()
                self.once_quiet_every_message_has_an_outcome_or_waits()
                assert self.rt.stats()["pending"] == 0
                for msg in self.world.msgs.values():
                    assert msg.future is None or msg.future.done(), msg
        finally:
            try:
                if self.rt is not None:
                    self.run(self.rt.stop(drain=False))
            finally:
                self._logs.__exit__(None, None, None)
                self.loop.close()

    async def _drain(self) -> None:
        """Advance virtual time until every message has an outcome (nothing is lost)."""
        rt: Runtime = self.rt  # type: ignore[assignment]
        for _ in range(40):
            self.quiet = await self._settle()
            if self.quiet and self.world.hanging == 0 and rt.stats()["pending"] == 0:
                return
            await advance_busy(self.clock, 10.0)
        raise AssertionError(f"not drained: {rt.stats()}")


RuntimeMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None
)
test_runtime_against_its_model = RuntimeMachine.TestCase
