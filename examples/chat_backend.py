"""A simulated multi-platform chat backend on inorder.

Run it with ``python -m examples.chat_backend [--users N] [--seconds S] [--seed K]``.

A few hundred Telegram-, Discord- and WhatsApp-style users send bursts of messages at
seeded random times. Every user gets a ``Bot`` actor whose LLM-like handler awaits a
simulated provider delay, keeps a short conversation history *in the actor*, and now
and then fails with a simulated "LLM provider 500" (so restarts show). Some users send
``/stop`` (priority 10, interrupt: cancels the reply in flight) or ``/clear`` (priority
10, clear: drops what waits). A bot steers: when its LLM answer is ready it folds in
the follow-ups that arrived meanwhile (``ctx.take_new()``), so "actually, make it a
shopping list" changes the reply in flight instead of waiting for a turn of its own.
Each update carries its platform id (``msg_id``), and a few are delivered twice, as a
retried webhook does: the runtime handles them once. A short idle timeout makes
actors stop and come back during the run. The demo checks per-user order and
one-at-a-time itself, then prints a plain-text summary. No external service is used.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from actors import Context, Dropped, Interrupted, LoopFuture, MailboxFull, UserActor
from supervisors import RestartPolicy, Runtime

if TYPE_CHECKING:
    from collections.abc import Sequence

PLATFORMS = ("telegram", "discord", "whatsapp")
PROMPTS = (
    "create a todo list",
    "actually, make it a shopping list",
    "translate that to German",
    "tell me a joke",
    "what's the weather like?",
    "add milk",
    "remove the last item",
    "summarise our chat",
)
OUTCOMES = ("handled", "failed", "interrupted", "dropped", "rejected", "duplicate")


class ProviderError(RuntimeError):
    """The simulated LLM provider failed (HTTP 500)."""


@dataclass(frozen=True, slots=True)
class Chat:
    """One incoming chat message. ``seq`` increases in the order a user sent them."""

    seq: int
    text: str
    delay: float = 0.0  # simulated LLM latency in seconds
    crash: bool = False  # the simulated provider fails on this one


@dataclass(frozen=True, slots=True)
class Send:
    """A message scheduled ``at`` seconds after the start, with its delivery options."""

    at: float
    key: str
    message: Chat
    priority: int = 0
    interrupt: bool = False
    clear: bool = False
    msg_id: str | None = None  # the platform's update id
    redelivery: bool = False  # the same update again (a retried webhook)


@dataclass
class Tracker:
    """What the bots observed, shared across all incarnations (lives outside the actors)."""

    started: defaultdict[tuple[str, int], list[int]] = field(
        default_factory=lambda: defaultdict(list)
    )
    running: Counter[str] = field(default_factory=Counter)
    overlaps: int = 0
    activations: int = 0
    stops: Counter[str] = field(default_factory=Counter)
    folded: int = 0  # follow-ups taken into the reply in flight (steering)
    steered: int = 0  # replies that folded at least one

    def order_violations(self) -> int:
        """Count places where a user's same-priority messages started out of send order."""
        return sum(
            1 for seqs in self.started.values() for a, b in itertools.pairwise(seqs) if b <= a
        )


class Bot(UserActor):
    """A chat bot for one user key: an LLM-like async handler with per-user history."""

    tracker: Tracker = Tracker()  # replaced per run by ``bot_class``
    history_size = 6

    # pykka.Actor types these hooks as sync (and on_stop without reason), hence the ignores.
    async def on_start(self) -> None:
        """Count an activation; the history starts empty in every new incarnation."""
        self.history: list[str] = []
        self.tracker.activations += 1

    async def on_stop(self, reason: str) -> None:
        """Count stops by reason (idle, shutdown, restart, ...)."""
        self.tracker.stops[reason] += 1

    async def on_message(self, message: Any, ctx: Context) -> str:
        """Answer one message; ``/stop`` and ``/clear`` are handled as commands."""
        chat: Chat = message
        key = str(self.key)
        self.tracker.started[(key, ctx.priority)].append(chat.seq)
        self.tracker.running[key] += 1
        if self.tracker.running[key] > 1:
            self.tracker.overlaps += 1
        try:
            if chat.text == "/stop":
                return "ok, stopped"
            if chat.text == "/clear":
                self.history.clear()
                return "history cleared"
            await asyncio.sleep(chat.delay)  # waiting for the LLM provider
            if chat.crash:
                raise ProviderError("LLM provider 500")
            # Steering: what the user added while the LLM was answering goes into this
            # reply; those messages are handled with it (their asks get this reply).
            follow_ups = [item.message.text for item in ctx.take_new()]
            if follow_ups:
                self.tracker.folded += len(follow_ups)
                self.tracker.steered += 1
            self.history = [*self.history, chat.text, *follow_ups][-self.history_size :]
            return f"reply #{len(self.history)} to {' + '.join([chat.text, *follow_ups])!r}"
        finally:
            self.tracker.running[key] -= 1


def bot_class(tracker: Tracker) -> type[Bot]:
    """Return a ``Bot`` subclass bound to ``tracker`` (the runtime calls it with the key)."""
    return type("Bot", (Bot,), {"tracker": tracker})


def platform_of(key: str) -> str:
    """``"discord:chan:9"`` -> ``"discord"``."""
    return key.split(":", 1)[0]


def make_key(platform: str, rng: random.Random) -> str:
    """A realistic-looking user key for ``platform``."""
    if platform == "telegram":
        return f"telegram:{rng.randrange(10**6, 10**10)}"
    if platform == "discord":
        return f"discord:chan:{rng.randrange(10**17, 10**18)}"
    return f"whatsapp:+49{rng.randrange(10**9, 10**11)}"


def plan(users: int, seconds: float, seed: int) -> list[Send]:
    """Build the seeded schedule: bursts of chat per user, plus some /stop and /clear."""
    rng = random.Random(seed)
    keys: dict[str, None] = {}  # insertion-ordered set
    while len(keys) < users:
        keys.setdefault(make_key(PLATFORMS[len(keys) % len(PLATFORMS)], rng))
    raw: list[tuple[float, str, str, float, bool, str]] = []  # at, key, text, delay, crash, kind
    for key in keys:
        for _ in range(rng.randint(1, 3)):
            t = rng.uniform(0.0, seconds * 0.8)
            for _ in range(rng.randint(1, 6)):
                crash = rng.random() < 0.02
                raw.append((t, key, rng.choice(PROMPTS), rng.uniform(0.05, 0.4), crash, "chat"))
                t += rng.uniform(0.0, 0.08)
            roll = rng.random()
            if roll < 0.10:
                raw.append((t + rng.uniform(0.0, 0.15), key, "/stop", 0.0, False, "stop"))
            elif roll < 0.16:
                raw.append((t - rng.uniform(0.0, 0.05), key, "/clear", 0.0, False, "clear"))
    raw.sort(key=lambda r: r[0])
    seqs: Counter[str] = Counter()
    sends: list[Send] = []
    update_ids = itertools.count(10_000)
    for at, key, text, delay, crash, kind in raw:
        seqs[key] += 1
        opts = {"stop": (10, True, False), "clear": (10, False, True)}.get(kind, (0, False, False))
        chat = Chat(seqs[key], text, delay, crash)
        update = f"{platform_of(key)}-{next(update_ids)}"
        sends.append(Send(max(at, 0.0), key, chat, *opts, msg_id=update))
        if kind == "chat" and rng.random() < 0.05:  # the webhook is retried a moment later
            again = max(at, 0.0) + rng.uniform(0.01, 0.5)
            sends.append(Send(again, key, chat, msg_id=update, redelivery=True))
    sends.sort(key=lambda s: s.at)
    return sends


@dataclass
class Report:
    """Everything the summary prints."""

    users: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    outcomes: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    stats: dict[str, Any] = field(default_factory=dict)
    dead_letters: int = 0
    order_violations: int = 0
    overlaps: int = 0
    activations: int = 0
    stops: Counter[str] = field(default_factory=Counter)
    folded: int = 0
    steered: int = 0
    redeliveries: int = 0
    wall: float = 0.0
    sample_reply: str = ""

    @property
    def ok(self) -> bool:
        """Order and one-at-a-time held, and every sent message got exactly one outcome."""
        settled = sum(sum(c.values()) for c in self.outcomes.values())
        return (
            not self.order_violations
            and not self.overlaps
            and settled == sum(self.sent.values())
            and self.stats.get("duplicates") == self.redeliveries
        )


async def _settle(fut: LoopFuture[Any], platform: str, report: Report, again: bool) -> None:
    """Wait for one ask and record its outcome under ``platform``.

    A redelivered update's ask resolves like the original's, whatever that was: it is
    counted apart, as "duplicate", since the runtime did not handle it again.
    """
    try:
        reply = await fut
        if not again:
            report.sample_reply = reply
        outcome = "duplicate" if again else "handled"
    except Interrupted:
        outcome = "duplicate" if again else "interrupted"
    except Dropped:
        outcome = "duplicate" if again else "dropped"
    except Exception:
        outcome = "duplicate" if again else "failed"
    report.outcomes[platform][outcome] += 1


async def run_demo(
    users: int = 300, seconds: float = 15.0, seed: int = 7, idle_timeout: float = 2.0
) -> Report:
    """Run the simulated backend and return what happened."""
    report = Report()
    tracker = Tracker()
    sends = plan(users, seconds, seed)
    report.users = Counter(platform_of(k) for k in {s.key for s in sends})
    policy = RestartPolicy(backoff_min=0.02, backoff_max=0.5, rng=random.Random(seed))
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    async with Runtime(bot_class(tracker), idle_timeout=idle_timeout, restart=policy) as rt:
        t0 = loop.time()
        settling: list[asyncio.Task[None]] = []
        for s in sends:
            if (delay := s.at - (loop.time() - t0)) > 0:
                await asyncio.sleep(delay)
            platform = platform_of(s.key)
            report.sent[platform] += 1
            report.redeliveries += s.redelivery
            try:
                fut = rt.ask(
                    s.key,
                    s.message,
                    priority=s.priority,
                    interrupt=s.interrupt,
                    clear=s.clear,
                    msg_id=s.msg_id,
                )
            except MailboxFull:
                report.outcomes[platform]["rejected"] += 1
                continue
            settling.append(asyncio.create_task(_settle(fut, platform, report, s.redelivery)))
        await asyncio.gather(*settling)
        await rt.wait_idle()
        report.stats = dict(rt.stats())
        report.dead_letters = len(rt.dead_letters())
        await rt.stop(drain=True, timeout=10.0)
    report.wall = time.perf_counter() - start
    report.order_violations = tracker.order_violations()
    report.overlaps, report.activations = tracker.overlaps, tracker.activations
    report.stops = tracker.stops
    report.folded, report.steered = tracker.folded, tracker.steered
    return report


def table(headers: list[str], rows: Sequence[Sequence[object]]) -> str:
    """Render a plain-text table: first column left-aligned, the rest right-aligned."""
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_summary(report: Report) -> str:
    """The human-readable summary of a run."""
    cols = ["handled", "failed", "interrupted", "dropped"]
    rows: list[list[object]] = [
        [p, report.users[p], report.sent[p], *(report.outcomes[p][c] for c in cols)]
        for p in PLATFORMS
    ]
    total = Counter[str]()
    for c in report.outcomes.values():
        total.update(c)
    rows.append(
        ["total", sum(report.users.values()), sum(report.sent.values()), *(total[c] for c in cols)]
    )
    st = report.stats
    lat = [
        [name, *(f"{st.get(name, {}).get(p, 0.0):.1f}" for p in ("p50", "p90", "p99", "max"))]
        for name in ("wait_ms", "run_ms")
    ]
    verdict = "yes" if not report.order_violations else f"NO ({report.order_violations} violations)"
    one_at_a_time = "yes" if not report.overlaps else f"NO ({report.overlaps} overlaps)"
    stops = ", ".join(f"{r} {n}" for r, n in sorted(report.stops.items())) or "none"
    return "\n".join(
        [
            table(["platform", "users", "sent", *cols], rows),
            "",
            "outcomes:      " + ", ".join(f"{o} {total[o]}" for o in OUTCOMES),
            "runtime stats: " + ", ".join(f"{o} {st.get(o, '?')}" for o in cols),
            f"order held:    {verdict}",
            f"one at a time: {one_at_a_time}",
            f"restarts:      {st.get('restarts', '?')}",
            f"idle stops:    {st.get('idle_stops', '?')}",
            f"activations:   {st.get('activations', '?')} (on_start ran {report.activations}x)",
            f"on_stop:       {stops}",
            f"dead letters:  {report.dead_letters}",
            f"steering:      {report.folded} follow-ups folded into {report.steered} replies "
            "in flight (ctx.take_new)",
            f"dedup:         {report.redeliveries} redelivered updates, "
            f"{st.get('duplicates', '?')} not handled again (msg_id)",
            f"last reply:    {report.sample_reply}",
            "",
            table(["latency (ms)", "p50", "p90", "p99", "max"], lat),
            "",
            f"wall time:     {report.wall:.1f} s",
            f"result:        {'OK' if report.ok else 'FAILED'}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 0 when order and outcomes held."""
    ap = argparse.ArgumentParser(prog="python -m examples.chat_backend", description=__doc__)
    ap.add_argument("--users", type=int, default=300, help="number of chat users (300)")
    ap.add_argument("--seconds", type=float, default=15.0, help="length of the traffic (15)")
    ap.add_argument("--seed", type=int, default=7, help="random seed (7)")
    ap.add_argument("--idle-timeout", type=float, default=2.0, help="actor idle timeout (2)")
    ap.add_argument("--log-level", default="critical", help="runtime log level (critical)")
    args = ap.parse_args(argv)
    level = logging.getLevelNamesMapping()[args.log_level.upper()]
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    print(f"inorder chat backend demo: {args.users} users, {args.seconds:g} s, seed {args.seed}")
    report = asyncio.run(run_demo(args.users, args.seconds, args.seed, args.idle_timeout))
    print(format_summary(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
