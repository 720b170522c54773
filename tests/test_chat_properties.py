"""The chat features as hypothesis properties, in virtual time (each example a fresh loop).

* collect and steering: under random arrivals, interrupts and `take_new` calls
  (turns a few loop passes long),
  every message gets exactly one outcome, is handled by at most one completed
  turn (exactly one if handled), and a key's completed turns see its messages in
  order;
* dedup: one outcome per id, and every ask of an id resolves like the first;
* debounce: the batches partition each key's messages in order, and none is
  delivered later than `max_wait` after its first message;
* rate: no key starts more turns than its bucket allows in any window, and an
  unlimited key is never delayed by a limited one;
* overflow: never more than `max_pending` waiting, every drop counted and
  dead-lettered.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Batch, Context, Debounce, Dropped, Interrupted, Rate, UserActor
from actors.testing import FakeClock
from supervisors import Runtime

EXAMPLES = max(150, settings().max_examples)
KEYS = ("a", "b", "c")


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


# -- collect and steering ----------------------------------------------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("tell"), st.sampled_from(KEYS)),
        st.tuples(st.just("yield"), st.integers(1, 4)),
        st.tuples(st.just("interrupt"), st.sampled_from(KEYS)),
    ),
    max_size=40,
)


@settings(max_examples=EXAMPLES)
@given(ops=ops, steer=st.booleans(), collect=st.booleans())
def test_collect_and_steering_handle_each_message_once_in_order(
    ops: list[tuple[str, Any]], steer: bool, collect: bool
) -> None:
    completed: list[tuple[Any, list[Any]]] = []

    class Agent(UserActor):
        busy = "collect" if collect else "queue"

        async def on_message(self, message: Any, ctx: Context) -> list[Any]:
            got = [i.message for i in message] if isinstance(message, Batch) else [message]
            for _ in range(3):
                await asyncio.sleep(0)  # an LLM call, a few loop passes long
                if steer:
                    got += [i.message for i in ctx.take_new()]
            completed.append((ctx.key, got))
            return got

    async def scenario() -> None:
        asks: dict[int, Any] = {}
        async with Runtime(Agent) as rt:
            n = 0
            for op, arg in ops:
                if op == "tell":
                    n += 1
                    asks[n] = (arg, rt.ask(arg, n))
                elif op == "interrupt":
                    rt.tell(arg, f"/stop {arg}", priority=1, interrupt=True)
                else:
                    for _ in range(arg):
                        await asyncio.sleep(0)
            await rt.stop(timeout=20)
        handled_by: dict[int, int] = {}
        for key, got in completed:
            numbers = [m for m in got if isinstance(m, int)]
            for m in numbers:
                handled_by[m] = handled_by.get(m, 0) + 1
                assert asks[m][0] == key
        assert all(count == 1 for count in handled_by.values()), handled_by
        for key in KEYS:
            seen = [m for k, got in completed if k == key for m in got if isinstance(m, int)]
            assert seen == sorted(seen)
        for m, (_key, future) in asks.items():
            try:
                result = future.get(timeout=0)
            except (Interrupted, Dropped):
                assert m not in handled_by
            else:
                assert m in result
                assert handled_by.get(m) == 1

    run(scenario())


# -- dedup -------------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES)
@given(ids=st.lists(st.sampled_from(["u1", "u2", "u3", "u4"]), max_size=30), fail=st.booleans())
def test_dedup_gives_one_outcome_per_id(ids: list[str], fail: bool) -> None:
    runs: list[str] = []

    class Bot(UserActor):
        async def on_message(self, message: Any, ctx: Context) -> str:
            runs.append(message)
            await asyncio.sleep(0)
            if fail and message == "u2":
                raise ValueError(message)
            return message.upper()

    async def scenario() -> None:
        async with Runtime(Bot) as rt:
            asks = []
            for i, msg_id in enumerate(ids):
                asks.append((msg_id, rt.ask(f"k{i % 2}", msg_id, msg_id=msg_id)))
                if i % 3 == 0:
                    await asyncio.sleep(0)
            outcomes: dict[str, Any] = {}
            for msg_id, future in asks:
                try:
                    outcome: Any = await future
                except ValueError as exc:
                    outcome = ("error", str(exc))
                assert outcomes.setdefault(msg_id, outcome) == outcome
        assert sorted(runs) == sorted(set(ids))

    run(scenario())


# -- debounce ----------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES)
@given(
    gaps=st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]), max_size=30),
    max_wait=st.sampled_from([None, 1.5, 3.0]),
    max_batch=st.sampled_from([None, 2, 5]),
)
def test_debounce_batches_partition_the_stream_in_order(
    gaps: list[float], max_wait: float | None, max_batch: int | None
) -> None:
    batches: list[tuple[list[Any], float]] = []

    class Bot(UserActor):
        debounce = Debounce(window=0.75, max_wait=max_wait, max_batch=max_batch)

        def on_message(self, batch: Batch, ctx: Context) -> None:
            batches.append(([(i.message, i.accepted_at) for i in batch], ctx.now()))

    async def scenario() -> None:
        clock = FakeClock()
        async with Runtime(Bot, clock=clock) as rt:
            for n, gap in enumerate(gaps):
                rt.tell("u", n)
                await clock.advance(gap)
            await clock.advance(10.0)
        messages = [m for batch, _ in batches for m, _ in batch]
        assert messages == list(range(len(gaps)))
        for batch, at in batches:
            if max_batch is not None:
                assert len(batch) <= max_batch
            first = batch[0][1]
            if max_wait is not None:
                assert at <= first + max_wait + 1e-9
            assert at >= batch[-1][1]  # never before its last message came

    run(scenario())


# -- rate limits -------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES)
@given(
    count=st.integers(1, 4),
    per=st.sampled_from([1.0, 2.0, 5.0]),
    arrivals=st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0]), min_size=1, max_size=25),
)
def test_no_key_exceeds_its_bucket_and_no_other_key_waits(
    count: int, per: float, arrivals: list[float]
) -> None:
    starts: dict[str, list[float]] = {"limited": [], "free": []}
    rate = Rate(count, per=per)

    class Limited(UserActor):
        def on_message(self, message: Any, ctx: Context) -> None:
            starts["limited"].append(ctx.now())

    Limited.rate = rate

    class Free(UserActor):
        def on_message(self, message: Any, ctx: Context) -> None:
            starts["free"].append(ctx.now())

    async def scenario() -> None:
        clock = FakeClock()
        free_sent: list[float] = []
        async with Runtime(lambda k: Limited(k) if k == "limited" else Free(k), clock=clock) as rt:
            for gap in arrivals:
                rt.tell("limited", 1)
                rt.tell("free", 1)
                free_sent.append(clock.now())
                await clock.advance(gap)
            await clock.advance(len(arrivals) * per + 1)
        assert starts["free"] == free_sent  # never delayed
        limited = starts["limited"]
        assert len(limited) == len(arrivals)
        # A bucket of `count` refilled at count/per: any window of length w holds at
        # most count + w * count / per starts.
        for i, t0 in enumerate(limited):
            for j in range(i, len(limited)):
                window = limited[j] - t0
                assert j - i + 1 <= count + math.floor(window * count / per + 1e-6)

    run(scenario())


# -- overflow ----------------------------------------------------------------------------------


@settings(max_examples=EXAMPLES)
@given(
    policy=st.sampled_from(["drop_oldest", "drop_newest"]),
    sends=st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=40),
    max_pending=st.integers(1, 4),
)
def test_overflow_never_exceeds_the_bound_and_dead_letters_every_drop(
    policy: str, sends: list[tuple[int, bool]], max_pending: int
) -> None:
    gate = asyncio.Event()

    class Bot(UserActor):
        overflow = policy

        async def on_message(self, message: Any, ctx: Context) -> None:
            if message == "hold":
                await gate.wait()

    async def scenario() -> None:
        async with Runtime(Bot, max_pending=max_pending) as rt:
            rt.tell("u", "hold")
            for _ in range(20):
                await asyncio.sleep(0)
            asks = []
            for n, (priority, pause) in enumerate(sends):
                asks.append(rt.ask("u", n, priority=priority))
                assert rt.pending("u") <= max_pending
                if pause:
                    await asyncio.sleep(0)
            gate.set()
            reasons = []
            for future in asks:
                try:
                    await future
                except Dropped as exc:
                    reasons.append(exc.reason)
            assert set(reasons) <= {"overflow"}
            dropped = len(reasons)
            await rt.wait_idle()
            stats = rt.stats()
            letters = rt.dead_letters()
        assert stats["overflowed"] == dropped
        assert sorted(d.message for d in letters) == sorted(
            n for n, f in enumerate(asks) if f.done() and _dropped(f)
        )
        assert stats["handled"] + dropped == stats["accepted"]

    run(scenario())


def _dropped(future: Any) -> bool:
    try:
        future.get(timeout=0)
    except Dropped:
        return True
    return False
