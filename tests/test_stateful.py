"""A stateful model test of the runtime (G1-G7) with hypothesis.

Each example gets a fresh event loop, `FakeClock` and `Runtime`. Rules send
batches of tells and asks to a few keys (priorities, interrupts, clears),
inject failures (in handlers, `on_start`, `on_stop`), leave handlers hanging
past `handler_timeout`, hold `on_stop` open so that messages race idle stops
and restarts, and jump virtual time across backoffs and idle timeouts. After
every step the invariants compare the runtime with a model:

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
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from structlog.testing import capture_logs

from actors import Context, DeadLetter, Dropped, Interrupted, LoopFuture, UserActor
from actors.testing import FakeClock, wait_all_tasks_blocked
from supervisors import Directive, RestartPolicy, Runtime

KEYS = ("k0", "k1", "k2")
IDLE_TIMEOUT = 5.0
HANDLER_TIMEOUT = 2.0
WITHIN = 10.0
RESET_AFTER = 5.0
BACKOFF_MIN, BACKOFF_MAX = 0.5, 2.0  # factor 2: 0.5, 1, 2, 2, ...


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
KINDS = ("ok",) * 5 + ("boom", "flaky", "resume", "stop", "escalate", "hang", "hang")


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
    hanging: int = 0  # handlers and on_stop calls waiting for something that may never come
    stop_gate: asyncio.Event | None = None  # set: every on_stop waits for it
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
            await asyncio.sleep(0)  # a window for anything that would overlap
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
            await asyncio.sleep(0)  # a window for anything that would overlap
            gate = world.stop_gate
            if gate is not None:  # held until the `release_stops` rule: messages race the stop
                world.hanging += 1
                try:
                    await gate.wait()
                finally:
                    world.hanging -= 1
            if world.fail_stops[key] > 0:
                world.fail_stops[key] -= 1
                raise StopBoom(reason)
        finally:
            world.leave(key)
            world.stream.append({"event": "on_stop_end", "key": key, "t": world.clock.now()})


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
        self.jitter = 0.0
        self._seq = itertools.count()
        self._logs = capture_logs(processors=[self._stamp])
        self._logs.__enter__()

    def _stamp(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
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
        self.jitter = jitter
        policy = RestartPolicy(
            max_restarts=max_restarts,
            within=WITHIN,
            backoff_min=BACKOFF_MIN,
            backoff_factor=2.0,
            backoff_max=BACKOFF_MAX,
            jitter=jitter,
            reset_after=RESET_AFTER,
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
            if ask:
                msg.future = rt.ask(
                    key, (n, kind), priority=priority, interrupt=interrupt, clear=clear
                )
                msg.future.add_done_callback(msg.record_ask)
            else:
                rt.tell(key, (n, kind), priority=priority, interrupt=interrupt, clear=clear)

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

    @rule()
    def hold_stops(self) -> None:
        """From now on, `on_stop` waits (so that messages race idle stops and restarts)."""
        if self.world.stop_gate is None:
            self.world.stop_gate = asyncio.Event()

    @rule()
    def release_stops(self) -> None:
        """Let the held `on_stop` calls return."""
        self.run(self._release_stops())
        self.settle()

    async def _release_stops(self) -> None:
        gate, self.world.stop_gate = self.world.stop_gate, None
        if gate is not None:
            gate.set()

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0]))
    def advance(self, seconds: float) -> None:
        """Jump virtual time (across backoffs, handler timeouts, idle timeouts)."""
        self.run(self.clock.advance(seconds))
        self.settle()

    def settle(self) -> None:
        self.quiet = self.run(self._settle())
        if not self.quiet and self.world.hanging == 0:
            self.world.violations.append("not quiet although no handler hangs")

    async def _settle(self) -> bool:
        """Let the runtime run until every task is blocked; True if it is quiet (no hang)."""
        rt: Runtime = self.rt  # type: ignore[assignment]
        await wait_all_tasks_blocked()
        waiter = asyncio.ensure_future(rt.wait_idle())
        await wait_all_tasks_blocked()
        if waiter.done():
            return True
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
        budget resets); gave up only with the budget spent; each delay is the exponential
        backoff (first one, after `reset_after` quiet seconds or a reset: `backoff_min`;
        then doubled, capped); the restart happens at exactly failure time + delay."""
        restarts: dict[str, list[float]] = defaultdict(list)  # since the last reset of any kind
        since_gave_up: dict[str, list[float]] = defaultdict(list)
        scheduled: dict[str, tuple[float, float]] = {}
        last_plan: dict[str, float] = {}  # the policy's last_failure
        previous: dict[str, float | None] = {}  # last delay; None: fresh state; absent: unknown
        j = self.jitter
        for event in self.world.stream:
            key, kind = str(event.get("key")), event["event"]
            if kind == "actor_restart_scheduled":
                t, delay = event["t"], event["delay_s"]
                assert event["restarts"] <= self.max_restarts, event
                restarts[key].append(t)
                since_gave_up[key].append(t)
                recent = [r for r in restarts[key] if r > t - WITHIN]
                assert len(recent) <= self.max_restarts, (key, recent)
                assert BACKOFF_MIN * (1 - j) - 1e-6 <= delay <= BACKOFF_MAX + 1e-6, event
                quiet = key not in last_plan or t - last_plan[key] >= RESET_AFTER
                before = previous.get(key, 0.0)  # 0.0: unknown
                if quiet or before is None:
                    assert abs(delay - BACKOFF_MIN) <= BACKOFF_MIN * j + 1e-6, event
                elif j == 0 and before:
                    assert delay == min(2 * before, BACKOFF_MAX), (event, before)
                previous[key] = delay
                last_plan[key] = t
                scheduled[key] = (t, delay)
            elif kind == "on_stop_end" and key in scheduled:
                t0, delay = scheduled[key]
                scheduled[key] = (t0, max(delay, event["t"] - t0))  # a slow on_stop delays it
            elif kind == "actor_restarted":
                t0, delay = scheduled.pop(key)
                assert abs(event["t"] - (t0 + delay)) < 1e-6, (key, t0, delay, event["t"])
            elif kind == "supervisor_gave_up":
                t = event["t"]
                recent = [r for r in since_gave_up[key] if r > t - WITHIN]
                assert len(recent) >= self.max_restarts, (key, recent, t)
                restarts[key].clear()
                since_gave_up[key].clear()
                previous[key] = None
                last_plan[key] = t
            elif kind == "on_stop" and event["reason"] in {"idle", "stopped"}:
                # A released key keeps its restart history (the budget holds across
                # passivation); only the backoff exponent is not modelled across it.
                previous.pop(key, None)

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
        await self._release_stops()
        for _ in range(40):
            self.quiet = await self._settle()
            if self.quiet and self.world.hanging == 0 and rt.stats()["pending"] == 0:
                return
            await self.clock.advance(10.0)
        raise AssertionError(f"not drained: {rt.stats()}")


RuntimeMachine.TestCase.settings = settings(max_examples=250, stateful_step_count=40, deadline=None)
test_runtime_against_its_model = RuntimeMachine.TestCase
