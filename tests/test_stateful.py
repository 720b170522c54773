"""A stateful model test of the runtime (G1-G7, G10) with hypothesis.

Each example gets a fresh event loop, `FakeClock` and `Runtime`. Rules send
batches of tells and asks to a few keys (priorities, interrupts, clears),
inject failures (in handlers, `on_start`, `on_stop` and the factory: exceptions,
cancellations the runtime did not request, `BaseException`s that are not
`Exception`s), leave handlers hanging or swallowing cancellation past
`handler_timeout`, hold `on_stop` open so that messages race idle stops and
restarts, jump virtual time across backoffs and idle timeouts, and stop the
runtime while all of that goes on. After every step the invariants compare the
runtime with a model:

* G1: per key and priority, messages start in acceptance order;
* G2: never two hooks/handlers of one key at once (an overrunning handler
  included: the next message, `on_stop` and the restart wait for it to return);
* G3: a message starts only if no older-accepted, higher-priority one waits;
* G4: at most one outcome per message, consistent between the ask future, the
  dead letters and the stats; an ask never raises a non-`Exception`; once quiet
  (or stopped), every accepted message has exactly one outcome or is still
  waiting; nothing is lost across restarts and idle stops (checked to the end in
  `teardown`, after draining);
* G7: restart budgets honoured, restarts at exactly failure time + delay,
  retries bounded, each kind of message ends only in the outcomes it can have
  (with the error the spec names); a stop (or escalated) failure dead-letters
  exactly what waited, as "stopped", with the failure as cause; a handler past
  its timeout gets `HandlerTimeout` at the timeout, shows in `stats()` and is
  logged once as `handler_overran`;
* G10: `stop(drain, timeout)` while handlers hang or swallow cancellation and
  messages wait returns within the timeout plus the grace, resolves everything,
  counts nothing twice, and the runtime accepts nothing afterwards.

The message kinds, each handled as its name says: "ok"; "boom" (restart),
"flaky" (fails on the first attempt), "resume", "stop", "escalate" (the root
stops the key); "hang" (waits for ever, cut by the timeout or an interrupt);
"stray" (cancels and awaits an inner task: a `CancelledError` the runtime did not
request, which restarts like "boom"); "base" (raises a `BaseException` that is
not an `Exception`: escalated, the key stops); "swallow" (catches every
`CancelledError` and runs on until `release_swallowers`; the even-numbered ones
send a follow-up with `ctx.tell` when first cut); "follow" (sends a follow-up
with `ctx.tell`, then returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import Counter, defaultdict
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from structlog.testing import capture_logs

from actors import (
    Context,
    DeadLetter,
    Dropped,
    HandlerCrashed,
    HandlerTimeout,
    Interrupted,
    LoopFuture,
    RuntimeStopped,
    UserActor,
)
from actors.testing import FakeClock, wait_all_tasks_blocked
from supervisors import Directive, RestartPolicy, Runtime

KEYS = ("k0", "k1", "k2")
IDLE_TIMEOUT = 5.0
HANDLER_TIMEOUT = 2.0
WITHIN = 10.0
RESET_AFTER = 5.0
BACKOFF_MIN, BACKOFF_MAX = 0.5, 2.0  # factor 2: 0.5, 1, 2, 2, ...
OVERRUN_GRACE = 1.0  # the spec's: `handler_overran` once a handler runs this long past its timeout
SHUTDOWN_GRACE = 1.0  # the spec's: stop(timeout=T) returns within T + this
STOP_SLACK = 0.5  # real seconds for scheduling noise on a loaded machine
STOP_STUCK = 5.0  # past timeout + grace + this, a stop that has not returned is reported
EPS = 1e-6


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


class Fatal(BaseException):
    """A `BaseException` of the application's own that is not an `Exception`."""


# Non-`Exception`s a hook or the factory may raise: escalated (the root stops the key).
# KeyboardInterrupt is left out: were a regression to let it through, it would end the
# whole pytest session instead of failing this test.
BASE_ERRORS: tuple[type[BaseException], ...] = (Fatal, GeneratorExit, SystemExit)


def base_error(n: int) -> BaseException:
    return BASE_ERRORS[n % len(BASE_ERRORS)](f"base {n}")


def decider(error: BaseException) -> Directive:
    if isinstance(error, ResumeMe):
        return Directive.RESUME
    if isinstance(error, StopMe):
        return Directive.STOP
    if isinstance(error, EscalateMe):
        return Directive.ESCALATE
    if not isinstance(error, Exception | asyncio.CancelledError):
        return Directive.ESCALATE  # as `default_decider`: anything but those two escalates
    return Directive.RESTART  # stray cancellations included, as `default_decider`


RAISES: dict[str, type[Exception]] = {
    "boom": Boom,
    "resume": ResumeMe,
    "stop": StopMe,
    "escalate": EscalateMe,
}
STOPS_THE_KEY = {"stop", "escalate", "base"}  # their failure dead-letters what waits
CRASHES = {"stray", "base"}  # their ask raises HandlerCrashed
CUTTABLE = {"hang", "swallow"}  # may be cut by the timeout, an interrupt or the shutdown
KINDS = ("ok",) * 5 + (
    "boom",
    "flaky",
    "resume",
    "stop",
    "escalate",
    "hang",
    "hang",
    "stray",
    "base",
    "swallow",
    "swallow",
    "follow",
)
HOOK_FAULTS = ("boom", "boom", "stray", "base")  # what a broken on_start / on_stop / factory does


@dataclass
class HandlerRun:
    """One run of a handler, as the model sees it (virtual times)."""

    key: str
    n: int
    attempt: int
    start: float
    cut: float | None = None  # when it first saw a CancelledError
    end: float | None = None  # when it returned or raised (None: still running)


@dataclass
class Msg:
    """One accepted message, as the model sees it."""

    n: int
    key: str
    kind: str
    priority: int
    future: LoopFuture[Any] | None = None
    attempts: list[int] = field(default_factory=list)  # ctx.attempt of each handler run
    runs: list[HandlerRun] = field(default_factory=list)
    returned: int = 0  # handler runs that returned normally and were never cut
    cut_returns: int = 0  # handler runs that returned after swallowing a cancellation
    raised: list[BaseException] = field(default_factory=list)  # what its handler raised
    dead: list[str] = field(default_factory=list)  # dead-letter reasons
    letters: list[DeadLetter] = field(default_factory=list)
    dead_at: float | None = None
    ask_outcome: tuple[str, Any] | None = None  # ("result", v), ("error", exc), ("base", exc)

    def record_ask(self, future: LoopFuture[Any]) -> None:
        try:
            self.ask_outcome = ("result", future.get())
        except Exception as error:
            self.ask_outcome = ("error", error)
        except BaseException as error:  # an ask must never raise this: the invariant says so
            self.ask_outcome = ("base", error)

    def known_outcome(self) -> str | None:
        if self.returned:
            return "handled"
        if self.dead:
            return self.dead[0]
        if self.ask_outcome is not None and isinstance(self.ask_outcome[1], Interrupted):
            return "interrupted"
        return None

    def unresolved(self) -> bool:
        """Neither an outcome the model saw nor an answered ask."""
        return self.known_outcome() is None and (self.future is None or not self.future.done())


@dataclass
class World:
    """Everything the actors report to the model."""

    clock: FakeClock
    msgs: dict[int, Msg] = field(default_factory=dict)
    numbers: itertools.count[int] = field(default_factory=itertools.count)
    active: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    fail_starts: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    fail_stops: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    fail_factory: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    hanging: int = 0  # handlers and on_stop calls waiting for something that may never come
    swallowing: int = 0  # swallowing handlers still running
    swallow_gate: asyncio.Event = field(default_factory=asyncio.Event)
    stop_gate: asyncio.Event | None = None  # set: every on_stop waits for it
    stream: list[dict[str, Any]] = field(default_factory=list)  # logs and on_stop, in order
    serials: itertools.count[int] = field(default_factory=itertools.count)
    runs: list[HandlerRun] = field(default_factory=list)
    # (key, messages waiting when a failure that stops the key was raised, the failure)
    must_stop: list[tuple[str, set[int], BaseException]] = field(default_factory=list)
    stop_faults: defaultdict[str, list[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # (kind, reason) of each failing on_stop, per key
    stopping: bool = False  # Runtime.stop was called

    def enter(self, key: str, hook: str) -> None:
        if self.active[key]:
            self.violations.append(f"G2: {hook} of {key} began while another hook ran")
        self.active[key] += 1

    def leave(self, key: str) -> None:
        self.active[key] -= 1

    def handler_started(self, key: str, n: int, attempt: int) -> HandlerRun:
        msg = self.msgs[n]
        msg.attempts.append(attempt)
        run = HandlerRun(key, n, attempt, self.clock.now())
        msg.runs.append(run)
        self.runs.append(run)
        self.stream.append({"event": "run", "key": key, "n": n, "attempt": attempt})
        if attempt == 1:
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
        return run

    def on_dead_letter(self, letter: DeadLetter) -> None:
        n = letter.message[0]
        msg = self.msgs[n]
        msg.dead.append(letter.reason)
        msg.letters.append(letter)
        msg.dead_at = self.clock.now()

    def expect_stopped(self, key: str, error: BaseException) -> None:
        """A failure that stops `key` is being raised: what waits now must end "stopped"."""
        waiting = {
            m.n for m in self.msgs.values() if m.key == key and not m.attempts and m.unresolved()
        }
        self.must_stop.append((key, waiting, error))

    def follow(self, ctx: Context, key: str) -> None:
        """A handler's own follow-up message (`ctx.tell`), an "ok" one."""
        n = next(self.numbers)
        msg = self.msgs[n] = Msg(n, key, "ok", 0)
        try:
            ctx.tell(key, (n, msg.kind))
        except Exception as error:
            del self.msgs[n]
            self.violations.append(
                f"ctx.tell raised {error!r} into the handler (stopping={self.stopping})"
            )

    async def fault(self, key: str, kind: str, where: str) -> None:
        """Fail as a broken hook does: "boom", "stray" (cancellation) or "base"."""
        if kind == "boom":
            raise (StopBoom if where == "on_stop" else Boom)(where)
        if kind == "stray":
            await stray_cancel(next(self.serials))
            raise AssertionError("unreachable: the stray cancellation was not raised")
        error = base_error(next(self.serials))
        self.expect_stopped(key, error)
        raise error

    def make(self, key: str | int) -> ModelBot:
        """The factory: fails as `break_factory` asked, else a new `ModelBot`."""
        faults = self.fail_factory[str(key)]
        if faults:
            kind = faults.pop(0)
            if kind == "boom":
                raise Boom("factory")
            if kind == "stray":
                raise asyncio.CancelledError
            error = base_error(next(self.serials))
            self.expect_stopped(str(key), error)
            raise error
        return ModelBot(key, self)


async def _forever() -> None:
    await asyncio.get_running_loop().create_future()


async def stray_cancel(n: int) -> None:
    """Raise a `CancelledError` that the runtime did not request, as real handlers do."""
    loop = asyncio.get_running_loop()
    if n % 2:  # a "typing..." indicator task, cancelled and awaited
        inner = loop.create_task(_forever())
        await asyncio.sleep(0)
        inner.cancel()
        await inner
    else:  # an HTTP client cancelling its request future
        future = loop.create_future()
        loop.call_soon(future.cancel)
        await future


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
            if world.fail_starts[key]:
                await world.fault(key, world.fail_starts[key].pop(0), "on_start")
        finally:
            world.leave(key)

    async def on_message(self, message: Any, ctx: Context) -> Any:
        world, key = self.world, str(self.key)
        n, kind = message
        msg = world.msgs[n]
        world.enter(key, "on_message")
        run = world.handler_started(key, n, ctx.attempt)
        try:
            if kind in RAISES:
                error: BaseException = RAISES[kind](n)
                if kind in STOPS_THE_KEY:
                    world.expect_stopped(key, error)
                msg.raised.append(error)
                raise error
            if kind == "base":
                error = base_error(n)
                world.expect_stopped(key, error)
                msg.raised.append(error)
                raise error
            if kind == "flaky" and ctx.attempt == 1:
                raise Boom(n)
            if kind == "stray":
                try:
                    await stray_cancel(n)
                except asyncio.CancelledError:
                    if world.stopping:  # the shutdown may have cut it in the middle
                        run.cut = world.clock.now()
                    raise
            if kind == "follow":
                world.follow(ctx, key)
            if kind == "hang":
                world.hanging += 1
                try:
                    await asyncio.get_running_loop().create_future()
                except asyncio.CancelledError:
                    run.cut = world.clock.now()
                    raise
                finally:
                    world.hanging -= 1
            if kind == "swallow" and await self._swallow(run, ctx, key):
                msg.cut_returns += 1
                return n
            msg.returned += 1
            return n
        finally:
            run.end = world.clock.now()
            world.leave(key)

    async def _swallow(self, run: HandlerRun, ctx: Context, key: str) -> bool:
        """Run on until `release_swallowers`, catching every cancellation; True if cut."""
        world = self.world
        gate = world.swallow_gate
        world.hanging += 1
        world.swallowing += 1
        try:
            while not gate.is_set():
                try:
                    await gate.wait()
                except asyncio.CancelledError:
                    if run.cut is None:
                        run.cut = world.clock.now()
                        if run.n % 2 == 0:  # a clean-up message ("sorry, stopping here")
                            world.follow(ctx, key)
        finally:
            world.hanging -= 1
            world.swallowing -= 1
        return run.cut is not None

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
            if world.fail_stops[key]:
                kind = world.fail_stops[key].pop(0)
                world.stop_faults[key].append((kind, reason))
                await world.fault(key, kind, "on_stop")
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
        self.rt: Runtime | None = None
        self.quiet = True
        self.max_restarts = 0
        self.max_retries = 0
        self.jitter = 0.0
        self.steps = 0
        self.stop_after = 0
        self.stop_began: float | None = None  # virtual time of the stop call
        self.stopped = False  # Runtime.stop returned (or was given up on)
        self.final: dict[str, int] = {}  # the counts when the stop returned
        self.overruns = 0
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
            "handler_overran",
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
        stop_after=st.sampled_from([3, 15, 30]),
    )
    def start(
        self,
        max_restarts: int,
        max_retries: int,
        park_for: float | None,
        max_active: int | None,
        jitter: float,
        seed: int,
        stop_after: int,
    ) -> None:
        self.max_restarts = max_restarts
        self.max_retries = max_retries
        self.jitter = jitter
        self.stop_after = stop_after
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
            world.make,
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
        self.steps += 1
        self.run(self._send(batch))
        self.settle()

    async def _send(self, batch: list[tuple[str, str, int, bool, bool, bool]]) -> None:
        rt: Runtime = self.rt  # type: ignore[assignment]
        for key, kind, priority, ask, interrupt, clear in batch:
            if self.world.stopping:
                self._refused(key, kind, priority, ask)
                continue
            interrupt = interrupt and priority > 0  # at 0 it never interrupts: refused
            n = next(self.world.numbers)
            msg = Msg(n, key, kind, priority)
            self.world.msgs[n] = msg  # before the call: a drop is reported during it
            if ask:
                msg.future = rt.ask(
                    key, (n, kind), priority=priority, interrupt=interrupt, clear=clear
                )
                msg.future.add_done_callback(msg.record_ask)
            else:
                rt.tell(key, (n, kind), priority=priority, interrupt=interrupt, clear=clear)

    def _refused(self, key: str, kind: str, priority: int, ask: bool) -> None:
        """G10: once stopping or stopped, `tell` and `ask` raise and count nothing."""
        rt: Runtime = self.rt  # type: ignore[assignment]
        accepted = rt.stats()["accepted"]
        try:
            if ask:
                rt.ask(key, (-1, kind), priority=priority)
            else:
                rt.tell(key, (-1, kind), priority=priority)
        except RuntimeStopped:
            pass
        else:
            self.world.violations.append(f"a {kind} {'ask' if ask else 'tell'} after stop")
        assert rt.stats()["accepted"] == accepted

    @rule(key=st.sampled_from(KEYS), priority=st.integers(1, 3), ask=st.booleans())
    def interrupt(self, key: str, priority: int, ask: bool) -> None:
        """One urgent message that interrupts a lower-priority handler in flight."""
        self.steps += 1
        self.run(self._send([(key, "ok", priority, ask, True, False)]))
        self.settle()

    @rule(key=st.sampled_from(KEYS), times=st.integers(1, 2), kind=st.sampled_from(HOOK_FAULTS))
    def break_start(self, key: str, times: int, kind: str) -> None:
        """The next `times` `on_start` calls of `key` fail as `kind` says."""
        self.steps += 1
        self.world.fail_starts[key] += [kind] * times

    @rule(key=st.sampled_from(KEYS), kind=st.sampled_from(HOOK_FAULTS))
    def break_stop(self, key: str, kind: str) -> None:
        """The next `on_stop` of `key` fails as `kind` says."""
        self.steps += 1
        self.world.fail_stops[key].append(kind)

    @rule(key=st.sampled_from(KEYS), kind=st.sampled_from(HOOK_FAULTS))
    def break_factory(self, key: str, kind: str) -> None:
        """The next factory call for `key` fails as `kind` says."""
        self.steps += 1
        self.world.fail_factory[key].append(kind)

    @rule()
    def hold_stops(self) -> None:
        """From now on, `on_stop` waits (so that messages race idle stops and restarts)."""
        self.steps += 1
        if self.world.stop_gate is None:
            self.world.stop_gate = asyncio.Event()

    @rule()
    def release_stops(self) -> None:
        """Let the held `on_stop` calls return."""
        self.steps += 1
        self.run(self._release_stops())
        self.settle()

    async def _release_stops(self) -> None:
        gate, self.world.stop_gate = self.world.stop_gate, None
        if gate is not None:
            gate.set()

    @rule()
    def release_swallowers(self) -> None:
        """Let the handlers that swallow cancellation return."""
        self.steps += 1
        self.run(self._release_swallowers())
        self.settle()

    async def _release_swallowers(self) -> None:
        gate, self.world.swallow_gate = self.world.swallow_gate, asyncio.Event()
        gate.set()

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0]))
    def advance(self, seconds: float) -> None:
        """Jump virtual time (across backoffs, handler timeouts, idle timeouts)."""
        self.steps += 1
        self.run(self.clock.advance(seconds))
        self.settle()

    @precondition(lambda self: not self.world.stopping and self.steps >= self.stop_after)
    @rule(
        drain=st.booleans(),
        timeout=st.sampled_from([0.01, 0.05]),
        release=st.sampled_from([0.0, 0.0, 0.0, 0.02, 0.3, None]),
        advance=st.sampled_from([0.0, 0.0, 3.0]),
    )
    def shutdown(self, drain: bool, timeout: float, release: float | None, advance: float) -> None:
        """Stop the runtime while handlers hang or swallow and messages wait (a shutdown race).

        `release`: real seconds into the stop when held `on_stop` calls and swallowing
        handlers are let go, if the stop still runs then (0.3: during its grace; None: not
        during the stop; each stop left waiting costs the grace in real time, hence rare).
        `advance`: virtual seconds that pass during the stop (handler timeouts and restarts
        fire inside it)."""
        self.steps += 1
        self.run(self._shutdown(drain, timeout, release, advance))
        self.settle()

    async def _shutdown(
        self, drain: bool, timeout: float, release: float | None, advance: float
    ) -> None:
        rt: Runtime = self.rt  # type: ignore[assignment]
        world = self.world
        world.stopping = True
        self.stop_began = self.clock.now()
        began = time.monotonic()
        stopping = rt.stop(drain=drain, timeout=timeout)
        self._refused("k0", "ok", 0, ask=False)
        self._refused("k1", "ok", 0, ask=True)
        advancing = asyncio.ensure_future(self.clock.advance(advance))
        releasing = (
            asyncio.ensure_future(self._release_all(release)) if release is not None else None
        )

        async def stopped() -> Any:
            return await stopping

        try:
            summary = await asyncio.wait_for(stopped(), timeout + SHUTDOWN_GRACE + STOP_STUCK)
        except TimeoutError:
            summary = None
            world.violations.append(f"G10: stop(timeout={timeout}) did not return: {rt.stats()}")
        elapsed = time.monotonic() - began
        self.stopped = True
        stats = rt.stats()
        if summary is not None:
            limit = timeout + SHUTDOWN_GRACE + STOP_SLACK
            if elapsed > limit:
                world.violations.append(
                    f"G10: stop(timeout={timeout}) took {elapsed:.3f} s (more than {limit})"
                )
            assert summary.accepted == stats["accepted"], (summary, stats)
            outcomes = summary.handled + summary.failed + summary.interrupted + summary.dropped
            assert outcomes == summary.accepted, summary
            for name in ("handled", "failed", "interrupted", "dropped"):
                assert getattr(summary, name) == stats[name], (summary, stats)
        assert stats["state"] == "stopped", stats
        assert stats["pending"] == 0, stats
        for msg in world.msgs.values():
            assert msg.future is None or msg.future.done(), msg
        self.final = {name: stats[name] for name in ("accepted", *OUTCOMES)}
        if releasing is not None and not releasing.done():
            releasing.cancel()  # the stop is over: a later release is `release_*`'s business
            with contextlib.suppress(asyncio.CancelledError):
                await releasing
        await asyncio.wait_for(advancing, STOP_STUCK)

    async def _release_all(self, after: float) -> None:
        await asyncio.sleep(after)
        await self._release_stops()
        await self._release_swallowers()

    def settle(self) -> None:
        if self.world.stopping:
            self.run(wait_all_tasks_blocked())
            self.quiet = False
            return
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
        """G2, G3 and G10 (checked by the actors and the rules as they run), no loop errors."""
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
        handler runs; each kind ends only in outcomes it can have, with the error it must
        carry; an ask never raises a non-`Exception`; retries are bounded."""
        stopping = self.world.stopping
        for msg in self.world.msgs.values():
            assert msg.returned <= 1, msg
            assert len(msg.dead) <= 1, msg
            assert not (msg.returned and msg.dead), msg
            assert len(msg.attempts) <= 1 + self.max_retries, msg
            assert msg.attempts == list(range(1, len(msg.attempts) + 1)), msg
            if msg.dead:
                assert stopping or msg.dead != ["shutdown"], f"dropped for a shutdown: {msg}"
                self._check_letter(msg, msg.letters[0])
            if msg.ask_outcome is not None:
                self._check_answer(msg, *msg.ask_outcome)
            outcome = msg.known_outcome()
            if outcome is None:
                continue
            if msg.kind in {"ok", "follow"}:
                assert outcome not in {"failed", "interrupted"}, msg
            elif msg.kind in RAISES or msg.kind in CRASHES:
                assert outcome != "handled", msg
                # a shutdown may cut a stray one in the middle of its awaits
                assert outcome != "interrupted" or (msg.kind == "stray" and stopping), msg
            elif msg.kind == "flaky":
                assert outcome != "interrupted", msg
                assert outcome != ("failed" if self.max_retries else "handled"), msg
            elif msg.kind == "hang":
                assert outcome != "handled", msg
            if msg.kind == "base":
                assert len(msg.attempts) <= 1, f"an escalated failure was retried: {msg}"
            if outcome == "failed" and msg.kind in CUTTABLE:
                # G7: a handler past its timeout gets its outcome at the timeout, even one
                # that swallows the cancellation and runs on.
                due = msg.runs[-1].start + HANDLER_TIMEOUT
                assert msg.dead_at is not None, msg
                assert abs(msg.dead_at - due) < EPS, (
                    f"HandlerTimeout at {msg.dead_at}, not at the timeout {due}: {msg}"
                )

    def _check_answer(self, msg: Msg, what: str, value: Any) -> None:
        assert what != "base", f"an ask raised a non-Exception: {value!r} ({msg})"
        if what == "result":
            assert (value, msg.returned) == (msg.n, 1), msg
        elif isinstance(value, Dropped):
            assert msg.dead == [value.reason], msg
            if value.reason in {"stopped", "gave_up"}:
                assert value.cause is not None, f"{value.reason} lost its cause: {msg}"
                assert value.__cause__ is value.cause, msg
        elif isinstance(value, Interrupted):
            assert (msg.dead, msg.returned) == ([], 0), msg
            assert value.reason == "interrupt" or (
                self.world.stopping and value.reason == "shutdown"
            ), f"interrupted ({value.reason}) though nothing asked for it: {msg}"
            assert msg.runs, f"interrupted, never ran: {msg}"
            assert msg.runs[-1].cut is not None, f"interrupted, never cut: {msg}"
        else:
            assert msg.dead == ["failed"], msg
            letter_error = msg.letters[0].error
            if msg.kind in CRASHES:
                assert isinstance(value, HandlerCrashed), (value, msg)
                assert value.error is letter_error, (value, msg)
                assert value.__cause__ is value.error, msg
            else:
                assert value is letter_error, (value, letter_error, msg)

    def _check_letter(self, msg: Msg, letter: DeadLetter) -> None:
        """A dead letter carries the original failure (as error, or as cause of a drop)."""
        error = letter.error
        if letter.reason == "failed":
            if msg.kind == "stray":
                assert isinstance(error, asyncio.CancelledError), (error, msg)
            elif msg.kind in RAISES or msg.kind == "base":
                assert error is msg.raised[-1], (error, msg)
            elif msg.kind == "flaky":
                assert isinstance(error, Boom), (error, msg)
            elif msg.kind in CUTTABLE:
                assert isinstance(error, HandlerTimeout), (error, msg)
            else:
                raise AssertionError(f"a {msg.kind} message failed: {msg}")
        elif letter.reason in {"stopped", "gave_up"}:
            assert letter.cause is not None, f"{letter.reason} without its cause: {msg}"

    @invariant()
    def a_stopping_failure_drops_what_waited(self) -> None:
        """G7: a failure that stops the key (STOP, or escalated to the root's default stop:
        any non-`Exception` from a handler, a hook or the factory) dead-letters exactly what
        waited, as "stopped", with that failure as the cause; nothing else is "stopped"."""
        world = self.world
        expected: set[int] = set()
        for key, waiting, error in world.must_stop:
            for n in waiting:
                msg = world.msgs[n]
                if world.stopping and msg.dead == ["shutdown"]:
                    continue  # the shutdown came first
                assert msg.dead == ["stopped"], (
                    f"{msg} waited for {key} when {error!r} stopped it, yet ended {msg.dead}"
                )
                assert msg.letters[0].cause is error, (msg.letters[0], error)
            expected |= waiting
        for msg in world.msgs.values():
            if msg.dead == ["stopped"]:
                # a retry waiting for its turn is dropped too
                assert msg.n in expected or msg.attempts, f"stopped for no reason: {msg}"

    @invariant()
    def failing_on_stop_reports_what_it_applied(self) -> None:
        """A failing `on_stop` logs `actor_failed` with the directive applied: "stop" for
        what escalates (the root stops the key), "none" otherwise (never a restart)."""
        if self.world.stopping:
            return
        for key, faults in self.world.stop_faults.items():
            logged = [
                e["directive"]
                for e in self.world.stream
                if e["event"] == "actor_failed" and e.get("key") == key and e["phase"] == "on_stop"
            ]
            expected = ["stop" if kind == "base" else "none" for kind, _ in faults]
            assert logged == expected, (key, faults, logged)

    @invariant()
    def once_quiet_every_message_has_an_outcome_or_waits(self) -> None:
        """G4/G5: when quiet (or stopped), outcomes + waiting == accepted, message by message;
        after the stop nothing waits and no count moves any more (nothing counted twice)."""
        if self.rt is None or not (self.stopped or (self.quiet and not self.world.swallowing)):
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
        if self.stopped:
            assert stats["state"] == "stopped"
            assert stats["pending"] == 0
            now = {name: stats[name] for name in ("accepted", *OUTCOMES)}
            assert now == self.final, f"counts moved after the stop: {self.final} -> {now}"
            assert all(m.future is None or m.future.done() for m in msgs)

    @invariant()
    def overrunning_handlers_are_visible(self) -> None:
        """G7: `stats()["overrunning"]` counts the handlers running past their outcome (at
        least those whose message has its final outcome, at most those cut and still
        running); `overruns` never goes down; each handler still running `OVERRUN_GRACE`
        past its timeout is logged once as `handler_overran`, and nothing else is."""
        if self.rt is None:
            return
        world = self.world
        if not world.stopping:
            stats = self.rt.stats()
            cut = [r for r in world.runs if r.end is None and r.cut is not None]
            settled = [r for r in cut if not world.msgs[r.n].unresolved()]
            assert len(settled) <= stats["overrunning"] <= len(cut), (stats, cut)
            assert stats["overruns"] >= self.overruns, stats
            self.overruns = stats["overruns"]
        swallow_runs = [r for r in world.runs if world.msgs[r.n].kind == "swallow"]
        used: set[int] = set()
        for event in world.stream:
            if event["event"] != "handler_overran":
                continue
            match = [
                i
                for i, r in enumerate(swallow_runs)
                if i not in used
                and r.key == event.get("key")
                and abs(r.start + HANDLER_TIMEOUT + OVERRUN_GRACE - event["t"]) < EPS
                and (r.end is None or r.end >= event["t"])
            ]
            assert match, f"handler_overran with no handler overrunning: {event}"
            used.add(match[0])
        now = self.clock.now()
        for i, r in enumerate(swallow_runs):
            due = r.start + HANDLER_TIMEOUT + OVERRUN_GRACE
            timed_out = r.cut is not None and abs(r.cut - (r.start + HANDLER_TIMEOUT)) < EPS
            before_stop = self.stop_began is None or due < self.stop_began
            if timed_out and before_stop and now >= due and (r.end is None or r.end > due):
                assert i in used, f"no handler_overran for {r}"

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
                if self.world.stopping:
                    self.run(self._release_all(0.0))
                    self.settle()
                else:
                    self.run(self._drain())
                self.no_violation_reported_by_the_actors()
                self.outcomes_are_single_and_consistent()
                self.a_stopping_failure_drops_what_waited()
                self.once_quiet_every_message_has_an_outcome_or_waits()
                self.overrunning_handlers_are_visible()
                assert self.rt.stats()["pending"] == 0
                if not self.world.stopping:
                    assert self.rt.stats()["overrunning"] == 0
                for msg in self.world.msgs.values():
                    assert msg.future is None or msg.future.done(), msg
        finally:
            try:
                if self.rt is not None:
                    self.run(asyncio.wait_for(self._stop_quietly(), STOP_STUCK))
            finally:
                self._logs.__exit__(None, None, None)
                self.loop.close()

    async def _stop_quietly(self) -> None:
        rt: Runtime = self.rt  # type: ignore[assignment]
        await rt.stop(drain=False)

    async def _drain(self) -> None:
        """Advance virtual time until every message has an outcome (nothing is lost)."""
        rt: Runtime = self.rt  # type: ignore[assignment]
        for _ in range(40):
            await self._release_stops()
            await self._release_swallowers()
            self.quiet = await self._settle()
            if self.quiet and self.world.hanging == 0 and rt.stats()["pending"] == 0:
                return
            await self.clock.advance(10.0)
        raise AssertionError(f"not drained: {rt.stats()}")


OUTCOMES = ("handled", "failed", "interrupted", "dropped")

# One bug at a time: shrinking every distinct failure of a broken runtime would outlast the
# suite's per-test timeout (a real stop that waits for its grace costs a second each time).
RuntimeMachine.TestCase.settings = settings(
    max_examples=250, stateful_step_count=40, deadline=None, report_multiple_bugs=False
)
test_runtime_against_its_model = RuntimeMachine.TestCase
