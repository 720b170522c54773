"""G1-G4 as hypothesis properties, checked against a reference model.

A scenario is a few producers (asyncio tasks, and threads whose `tell`/`ask`
go through the batched ingress), each sending a list of messages to 2-4 keys
with priorities 0-2, some with `interrupt=True` and/or `clear=True`. Each
message tells the probe actor how to behave: how many times to await, whether
to raise, whether to swallow a cancellation.

The run records, in loop order, every acceptance (a task records its message
just before its synchronous `tell`/`ask`; a thread's message is recorded when
the ingress hands it to the router, i.e. in arrival order), every handler start
and every handler end. The reference model replays that log with a plain
priority queue per key:

* accept: `clear` drops the waiting messages of lower priority (outcome
  dropped "cleared"); `interrupt` marks the message in flight as cut if its
  priority is lower; the message joins its key's queue.
* start: the message that starts must be the oldest of the highest priority
  waiting (G1, G3), and nothing of that key may be in flight (G2).
* end: a raise is failed; a cut handler is interrupted (and must have seen a
  CancelledError); anything else is handled.

Then every ask's outcome, the dead letters and the stats must equal the model's
(G4: exactly one outcome per accepted message, nothing left pending). So an
interrupted message exists only if an interrupt of higher priority arrived
while it ran, and a cleared one only if it was lower than a clear that arrived
while it waited.

Blocking (thread-pool) handlers start on a pool thread, after the loop popped
their message, so the exact replay does not apply; the last property checks
them with order and exclusion invariants that hold whatever the timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from actors import Context, Dropped, HandlerCrashed, HandlerTimeout, Interrupted, UserActor
from actors.testing import FakeClock, wait_all_tasks_blocked
from supervisors import RestartPolicy, Runtime

KEYS: tuple[str | int, ...] = ("k0", 1, "k2", 3)
IMMEDIATE = RestartPolicy(backoff_min=0, backoff_max=0, jitter=0, max_restarts=1000)
ANSWER_TIMEOUT = 20.0  # seconds a thread waits for an ask; a safety net, never reached
STUCK = 15.0  # seconds after which a run is reported as stuck instead of hanging the suite
# A run takes a few milliseconds; the "thorough" hypothesis profile raises these.
PROFILE_EXAMPLES = settings().max_examples
EXAMPLES = max(150, PROFILE_EXAMPLES)
BLOCKING_EXAMPLES = max(80, PROFILE_EXAMPLES // 2)


class Boom(Exception):
    """What a failing probe raises; carries the message id."""


@dataclass(frozen=True)
class Msg:
    """One message and the behaviour it asks of the probe handler."""

    mid: int
    producer: int
    key: str | int
    priority: int
    interrupt: bool
    clear: bool
    ask: bool
    wait: bool  # an ask whose answer is awaited before the producer goes on
    awaits: int  # how many times the handler yields
    fail: bool  # raise Boom after the awaits
    swallow: bool  # catch a CancelledError and return
    yields: int  # loop producers: sleep(0)s after sending


@dataclass(frozen=True)
class Advance:
    """A loop producer moves the fake clock forward."""

    seconds: float


@dataclass(frozen=True)
class Producer:
    thread: bool
    ops: tuple[Msg | Advance, ...]

    def messages(self) -> list[Msg]:
        return [op for op in self.ops if isinstance(op, Msg)]


@dataclass(frozen=True)
class Scenario:
    producers: tuple[Producer, ...]
    idle_timeout: float | None

    def messages(self) -> list[Msg]:
        return [m for p in self.producers for m in p.messages()]


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    threads: bool,
    advances: bool,
    waits: bool,
    idle: tuple[float | None, ...],
) -> Scenario:
    keys = KEYS[: draw(st.integers(2, 4))]
    producers: list[Producer] = []
    mid = 0
    for index in range(draw(st.integers(1, 4))):
        thread = threads and draw(st.booleans())
        ops: list[Msg | Advance] = []
        for _ in range(draw(st.integers(1, 12))):
            if advances and not thread and draw(st.integers(0, 4)) == 4:
                ops.append(Advance(draw(st.sampled_from([0.0, 0.5, 1.0, 2.5]))))
                continue
            ask = draw(st.integers(0, 3)) > 0
            key = draw(st.sampled_from(keys))
            priority = draw(st.integers(0, 2))
            ops.append(
                Msg(
                    mid=mid,
                    producer=index,
                    key=key,
                    priority=priority,
                    # At priority 0 it could never interrupt: the runtime refuses it.
                    interrupt=draw(st.integers(0, 3)) == 3 and priority > 0,
                    clear=draw(st.integers(0, 5)) == 5,
                    ask=ask,
                    wait=waits and ask and draw(st.integers(0, 3)) == 3,
                    awaits=draw(st.integers(0, 3)),
                    fail=draw(st.integers(0, 4)) == 4,
                    swallow=draw(st.integers(0, 4)) == 4,
                    yields=0 if thread else draw(st.integers(0, 2)),
                )
            )
            mid += 1
        producers.append(Producer(thread, tuple(ops)))
    return Scenario(tuple(producers), draw(st.sampled_from(idle)))


# -- the run ---------------------------------------------------------------------------------


Event = tuple[Any, ...]
Outcome = tuple[str, Any]


@dataclass
class Recorder:
    """The loop-ordered log of a run, and G2 bookkeeping (thread-safe for blocking probes)."""

    log: list[Event] = field(default_factory=list)
    active: dict[str | int, int] = field(default_factory=lambda: defaultdict(int))
    overlaps: list[Event] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def accept(self, mid: int) -> None:
        self.log.append(("accept", mid))

    def enter(self, key: str | int, what: int | str) -> None:
        with self.lock:
            self.active[key] += 1
            if self.active[key] > 1:
                self.overlaps.append((key, what, len(self.log)))
            self.log.append(("start", key, what))

    def exit(self, key: str | int, what: int | str, kind: str) -> None:
        with self.lock:
            self.active[key] -= 1
            self.log.append(("end", key, what, kind))


class Probe(UserActor):
    """Behaves as each message says; every hook counts as activity of the key (G2)."""

    def __init__(self, key: str | int, rec: Recorder) -> None:
        super().__init__(key)
        self.rec = rec

    async def on_start(self) -> None:
        self.rec.enter(self.key, "on_start")
        try:
            await asyncio.sleep(0)
        finally:
            self.rec.exit(self.key, "on_start", "return")

    async def on_stop(self, reason: str) -> None:
        self.rec.enter(self.key, f"on_stop:{reason}")
        try:
            await asyncio.sleep(0)
        finally:
            self.rec.exit(self.key, f"on_stop:{reason}", "return")

    async def on_message(self, message: Msg, ctx: Context) -> Any:
        rec = self.rec
        rec.enter(ctx.key, message.mid)
        if (ctx.key, ctx.priority, ctx.attempt, ctx.interrupted) != (
            message.key,
            message.priority,
            1,
            False,
        ):
            rec.errors.append(f"bad context for {message}: {ctx!r} interrupted={ctx.interrupted}")
        kind = "return"
        try:
            for _ in range(message.awaits):
                try:
                    await asyncio.sleep(0)
                except asyncio.CancelledError:
                    if not message.swallow:
                        kind = "cancelled"
                        raise
                    kind = "swallowed"
                    return ("swallowed", message.mid)
            if message.fail:
                kind = "raise"
                raise Boom(message.mid)
            return message.mid
        finally:
            rec.exit(ctx.key, message.mid, kind)


class BlockingProbe(UserActor):
    """The same behaviour in the thread pool: yields are `time.sleep(0)`, interrupts are polled."""

    blocking = True

    def __init__(self, key: str | int, rec: Recorder) -> None:
        super().__init__(key)
        self.rec = rec

    def on_message(self, message: Msg, ctx: Context) -> Any:
        rec = self.rec
        rec.enter(ctx.key, message.mid)
        kind = "return"
        try:
            for _ in range(message.awaits):
                time.sleep(0)
                if ctx.interrupted and not message.swallow:
                    kind = "cancelled"
                    return ("stopped early", message.mid)
            if message.fail:
                kind = "raise"
                raise Boom(message.mid)
            return message.mid
        finally:
            rec.exit(ctx.key, message.mid, kind)


def _classify(call: Any) -> Outcome:
    try:
        value = call()
    except Boom as exc:
        return ("failed", exc.args[0])
    except Interrupted as exc:
        return ("interrupted", exc.reason)
    except Dropped as exc:
        return ("dropped", exc.reason)
    return ("handled", value)


async def _outcome(future: Any) -> Outcome:
    try:
        value = await future
    except Boom as exc:
        return ("failed", exc.args[0])
    except Interrupted as exc:
        return ("interrupted", exc.reason)
    except Dropped as exc:
        return ("dropped", exc.reason)
    return ("handled", value)


@dataclass
class Run:
    rec: Recorder
    observed: dict[int, Outcome]
    stats: dict[str, Any]
    letters: list[Any]
    loop_errors: list[dict[str, Any]]


def _send(rt: Runtime, m: Msg) -> Any:
    if m.ask:
        return rt.ask(m.key, m, priority=m.priority, interrupt=m.interrupt, clear=m.clear)
    rt.tell(m.key, m, priority=m.priority, interrupt=m.interrupt, clear=m.clear)
    return None


async def _run(
    scenario: Scenario,
    *,
    blocking: bool = False,
    clock: FakeClock | None = None,
    restart: RestartPolicy = IMMEDIATE,
) -> Run:
    loop = asyncio.get_running_loop()
    loop_errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
    rec = Recorder()
    observed: dict[int, Outcome] = {}
    actor = BlockingProbe if blocking else Probe
    rt = Runtime(
        lambda key: actor(key, rec),
        restart=restart,
        idle_timeout=scenario.idle_timeout,
        clock=clock,
        log_level=logging.CRITICAL,
        max_workers=4,
    )
    async with rt:
        # The one observation point inside the runtime: a thread's message is recorded
        # when the loop takes it from the ingress, just before the router accepts it.
        ingress: Any = rt._ingress
        consume = ingress._consume

        def recording_consume(item: Any) -> None:
            rec.accept(item.message.mid)
            consume(item)

        ingress._consume = recording_consume
        advancing = asyncio.Lock()

        later: list[tuple[int, Any]] = []  # asks of tasks, answered after the settle

        async def task_producer(producer: Producer) -> None:
            for op in producer.ops:
                if isinstance(op, Advance):
                    assert clock is not None
                    async with advancing:
                        await clock.advance(op.seconds)
                    continue
                rec.accept(op.mid)
                future = _send(rt, op)
                if future is not None:
                    if op.wait:
                        observed[op.mid] = await _outcome(future)
                    else:
                        later.append((op.mid, future))
                for _ in range(op.yields):
                    await asyncio.sleep(0)

        def thread_producer(producer: Producer) -> None:
            unanswered: list[tuple[int, Any]] = []
            for m in producer.messages():
                future = _send(rt, m)
                if future is not None:
                    if m.wait:
                        observed[m.mid] = _classify(lambda f=future: f.get(timeout=ANSWER_TIMEOUT))
                    else:
                        unanswered.append((m.mid, future))
            for mid, future in unanswered:
                observed[mid] = _classify(lambda f=future: f.get(timeout=ANSWER_TIMEOUT))

        threads = [
            threading.Thread(target=thread_producer, args=(p,), daemon=True)
            for p in scenario.producers
            if p.thread
        ]
        tasks: list[asyncio.Task[None]] = []
        try:
            async with asyncio.timeout(STUCK):
                for thread in threads:
                    thread.start()
                tasks = [
                    asyncio.create_task(task_producer(p))
                    for p in scenario.producers
                    if not p.thread
                ]
                await asyncio.gather(*tasks)
                for thread in threads:
                    await asyncio.to_thread(thread.join)
                messages = scenario.messages()
                stats = await _settle(rt, clock, {m.key for m in messages}, len(messages))
                for mid, future in later:
                    assert future.done(), f"ask {mid} unanswered after the settle"
                    observed[mid] = await _outcome(future)
        except TimeoutError:
            for task in tasks:
                task.cancel()
            raise AssertionError(_stuck_report(scenario, rt, rec, observed)) from None
        letters = rt.dead_letters()
        # Everything has settled, so a stop without drain has nothing to drop or cut short.
        summary = await rt.stop(drain=False)
    assert (summary.dropped_on_stop, summary.interrupted_on_stop) == (0, 0), summary
    assert summary.accepted == stats["accepted"]
    assert summary.handled + summary.failed + summary.interrupted + summary.dropped == (
        summary.accepted
    )
    return Run(rec, observed, stats, letters, loop_errors)


async def _settle(
    rt: Runtime, clock: FakeClock | None, keys: set[Any], accepted: int
) -> dict[str, Any]:
    """Wait until every accepted message has its outcome (restart timers included).

    Quiescence here is `wait_all_tasks_blocked` plus the counters, independent of
    `rt.wait_idle()` (it has its own test below, which it once failed); `rt.stats()` is read
    only once no mailbox holds anything (test_stats_with_str_and_int_keys_of_equal_depth)."""
    stats: dict[str, Any] = {}
    for _ in range(5000):
        if clock is not None:
            await clock.advance(1.0)
        else:
            await wait_all_tasks_blocked()
        if all(rt.pending(key) == 0 for key in keys):
            stats = rt.stats()
            done = stats["handled"] + stats["failed"] + stats["interrupted"] + stats["dropped"]
            if stats["pending"] == 0 and stats["in_flight"] == 0 and done >= accepted:
                return stats
        if clock is None:
            await asyncio.sleep(0.001)  # a restart timer of the real clock is due
    raise AssertionError(f"the runtime did not settle: {stats}")


def _stuck_report(scenario: Scenario, rt: Runtime, rec: Recorder, observed: Any) -> str:
    core: Any = rt._core
    asks = {m.mid for m in scenario.messages() if m.ask}
    return (
        f"stuck: unanswered asks {sorted(asks - set(observed))}, "
        f"pending {[(k, rt.pending(k)) for k in KEYS]}, "
        f"cells {list(core.cells.values())}, tasks {core.tasks}, quiet {core.quiet()}, "
        f"supervisor inbox {len(core.supervisor.actor_inbox)}, "
        f"registry inbox {len(core.registry.actor_inbox)}, log tail {rec.log[-12:]}"
    )


# -- the reference model ---------------------------------------------------------------------


def _expected_answer(m: Msg, outcome: str) -> Outcome:
    return {
        "handled": ("handled", m.mid),
        "failed": ("failed", m.mid),
        "interrupted": ("interrupted", "interrupt"),
        "cleared": ("dropped", "cleared"),
    }[outcome]


def _check_common(scenario: Scenario, run: Run) -> dict[int, Msg]:
    """Checks that hold for every run: no loop error, G2, each message accepted once, in order."""
    msgs = {m.mid: m for m in scenario.messages()}
    assert run.loop_errors == [], run.loop_errors
    assert run.rec.errors == []
    assert run.rec.overlaps == [], f"two activities of one key at once (G2): {run.rec.overlaps}"
    accepts = [e[1] for e in run.rec.log if e[0] == "accept"]
    assert sorted(accepts) == sorted(msgs)
    for index, producer in enumerate(scenario.producers):
        mine = [mid for mid in accepts if msgs[mid].producer == index]
        assert mine == [m.mid for m in producer.messages()], "a producer's order was lost"
    asks = {mid for mid, m in msgs.items() if m.ask}
    assert set(run.observed) == asks, "an ask was never answered"
    stats = run.stats
    assert stats["accepted"] == len(msgs)
    assert stats["pending"] == 0
    total = stats["handled"] + stats["failed"] + stats["interrupted"] + stats["dropped"]
    assert total == stats["accepted"], stats  # G4
    # G1 within a producer: per key and priority, started messages start in sending order.
    starts = [e[2] for e in run.rec.log if e[0] == "start" and isinstance(e[2], int)]
    assert len(starts) == len(set(starts)), "a message was handled twice"
    position = {mid: i for i, mid in enumerate(starts)}
    for producer in scenario.producers:
        lanes: dict[tuple[Any, int], list[int]] = defaultdict(list)
        for m in producer.messages():
            if m.mid in position:
                lanes[(m.key, m.priority)].append(position[m.mid])
        for lane in lanes.values():
            assert lane == sorted(lane), "G1: equal-priority messages of a producer reordered"
    return msgs


def replay(scenario: Scenario, run: Run) -> dict[int, str]:
    """Replay the log through the reference model; return each message's outcome."""
    msgs = _check_common(scenario, run)
    waiting: dict[Any, list[int]] = defaultdict(list)
    current: dict[Any, int | None] = defaultdict(lambda: None)
    cut: dict[Any, bool] = defaultdict(bool)
    outcome: dict[int, str] = {}
    for step, event in enumerate(run.rec.log):
        if event[0] == "accept":
            m = msgs[event[1]]
            queue = waiting[m.key]
            if m.clear:
                for mid in [mid for mid in queue if msgs[mid].priority < m.priority]:
                    queue.remove(mid)
                    outcome[mid] = "cleared"
            flight = current[m.key]
            if m.interrupt and flight is not None and msgs[flight].priority < m.priority:
                cut[m.key] = True
            queue.append(m.mid)
            continue
        what = event[2]
        if not isinstance(what, int):
            continue  # on_start / on_stop: only G2 applies
        m = msgs[what]
        if event[0] == "start":
            queue = waiting[m.key]
            assert queue, f"step {step}: {what} started but the model has nothing waiting"
            best = max(range(len(queue)), key=lambda i: (msgs[queue[i]].priority, -i))
            expected = queue.pop(best)
            assert what == expected, (
                f"step {step}: key {m.key!r} started {what} (priority {m.priority}) but the "
                f"oldest of the highest priority waiting is {expected} "
                f"(priority {msgs[expected].priority}); waiting={queue}"
            )
            assert current[m.key] is None, f"step {step}: two handlers of {m.key!r} (G2)"
            current[m.key] = what
            cut[m.key] = False
        else:
            kind = event[3]
            assert current[m.key] == what
            current[m.key] = None
            was_cut = cut.pop(m.key, False)
            if was_cut:
                assert kind in ("cancelled", "swallowed"), (
                    f"step {step}: {what} was interrupted while parked on an await, "
                    f"but its handler ended with {kind!r}"
                )
                outcome[what] = "interrupted"
            else:
                assert kind in ("return", "raise"), (
                    f"step {step}: {what} saw a cancellation nobody asked for ({kind})"
                )
                outcome[what] = "failed" if kind == "raise" else "handled"
    leftover = {k: q for k, q in waiting.items() if q}
    assert not leftover, f"accepted but never handled nor dropped: {leftover}"
    assert set(outcome) == set(msgs)
    return outcome


def check_against_model(scenario: Scenario, run: Run) -> None:
    """Every ask, every dead letter and every counter equals the model's."""
    outcome = replay(scenario, run)
    msgs = {m.mid: m for m in scenario.messages()}
    for mid, answer in run.observed.items():
        assert answer == _expected_answer(msgs[mid], outcome[mid]), (mid, answer, outcome[mid])
    counts = dict.fromkeys(("handled", "failed", "interrupted", "cleared"), 0)
    for value in outcome.values():
        counts[value] += 1
    stats = run.stats
    got = {
        "handled": stats["handled"],
        "failed": stats["failed"],
        "interrupted": stats["interrupted"],
        "cleared": stats["dropped"],
    }
    assert got == counts, (got, counts)
    assert stats["restarts"] == counts["failed"]  # the default decider restarts on each failure
    letters = sorted((repr(d.key), d.message.mid, d.reason) for d in run.letters)
    expected = sorted(
        (repr(msgs[mid].key), mid, "failed" if value == "failed" else "cleared")
        for mid, value in outcome.items()
        if value in ("failed", "cleared")
    )
    assert letters == expected
    for letter in run.letters:
        if letter.reason == "failed":
            assert isinstance(letter.error, Boom)
        else:
            assert isinstance(letter.error, Dropped)


# -- the properties ---------------------------------------------------------------------------


@settings(max_examples=EXAMPLES)
@given(
    scenarios(threads=True, advances=False, waits=True, idle=(None, 300.0, 0.0005)),
)
def test_tasks_and_threads_match_the_reference_model(scenario: Scenario) -> None:
    """Producers racing from tasks and threads: order (G1, G3), one at a time (G2), interrupts,
    clears and exactly one outcome per message (G4) all equal the reference model's replay of
    the run. Failing handlers restart at once; idle stops (a tiny real idle timeout) race
    the producers."""
    run = asyncio.run(_run(scenario))
    check_against_model(scenario, run)


@settings(max_examples=EXAMPLES)
@given(
    scenarios(threads=False, advances=True, waits=False, idle=(1.0,)),
    st.sampled_from([0.0, 0.5, 2.0]),
)
def test_model_holds_across_idle_stops_and_restart_backoff(
    scenario: Scenario, backoff: float
) -> None:
    """With virtual time, producers move the clock: actors idle-stop at 1 s and failing ones
    restart after a backoff while messages keep queueing. The mailbox outlives each
    incarnation, so the replay of the run still equals the reference model, and no
    on_start/on_stop overlaps a handler of the same key (G2)."""
    restart = RestartPolicy(
        backoff_min=backoff, backoff_max=backoff, jitter=0, max_restarts=1000, within=1.0
    )

    async def main() -> Run:
        return await _run(scenario, clock=FakeClock(), restart=restart)

    run = asyncio.run(main())
    check_against_model(scenario, run)


def check_invariants(scenario: Scenario, run: Run) -> None:
    """What holds whatever the timing of thread-pool handlers.

    A blocking handler's start and end are recorded on a pool thread, so the loop pops its
    message at an unknown moment after the previous handler of the key ended (and after the
    message was accepted), and decides its outcome at an unknown moment after it ends.

    * G1, G3: when a message starts, every message of its key that was certainly waiting at
      its pop and comes first (higher priority, or equal priority and accepted earlier) has
      started already, unless it was cleared.
    * Interrupted only if an interrupt of higher priority to the key was accepted after it;
      cleared only if a clear of higher priority to the key was accepted after it.
    * G4: answers agree with how each handler ended; counts and dead letters agree.
    """
    msgs = _check_common(scenario, run)
    log = run.rec.log
    accepted_at = {e[1]: i for i, e in enumerate(log) if e[0] == "accept"}
    started_at = {e[2]: i for i, e in enumerate(log) if e[0] == "start" and isinstance(e[2], int)}
    ends = {e[2]: e[3] for e in log if e[0] == "end" and isinstance(e[2], int)}
    cleared = {mid for mid, a in run.observed.items() if a == ("dropped", "cleared")}
    letters_cleared = {d.message.mid for d in run.letters if d.reason == "cleared"}
    assert cleared <= letters_cleared
    cleared = letters_cleared
    previous_end: dict[Any, int] = {}
    for i, event in enumerate(log):
        if event[0] == "end" and isinstance(event[2], int):
            previous_end[msgs[event[2]].key] = i
        if event[0] != "start" or not isinstance(event[2], int):
            continue
        m = msgs[event[2]]
        waiting_since = max(previous_end.get(m.key, -1), accepted_at[m.mid])
        for other in msgs.values():
            if other.key != m.key or other.mid == m.mid or other.mid in cleared:
                continue
            if other.priority > m.priority:
                first = accepted_at[other.mid] < waiting_since
            else:
                first = other.priority == m.priority and accepted_at[other.mid] < accepted_at[m.mid]
            if first and started_at.get(other.mid, len(log)) > i:
                raise AssertionError(f"{m.mid} started before {other.mid} (G1/G3)")

    def sent_after(m: Msg, flag: str) -> bool:
        return any(
            c.key == m.key
            and getattr(c, flag)
            and c.priority > m.priority
            and accepted_at[c.mid] > accepted_at[m.mid]
            for c in msgs.values()
        )

    interrupted_answers = 0
    for mid, m in msgs.items():
        answer = run.observed.get(mid)
        if mid in cleared:
            assert mid not in started_at, mid
            assert sent_after(m, "clear"), mid
            continue
        assert mid in ends, f"{mid} neither ran nor was dropped"
        kind = ends[mid]
        if kind == "cancelled" or answer == ("interrupted", "interrupt"):
            assert sent_after(m, "interrupt"), f"{mid} interrupted with no interrupt above it"
        if answer is None:
            continue
        by_end: dict[str, list[Outcome]] = {
            "raise": [("failed", mid)],
            "cancelled": [("interrupted", "interrupt")],
            "return": [("handled", mid), ("interrupted", "interrupt")],
        }
        allowed = by_end[kind]
        assert answer in allowed, (mid, answer, kind)
        interrupted_answers += answer[0] == "interrupted"
    raised = sorted(mid for mid, kind in ends.items() if kind == "raise")
    assert sorted(d.message.mid for d in run.letters if d.reason == "failed") == raised
    stats = run.stats
    assert stats["failed"] == len(raised)
    assert stats["dropped"] == len(cleared)
    assert stats["interrupted"] >= interrupted_answers
    assert stats["interrupted"] >= sum(kind == "cancelled" for kind in ends.values())
    assert stats["handled"] + stats["interrupted"] == len(ends) - len(raised)


@settings(max_examples=BLOCKING_EXAMPLES)
@given(scenarios(threads=True, advances=False, waits=True, idle=(None, 0.0005)))
def test_blocking_handlers_keep_order_exclusion_and_outcomes(scenario: Scenario) -> None:
    """Thread-pool handlers (`blocking = True`) with task and thread producers: never two at once
    per key (G2, counted with a lock), start order consistent with priority and arrival
    (G1, G3), interrupts and clears only as sent, exactly one outcome each (G4)."""
    run = asyncio.run(_run(scenario, blocking=True))
    check_invariants(scenario, run)


# -- runtime defects the properties found, reduced to plain tests ------------------------------


class Echo(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        return message


class SlowStop(Echo):
    async def on_stop(self, reason: str) -> None:
        await asyncio.sleep(0)


async def test_wait_idle_wakes_when_a_registry_release_is_the_last_step() -> None:
    """`wait_idle` started while an idle stop runs returns once the runtime is quiet.

    The last step of an idle stop is a `Release` posted to the registry actor. A `wait_idle`
    that parked while only that message was queued is never woken: the registry's inbox
    counts in `_Core.quiet()` but handling it does not call `_Core.notify()`. The call is
    tried at several loop turns into the stop, since which turn parks it depends on the
    scheduling of the stop."""
    for turns in range(4):
        clock = FakeClock()
        async with Runtime(SlowStop, idle_timeout=1, clock=clock) as rt:
            await rt.ask("u", 1)

            async def wait_idle_later(turns: int = turns, rt: Runtime = rt) -> None:
                for _ in range(turns):
                    await asyncio.sleep(0)
                await rt.wait_idle()

            waiting = asyncio.create_task(wait_idle_later())
            await clock.advance(1)
            stats = rt.stats()
            assert (stats["known_keys"], stats["live_actors"], stats["pending"]) == (0, 0, 0)
            try:
                await asyncio.wait_for(waiting, 2.0)
            except TimeoutError:
                raise AssertionError(f"wait_idle hung (started {turns} turns in)") from None


async def test_idle_sweep_timer_after_stop_is_harmless(clock: FakeClock) -> None:
    """The idle-sweep timer still armed when the runtime stops must not fail when it fires on
    the stopped supervisor (it once raised ActorDeadError in a loop callback)."""
    async with Runtime(Echo, idle_timeout=30, clock=clock) as rt:
        await rt.ask("u", 1)
    await clock.advance(31)


async def test_stats_with_str_and_int_keys_of_equal_depth() -> None:
    """`stats()` works when a str key and an int key have the same number of waiting messages
    (keys may be either; `pending_by_key` must not compare them on a tie)."""
    async with Runtime(Echo, idle_timeout=None) as rt:
        for key in ("k", 1):
            rt.tell(key, "a")
            rt.tell(key, "b")
        stats = rt.stats()  # both mailboxes hold 2: nothing has run yet
        assert stats["pending_by_key"] == {"k": 2, 1: 2}


# -- fault kinds: any mix of failures across keys ---------------------------------------------
#
# Every hook can fail, and not only with an `Exception`: a `CancelledError` the runtime did not
# request ("stray", a handler that cancels and awaits its own inner task), a `BaseException`
# that is not an `Exception` ("base": one of the application's own, `GeneratorExit`,
# `SystemExit`), from `on_message` (async, plain or blocking), `on_start`, `on_stop` or the
# factory. With the default decider a stray cancellation restarts like an exception and a
# non-`Exception` escalates (the root stops the key: what waits is dropped "stopped"). The
# runtime goes on: every message gets exactly one outcome, an ask never raises a
# non-`Exception` (`HandlerCrashed` wraps it), and the other keys never notice.


class Fatal(BaseException):
    """A `BaseException` of the application's own (not an `Exception`)."""


# KeyboardInterrupt is left out on purpose: a regression letting it through would end the
# pytest session instead of failing the test.
BASE_ERRORS: tuple[type[BaseException], ...] = (Fatal, GeneratorExit, SystemExit)
FAULT_KINDS = ("ok", "ok", "ok", "boom", "stray", "base")
HOOK_FAULTS = (
    None,
    None,
    "factory:boom",
    "factory:base",
    "start:boom",
    "start:stray",
    "start:base",
    "stop:boom",
    "stop:stray",
    "stop:base",
)
MODES = ("async", "plain", "blocking")
FAULT_EXAMPLES = max(100, PROFILE_EXAMPLES)


@dataclass(frozen=True)
class FaultMsg:
    mid: int
    key: str
    kind: str  # ok, boom, stray, base
    ask: bool


@dataclass(frozen=True)
class Wave:
    """Messages sent in one go, and the hook failures armed for them (one per key at most)."""

    msgs: tuple[FaultMsg, ...]
    hooks: tuple[tuple[str, str], ...]  # (key, "factory:base", ...)


@dataclass(frozen=True)
class FaultScenario:
    modes: tuple[tuple[str, str], ...]  # (key, how its on_message runs)
    waves: tuple[Wave, ...]


@st.composite
def fault_scenarios(draw: st.DrawFn) -> FaultScenario:
    keys = [f"f{i}" for i in range(draw(st.integers(2, 4)))]
    modes = {key: draw(st.sampled_from(MODES)) for key in keys}
    waves: list[Wave] = []
    mid = 0
    for _ in range(draw(st.integers(1, 3))):
        msgs: list[FaultMsg] = []
        for _ in range(draw(st.integers(1, 10))):
            key = draw(st.sampled_from(keys))
            kind = draw(st.sampled_from(FAULT_KINDS))
            if kind == "stray" and modes[key] == "blocking":
                kind = "boom"  # a pool thread has no task to cancel
            msgs.append(FaultMsg(mid, key, kind, draw(st.booleans())))
            mid += 1
        hooks = []
        for key in keys:
            fault = draw(st.sampled_from(HOOK_FAULTS))
            if fault is not None:
                hooks.append((key, fault))
        waves.append(Wave(tuple(msgs), tuple(hooks)))
    return FaultScenario(tuple(modes.items()), tuple(waves))


def base_error(n: int) -> BaseException:
    return BASE_ERRORS[n % len(BASE_ERRORS)](n)


async def _stray_cancel() -> None:
    """A `CancelledError` nobody asked the runtime for: cancel and await an inner task."""
    inner = asyncio.ensure_future(asyncio.get_running_loop().create_future())
    await asyncio.sleep(0)
    inner.cancel()
    await inner


class FaultWorld:
    """The hook failures armed for each key, and what the actors report."""

    def __init__(self, modes: dict[str, str]) -> None:
        self.modes = modes
        self.rec = Recorder()
        self.armed: dict[str, str] = {}
        self.serial = 0

    def take(self, key: Any, hook: str) -> str | None:
        """The failure armed for `hook` of `key`, if any (it fires once)."""
        with self.rec.lock:
            fault = self.armed.get(key)
            if fault is None or fault.split(":")[0] != hook:
                return None
            del self.armed[key]
            self.serial += 1
            return fault.split(":")[1]

    def make(self, key: Any) -> UserActor:
        fault = self.take(key, "factory")
        if fault == "boom":
            raise Boom("factory")
        if fault == "base":
            raise base_error(self.serial)
        return ACTOR_CLASSES[self.modes[key]](key, self)

    def hook_fault(self, key: Any, hook: str) -> None:
        """Fail as armed (synchronously: a stray cancellation is raised as is)."""
        fault = self.take(key, hook)
        if fault == "boom":
            raise Boom(hook)
        if fault == "stray":
            raise asyncio.CancelledError
        if fault == "base":
            raise base_error(self.serial)

    async def async_hook_fault(self, key: Any, hook: str) -> None:
        with self.rec.lock:
            fault = self.armed.get(key)
        if fault == f"{hook}:stray":
            self.take(key, hook)
            await _stray_cancel()
        self.hook_fault(key, hook)


def _message_fault(m: FaultMsg) -> None:
    if m.kind == "boom":
        raise Boom(m.mid)
    if m.kind == "stray":
        raise asyncio.CancelledError
    if m.kind == "base":
        raise base_error(m.mid)


class AsyncFaulty(UserActor):
    def __init__(self, key: str, world: FaultWorld) -> None:
        super().__init__(key)
        self.world = world

    async def on_start(self) -> None:
        self.world.rec.enter(self.key, "on_start")
        try:
            await asyncio.sleep(0)
            await self.world.async_hook_fault(self.key, "start")
        finally:
            self.world.rec.exit(self.key, "on_start", "end")

    async def on_stop(self, reason: str) -> None:
        self.world.rec.enter(self.key, f"on_stop:{reason}")
        try:
            await asyncio.sleep(0)
            await self.world.async_hook_fault(self.key, "stop")
        finally:
            self.world.rec.exit(self.key, f"on_stop:{reason}", "end")

    async def on_message(self, message: FaultMsg, ctx: Context) -> Any:
        self.world.rec.enter(ctx.key, message.mid)
        try:
            await asyncio.sleep(0)
            if message.kind == "stray":
                await _stray_cancel()
            _message_fault(message)
            return message.mid
        finally:
            self.world.rec.exit(ctx.key, message.mid, "end")


class PlainFaulty(UserActor):
    """Plain (synchronous) hooks and handler, run on the loop."""

    def __init__(self, key: str, world: FaultWorld) -> None:
        super().__init__(key)
        self.world = world

    def on_start(self) -> None:
        self.world.rec.enter(self.key, "on_start")
        try:
            self.world.hook_fault(self.key, "start")
        finally:
            self.world.rec.exit(self.key, "on_start", "end")

    def on_stop(self, reason: str) -> None:
        self.world.rec.enter(self.key, f"on_stop:{reason}")
        try:
            self.world.hook_fault(self.key, "stop")
        finally:
            self.world.rec.exit(self.key, f"on_stop:{reason}", "end")

    def on_message(self, message: FaultMsg, ctx: Context) -> Any:
        self.world.rec.enter(ctx.key, message.mid)
        try:
            _message_fault(message)
            return message.mid
        finally:
            self.world.rec.exit(ctx.key, message.mid, "end")


class BlockingFaulty(PlainFaulty):
    """The same, with `on_message` on a pool thread."""

    blocking = True


ACTOR_CLASSES: dict[str, type[AsyncFaulty | PlainFaulty]] = {
    "async": AsyncFaulty,
    "plain": PlainFaulty,
    "blocking": BlockingFaulty,
}


def simulate_key(
    alive: bool, fault: str | None, msgs: list[FaultMsg]
) -> tuple[dict[int, str], bool]:
    """One key through one wave (all of it accepted before anything runs): each message's
    outcome, and whether an instance is alive afterwards.

    Default decider: an `Exception` or a stray cancellation restarts (`on_stop("restart")`,
    then the factory and `on_start` again, also with nothing waiting); anything else
    escalates and the root stops the key (what waits is dropped "stopped"). A failing
    `on_stop` stops the key if it escalates (a pending restart is cancelled), else changes
    nothing."""
    armed = fault
    out: dict[int, str] = {}
    queue = list(msgs)
    restart = False

    def fire(hook: str) -> str | None:
        nonlocal armed
        if armed is not None and armed.split(":")[0] == hook:
            kind, armed = armed.split(":")[1], None
            return kind
        return None

    def stop_key() -> None:
        for m in queue:
            out[m.mid] = "stopped"
        queue.clear()

    while True:
        if not alive:
            if not queue and not restart:
                break
            restart = False
            made = fire("factory")
            if made == "boom":
                restart = True
                continue
            if made == "base":
                stop_key()
                break
            started = fire("start")
            if started == "base":
                stop_key()
                fire("stop")  # on_stop("stopped"): nothing waits any more
                break
            if started is not None:  # restart: on_stop("restart") first
                if fire("stop") == "base":
                    stop_key()
                    break
                restart = True
                continue
            alive = True
        if not queue:
            break
        m = queue.pop(0)
        if m.kind == "ok":
            out[m.mid] = "handled"
            continue
        out[m.mid] = "failed"
        alive = False
        if m.kind == "base":
            stop_key()
            fire("stop")
            break
        if fire("stop") == "base":  # on_stop("restart") escalates: no restart
            stop_key()
            break
        restart = True
    return out, alive


def expected_fault_outcomes(scenario: FaultScenario) -> dict[int, str]:
    alive: dict[str, bool] = dict.fromkeys(dict(scenario.modes), False)
    outcome: dict[int, str] = {}
    for wave in scenario.waves:
        hooks = dict(wave.hooks)
        for key in alive:
            mine = [m for m in wave.msgs if m.key == key]
            got, alive[key] = simulate_key(alive[key], hooks.get(key), mine)
            outcome.update(got)
    return outcome


async def _fault_answer(future: Any) -> Outcome:
    try:
        value = await future
    except Boom as exc:
        return ("failed", exc.args[0])
    except HandlerCrashed as exc:
        return ("crashed", type(exc.error).__name__)
    except Dropped as exc:
        return ("dropped", exc.reason)
    except Exception as exc:
        return ("error", repr(exc))
    except BaseException as exc:  # never: an ask raises only Exceptions
        return ("base", repr(exc))
    return ("handled", value)


@contextlib.asynccontextmanager
async def _stopping_at_once(rt: Runtime) -> Any:
    """`async with rt`, but the stop does not drain: once the checks have settled everything
    there is nothing to drain, and after a failed check a drain would wait for a wedged key
    for its whole timeout, in every example hypothesis tries while it shrinks."""
    await rt.start()
    try:
        yield rt
    finally:

        async def stop() -> None:
            await rt.stop(drain=False, timeout=0.1)

        await asyncio.wait_for(stop(), STUCK)


STALL = 0.5  # real seconds in which nothing moved and nothing ran: the runtime is stuck


class Stall:
    """Tells a wedged runtime from a slow one quickly (a failing example must not take long
    to fail: hypothesis runs many while it shrinks)."""

    def __init__(self, rt: Runtime, rec: Recorder) -> None:
        self.rt = rt
        self.rec = rec
        self.last: Any = None
        self.since = self.started = time.monotonic()

    def check(self, expected_active: int = 0) -> None:
        """Raise if nothing changed for `STALL` seconds while only `expected_active` hooks ran."""
        stats = self.rt.stats()
        with self.rec.lock:
            active = sum(self.rec.active.values())
            state = (tuple(stats[k] for k in OUTCOME_COUNTS), len(self.rec.log), active)
        now = time.monotonic()
        if state != self.last or active > expected_active:
            self.last, self.since = state, now
        elif now - self.since > STALL or now - self.started > STUCK:
            raise AssertionError(f"the runtime is stuck: {stats}")


OUTCOME_COUNTS = ("accepted", "pending", "handled", "failed", "interrupted", "dropped")


async def _quiesce(rt: Runtime, clock: FakeClock, rec: Recorder) -> dict[str, Any]:
    """Until every accepted message has its outcome, restarts included (virtual time does not
    move: the backoff is 0; pool threads need real time)."""
    stall = Stall(rt, rec)
    while True:
        await clock.advance(0)
        stats = rt.stats()
        done = stats["handled"] + stats["failed"] + stats["interrupted"] + stats["dropped"]
        if (
            done == stats["accepted"]
            and stats["pending"] == 0
            and stats["in_flight"] == 0
            and not clock.pending_timers()
        ):
            await asyncio.wait_for(rt.wait_idle(), STUCK)
            if not clock.pending_timers():
                return rt.stats()
        stall.check()
        await asyncio.sleep(0.001)


@settings(max_examples=FAULT_EXAMPLES)
@given(fault_scenarios())
def test_any_mix_of_faults_across_keys(scenario: FaultScenario) -> None:
    """Keys whose handlers, `on_start`, `on_stop` and factory fail in every way (exceptions,
    stray cancellations, non-`Exception`s; async, plain and blocking handlers), in waves:
    every message gets exactly the outcome the default policy gives it (asks, dead letters
    and stats agree), an ask never raises a non-`Exception`, no two hooks of a key overlap
    (G2), messages start in order (G1), the loop reports nothing, and a key with no failure
    handles all of its messages, in order, whatever the others do."""

    async def main() -> tuple[FaultWorld, dict[int, Outcome], dict[str, Any], list[Any], Any]:
        loop = asyncio.get_running_loop()
        loop_errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
        world = FaultWorld(dict(scenario.modes))
        clock = FakeClock()
        letters: list[Any] = []
        rt = Runtime(
            world.make,
            restart=IMMEDIATE,
            idle_timeout=None,
            clock=clock,
            log_level=logging.CRITICAL,
            max_workers=4,
            on_dead_letter=letters.append,
        )
        observed: dict[int, Outcome] = {}
        async with _stopping_at_once(rt):
            asks: list[tuple[int, Any]] = []
            for wave in scenario.waves:
                world.armed.update(dict(wave.hooks))
                for m in wave.msgs:
                    world.rec.accept(m.mid)
                    if m.ask:
                        asks.append((m.mid, rt.ask(m.key, m)))
                    else:
                        rt.tell(m.key, m)
                await _quiesce(rt, clock, world.rec)
                world.armed.clear()  # what did not fire in its wave is forgotten
            for mid, future in asks:
                assert future.done(), f"ask {mid} unanswered"
                observed[mid] = await _fault_answer(future)
            stats = rt.stats()
        return world, observed, stats, letters, loop_errors

    world, observed, stats, letters, loop_errors = asyncio.run(main())
    assert loop_errors == [], loop_errors
    assert world.rec.overlaps == [], f"two activities of one key at once (G2): {world.rec.overlaps}"
    msgs = {m.mid: m for wave in scenario.waves for m in wave.msgs}
    expected = expected_fault_outcomes(scenario)
    assert set(expected) == set(msgs)
    for mid, answer in observed.items():
        m = msgs[mid]
        want = {
            "handled": ("handled", mid),
            "stopped": ("dropped", "stopped"),
            "failed": {
                "boom": ("failed", mid),
                "stray": ("crashed", "CancelledError"),
                "base": ("crashed", type(base_error(mid)).__name__),
            }.get(m.kind),
        }[expected[mid]]
        assert answer == want, (mid, m, answer, want)
    got_letters = sorted((d.message.mid, d.reason) for d in letters)
    want_letters = sorted((mid, why) for mid, why in expected.items() if why != "handled")
    assert got_letters == want_letters
    for letter in letters:
        m = letter.message
        if letter.reason == "failed":
            wanted = {"boom": Boom, "stray": asyncio.CancelledError}.get(m.kind)
            assert type(letter.error) is (wanted or type(base_error(m.mid))), letter
        else:
            assert letter.cause is not None, f"{letter} lost the failure that stopped the key"
    counts = {why: sum(v == why for v in expected.values()) for why in ("handled", "failed")}
    assert (stats["accepted"], stats["pending"], stats["interrupted"]) == (len(msgs), 0, 0)
    assert (stats["handled"], stats["failed"]) == (counts["handled"], counts["failed"]), stats
    assert stats["dropped"] == len(msgs) - counts["handled"] - counts["failed"], stats
    # G1: per key, what ran started in acceptance order (one producer, one priority).
    starts = [e[2] for e in world.rec.log if e[0] == "start" and isinstance(e[2], int)]
    ran = [mid for mid in sorted(msgs) if expected[mid] != "stopped"]
    for key, _ in scenario.modes:
        assert [s for s in starts if msgs[s].key == key] == [
            mid for mid in ran if msgs[mid].key == key
        ], key
    # Keys that never failed handled everything, whatever the others did.
    faulty = {m.key for m in msgs.values() if m.kind != "ok"}
    faulty |= {key for wave in scenario.waves for key, _ in wave.hooks}
    for mid, m in msgs.items():
        if m.key not in faulty:
            assert expected[mid] == "handled"


# -- overrunning handlers ---------------------------------------------------------------------
#
# An async handler that swallows every cancellation, and a blocking one that never looks at
# `ctx.interrupted`, both run past `handler_timeout`. The message gets `HandlerTimeout` at the
# timeout (virtual time); the key's next message, `on_stop("restart")` and the new instance
# wait until the handler really returned (G2); `stats()["overrunning"]` shows it meanwhile;
# one still running `OVERRUN_GRACE` past its timeout is logged once (`handler_overran`).

OVERRUN_TIMEOUT = 1.0
OVERRUN_GRACE = 1.0  # the spec's
OVERRUN_EXAMPLES = max(60, PROFILE_EXAMPLES)


@dataclass(frozen=True)
class OverrunMsg:
    mid: int
    key: str
    overrun: bool
    ask: bool


@dataclass(frozen=True)
class OverrunScenario:
    keys: tuple[tuple[str, bool], ...]  # (key, blocking)
    msgs: tuple[OverrunMsg, ...]
    linger: tuple[bool, ...]  # per round: leave the overrunners running past the grace


@st.composite
def overrun_scenarios(draw: st.DrawFn) -> OverrunScenario:
    keys = tuple((f"o{i}", draw(st.booleans())) for i in range(draw(st.integers(1, 3))))
    msgs = [
        OverrunMsg(mid, draw(st.sampled_from(keys))[0], draw(st.booleans()), draw(st.booleans()))
        for mid in range(draw(st.integers(1, 8)))
    ]
    linger = tuple(draw(st.lists(st.booleans(), min_size=len(msgs), max_size=len(msgs))))
    return OverrunScenario(keys, tuple(msgs), linger)


class OverrunWorld:
    def __init__(self, clock: FakeClock, blocking: dict[str, bool]) -> None:
        self.clock = clock
        self.blocking = blocking
        self.rec = Recorder()
        self.parked: dict[str, tuple[int, float, Any]] = {}  # key -> (mid, start, release)

    def park(self, key: str, mid: int, release: Any) -> None:
        with self.rec.lock:
            self.parked[key] = (mid, self.clock.now(), release)

    def make(self, key: Any) -> UserActor:
        actor = BlockingOverrunner if self.blocking[key] else AsyncOverrunner
        return actor(key, self)


class AsyncOverrunner(UserActor):
    def __init__(self, key: str, world: OverrunWorld) -> None:
        super().__init__(key)
        self.world = world

    async def on_start(self) -> None:
        self.world.rec.enter(self.key, "on_start")
        await asyncio.sleep(0)
        self.world.rec.exit(self.key, "on_start", "end")

    async def on_stop(self, reason: str) -> None:
        self.world.rec.enter(self.key, f"on_stop:{reason}")
        await asyncio.sleep(0)
        self.world.rec.exit(self.key, f"on_stop:{reason}", "end")

    async def on_message(self, message: OverrunMsg, ctx: Context) -> Any:
        self.world.rec.enter(ctx.key, message.mid)
        try:
            if message.overrun:
                gate = asyncio.Event()
                self.world.park(message.key, message.mid, gate.set)
                while not gate.is_set():
                    with contextlib.suppress(asyncio.CancelledError):  # swallowed, every time
                        await gate.wait()
            return message.mid
        finally:
            self.world.rec.exit(ctx.key, message.mid, "end")


class BlockingOverrunner(UserActor):
    blocking = True

    def __init__(self, key: str, world: OverrunWorld) -> None:
        super().__init__(key)
        self.world = world

    def on_start(self) -> None:
        self.world.rec.enter(self.key, "on_start")
        self.world.rec.exit(self.key, "on_start", "end")

    def on_stop(self, reason: str) -> None:
        self.world.rec.enter(self.key, f"on_stop:{reason}")
        self.world.rec.exit(self.key, f"on_stop:{reason}", "end")

    def on_message(self, message: OverrunMsg, ctx: Context) -> Any:
        self.world.rec.enter(ctx.key, message.mid)
        try:
            if message.overrun:
                gate = threading.Event()
                self.world.park(message.key, message.mid, gate.set)
                gate.wait(ANSWER_TIMEOUT)  # never looks at ctx.interrupted
            return message.mid
        finally:
            self.world.rec.exit(ctx.key, message.mid, "end")


async def _until_parked(rt: Runtime, clock: FakeClock, world: OverrunWorld) -> None:
    """Let the runtime work (virtual time stands still) until each key either has an
    overrunning handler parked or nothing to do, twice in a row."""
    stall = Stall(rt, world.rec)
    calm = 0
    while calm < 2:
        await clock.advance(0)
        await asyncio.sleep(0.001)
        due = [t for t in clock.pending_timers() if t <= clock.now()]
        # A message handed to a pool thread that has not started yet is in flight while
        # its key looks idle (nothing pending, nothing active): not settled until it parks.
        in_flight = rt.stats()["in_flight"]
        with world.rec.lock:
            parked = len(world.parked)
            settled = (
                not due
                and in_flight <= parked
                and all(
                    key in world.parked or (rt.pending(key) == 0 and world.rec.active[key] == 0)
                    for key in world.blocking
                )
            )
        calm = calm + 1 if settled else 0
        stall.check(expected_active=parked)


@settings(max_examples=OVERRUN_EXAMPLES)
@given(overrun_scenarios())
def test_overrunning_handlers_get_their_outcome_at_the_timeout(scenario: OverrunScenario) -> None:
    """Handlers that ignore their timeout (async ones swallowing the cancellation, blocking ones
    never checking `ctx.interrupted`): each message gets `HandlerTimeout` exactly at the
    timeout while its handler still runs, the key waits for the handler to return before
    anything else of it runs (G2), `stats()` counts the overrunning handlers, and each one
    left running past the grace is logged once."""
    policy = RestartPolicy(
        backoff_min=0, backoff_max=0, jitter=0, max_restarts=1000, handler_timeout=OVERRUN_TIMEOUT
    )

    async def main() -> tuple[OverrunWorld, dict[int, Any], list[Any], Any]:
        loop = asyncio.get_running_loop()
        loop_errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
        clock = FakeClock()
        world = OverrunWorld(clock, dict(scenario.keys))
        resolved_at: dict[int, float] = {}  # when the ask or the dead letter got the outcome
        answers: dict[int, Any] = {}
        dead: list[tuple[int, str, type]] = []

        def on_letter(letter: Any) -> None:
            resolved_at.setdefault(letter.message.mid, clock.now())
            dead.append((letter.message.mid, letter.reason, type(letter.error)))

        rt = Runtime(
            world.make,
            restart=policy,
            idle_timeout=None,
            clock=clock,
            max_workers=4,
            on_dead_letter=on_letter,
        )
        lingered = 0
        async with _stopping_at_once(rt):
            try:
                for m in scenario.msgs:
                    world.rec.accept(m.mid)
                    if m.ask:
                        future = rt.ask(m.key, m)
                        future.add_done_callback(
                            lambda f, mid=m.mid: resolved_at.setdefault(mid, clock.now())
                        )
                        answers[m.mid] = future
                    else:
                        rt.tell(m.key, m)
                for linger in scenario.linger:
                    await _until_parked(rt, clock, world)
                    parked = dict(world.parked)
                    if not parked:
                        break
                    await clock.advance(OVERRUN_TIMEOUT)
                    for key, (mid, start, _) in parked.items():
                        assert resolved_at.get(mid) == start + OVERRUN_TIMEOUT, (
                            f"{mid} resolved at {resolved_at.get(mid)}, its timeout was at "
                            f"{start + OVERRUN_TIMEOUT}"
                        )
                        assert world.rec.active[key] == 1, f"{key}: something else ran (G2)"
                    assert rt.stats()["overrunning"] == len(parked), (rt.stats(), parked)
                    if linger:
                        await clock.advance(OVERRUN_GRACE)
                        lingered += len(parked)
                        overran = [e for e in logs if e["event"] == "handler_overran"]
                        assert len(overran) == lingered, overran
                        assert sorted(e["key"] for e in overran[-len(parked) :]) == sorted(parked)
                    with world.rec.lock:
                        world.parked.clear()
                    for _, _, release in parked.values():
                        release()
                await _until_parked(rt, clock, world)
                assert world.parked == {}, "more rounds than messages"
                stats = rt.stats()
                for mid, future in answers.items():
                    assert future.done(), mid
                    try:
                        answers[mid] = ("handled", await future)
                    except Exception as exc:
                        answers[mid] = ("error", type(exc))
            finally:  # a failed check must not leave handlers parked for the stop to wait on
                with world.rec.lock:
                    leftovers, world.parked = list(world.parked.values()), {}
                for _, _, release in leftovers:
                    release()
        assert loop_errors == [], loop_errors
        overran = [e for e in logs if e["event"] == "handler_overran"]
        assert len(overran) == lingered, overran
        return world, answers, dead, stats

    with capture_logs() as logs:
        world, answers, dead, stats = asyncio.run(main())
    assert world.rec.overlaps == [], f"two activities of one key at once (G2): {world.rec.overlaps}"
    overruns = [m for m in scenario.msgs if m.overrun]
    assert sorted(dead) == [(m.mid, "failed", HandlerTimeout) for m in overruns], dead
    for m in scenario.msgs:
        if m.ask:
            want = ("error", HandlerTimeout) if m.overrun else ("handled", m.mid)
            assert answers[m.mid] == want, (m, answers[m.mid])
    assert (stats["handled"], stats["failed"]) == (
        len(scenario.msgs) - len(overruns),
        len(overruns),
    )
    assert (stats["pending"], stats["overrunning"]) == (0, 0), stats
    starts = [e[2] for e in world.rec.log if e[0] == "start" and isinstance(e[2], int)]
    for key, _ in scenario.keys:
        mine = [m.mid for m in scenario.msgs if m.key == key]
        assert [mid for mid in starts if mid in mine] == mine, key  # G1, and nothing retried
