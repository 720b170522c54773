"""Scenario framework: parameters, result cells, aggregation and targets.

A scenario runs a workload for the runtime and every peer and returns one
:class:`Cell` per (case, peer): the primary figure, or the reason it is
``n/a``. Ratios are computed *within one run*, always as the runtime's
advantage (``> 1`` means inorder did better: more throughput, less latency
or memory); ``--repeat N`` reports the median of the N figures and of the N
ratios. Each scenario states its target and checks it on the medians.

The workloads themselves live in ``_throughput.py`` (P1, P2, thread
producers, logging), ``_load.py`` (P5, P6, P7), ``_memory.py`` (P3, P4),
``_failures.py`` (keys that fail once), ``_durable.py`` (the journal),
``_cluster.py`` (the cluster mode on Redis, with node processes) and
``_features.py`` (the chat features: collect, dedup, rate limits).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from benchmarks._measure import median, progress, settle_memory
from benchmarks._peers import AsyncioQueuePeer, LockPeer, Peer, PromiseQueuePeer
from benchmarks._pykka_peer import PykkaThreadPeer
from benchmarks._runtime_peer import InorderPeer

SUBJECT = InorderPeer.name

#: Every implementation, the runtime first; the table keeps this order.
PEERS: tuple[type[Peer], ...] = (
    InorderPeer,
    AsyncioQueuePeer,
    PromiseQueuePeer,
    LockPeer,
    PykkaThreadPeer,
)
PEERS_BY_NAME = {p.name: p for p in PEERS}


@dataclasses.dataclass
class Params:
    """Workload sizes. ``full()`` is the published run, ``quick()`` the smoke test."""

    quick: bool = False
    users: list[int] = dataclasses.field(default_factory=lambda: [100, 1_000, 10_000])
    messages: int = 200_000  # total messages per throughput run (P1, P2, threads, logging)
    activation_users: int = 100_000  # P3: new user actors per activation run
    churn_users: int = 1_000_000  # P3: distinct users in the churn run
    idle_timeout: float = 1.0  # P3 churn: idle shutdown after this many seconds
    memory_actors: int = 100_000  # P4: live idle actors
    hot_messages: int = 100_000  # P5: backlog of the hot user
    light_users: int = 1_000  # P5: light users, one message per wave
    light_waves: int = 5  # P5: waves of light messages, 10 ms apart
    interrupts: int = 200  # P6: interrupt samples (one busy user each)
    load_rate: int = 50_000  # P6: background no-op messages per second
    llm_users: int = 10_000  # P7
    llm_messages: int = 5  # P7: messages per user
    llm_delay: tuple[float, float] = (0.1, 0.5)  # P7: handler await, uniform seconds
    threads: int = 4  # thread-producer scenario
    # keys that fail once and go idle (issue 8 #10)
    failing_keys: list[int] = dataclasses.field(default_factory=lambda: [2_000, 6_000, 18_000])
    burst_users: int = 1_000  # features, collect: users that each get a burst
    seed: int = 1
    rotation: int = 0  # run index: each repeat starts with a different peer
    peers: list[str] = dataclasses.field(default_factory=lambda: [p.name for p in PEERS])

    @classmethod
    def full(cls) -> Params:
        return cls()

    @classmethod
    def for_quick(cls) -> Params:
        return cls(
            quick=True,
            users=[100, 1_000],
            messages=20_000,
            activation_users=10_000,
            churn_users=20_000,
            idle_timeout=0.5,
            memory_actors=10_000,
            hot_messages=20_000,
            light_users=200,
            light_waves=3,
            interrupts=30,
            llm_users=1_000,
            llm_messages=2,
            failing_keys=[1_000, 4_000],
            burst_users=100,
        )

    def peer_classes(self) -> list[type[Peer]]:
        return [p for p in PEERS if p.name in self.peers]


@dataclasses.dataclass
class Cell:
    """One figure: ``value`` for ``peer`` in ``case``, or ``na`` saying why not."""

    case: str
    peer: str
    value: float | None = None
    na: str | None = None
    extra: dict[str, float] = dataclasses.field(default_factory=dict)
    #: The direction of this case's figure when it differs from the scenario's
    #: (a latency case in a throughput scenario); None: the scenario's.
    higher_is_better: bool | None = None


@dataclasses.dataclass
class Check:
    """A target evaluated on the medians; ``met`` is None when not measured."""

    description: str
    measured: float | None
    threshold: float
    met: bool | None


class Aggregate:
    """Medians over repeated runs of one scenario, and the ratios within runs."""

    def __init__(self, runs: Sequence[Sequence[Cell]], higher_is_better: bool) -> None:
        self.cases: list[str] = []
        self.peers: list[str] = []
        self.samples: dict[tuple[str, str], list[Cell]] = {}
        ratios: dict[tuple[str, str], list[float]] = {}
        for cells in runs:
            by_case: dict[str, dict[str, Cell]] = {}
            for cell in cells:
                if cell.case not in self.cases:
                    self.cases.append(cell.case)
                if cell.peer not in self.peers:
                    self.peers.append(cell.peer)
                self.samples.setdefault((cell.case, cell.peer), []).append(cell)
                by_case.setdefault(cell.case, {})[cell.peer] = cell
            for case, row in by_case.items():
                subject = row.get(SUBJECT)
                direction = next(
                    (c.higher_is_better for c in row.values() if c.higher_is_better is not None),
                    higher_is_better,
                )
                for peer, cell in row.items():
                    if peer == SUBJECT:
                        continue
                    r = _ratio(subject, cell, direction)
                    if r is not None:
                        ratios.setdefault((case, peer), []).append(r)
        self.ratios = {k: median(v) for k, v in ratios.items()}

    def na(self, case: str, peer: str) -> str | None:
        cells = self.samples.get((case, peer), [])
        if not cells:
            return None
        reasons = [c.na for c in cells if c.na]
        return reasons[0] if len(reasons) == len(cells) else None

    def value(self, case: str, peer: str = SUBJECT) -> float | None:
        values = [c.value for c in self.samples.get((case, peer), []) if c.value is not None]
        m = median(values)
        return None if math.isnan(m) else m

    def extra(self, case: str, peer: str = SUBJECT) -> dict[str, float]:
        cells = self.samples.get((case, peer), [])
        keys = {k for c in cells for k in c.extra}
        return {k: median([c.extra[k] for c in cells if k in c.extra]) for k in sorted(keys)}

    def ratio(self, case: str, peer: str) -> float | None:
        return self.ratios.get((case, peer))


def _ratio(subject: Cell | None, peer: Cell, higher_is_better: bool) -> float | None:
    if subject is None or subject.value is None or peer.value is None:
        return None
    a, b = subject.value, peer.value
    if a <= 0 or b <= 0 or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a / b if higher_is_better else b / a


def at_least(description: str, measured: float | None, threshold: float) -> Check:
    met = None if measured is None else measured >= threshold
    return Check(description, measured, threshold, met)


def at_most(description: str, measured: float | None, threshold: float) -> Check:
    met = None if measured is None else measured <= threshold
    return Check(description, measured, threshold, met)


RunFn = Callable[[Params], Coroutine[Any, Any, list[Cell]]]
CheckFn = Callable[[Aggregate, Params], list[Check]]


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named workload, the figure it reports and the target it checks."""

    name: str
    title: str
    target: str
    unit: str
    higher_is_better: bool
    run: RunFn
    check: CheckFn
    description: str = ""


def size_label(n: int) -> str:
    """``100`` -> ``"100"``, ``10000`` -> ``"10k"``, ``1000000`` -> ``"1M"``."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


def error_cell(case: str, peer: str, exc: BaseException) -> Cell:
    """A cell for a run that failed: reported, never silently dropped."""
    text = str(exc).splitlines()[0][:120] if str(exc) else ""
    return Cell(case, peer, na=f"error ({type(exc).__name__}{': ' + text if text else ''})")


def all_scenarios() -> list[Scenario]:
    """Every scenario, in the order of the table."""
    from benchmarks import (
        _cluster,
        _durable,
        _failures,
        _features,
        _load,
        _memory,
        _observe,
        _throughput,
    )

    return [
        *_throughput.SCENARIOS[:2],
        *_memory.SCENARIOS,
        *_load.SCENARIOS,
        *_throughput.SCENARIOS[2:],
        *_failures.SCENARIOS,
        *_durable.SCENARIOS,
        *_cluster.SCENARIOS,
        *_features.SCENARIOS,
        *_observe.SCENARIOS,
    ]


Measure = Callable[[type[Peer]], Awaitable[tuple[float, dict[str, float]]]]


async def for_each_peer(
    params: Params,
    case: str,
    measure: Measure,
    *,
    needs: tuple[str, ...] = (),
    users: int | None = None,
    only: tuple[str, ...] | None = None,
    unsupported: str = "",
) -> list[Cell]:
    """Run ``measure`` for every selected peer, recording ``n/a`` and errors.

    Peers run one after the other, starting with a different one in every
    repeat (``params.rotation``) so that order effects average out.

    ``needs`` are capabilities the workload requires, ``users`` the number of
    users (peers with a bound report ``n/a`` above it); peers outside ``only``
    are reported as ``unsupported`` (e.g. "n/a (keeps no idle state)").
    """
    cells: list[Cell] = []
    classes = params.peer_classes()
    shift = params.rotation % max(1, len(classes))
    for cls in classes[shift:] + classes[:shift]:
        reason = cls.missing(*needs, users=users)
        if reason is None and only is not None and cls.name not in only:
            reason = unsupported or "n/a"
        if reason is not None:
            cells.append(Cell(case, cls.name, na=reason))
            continue
        progress(f"{case}: {cls.name}")
        settle_memory()  # no garbage of the previous peer collected on this one's clock
        try:
            value, extra = await measure(cls)
        except Exception as exc:
            cells.append(error_cell(case, cls.name, exc))
        else:
            cells.append(Cell(case, cls.name, value=value, extra=extra))
    return cells


ColumnMeasure = Callable[[str], Awaitable[tuple[float, dict[str, float]]]]


async def for_each_column(
    params: Params,
    case: str,
    columns: Sequence[str],
    measure: ColumnMeasure,
    missing: Callable[[str], str | None],
    higher_is_better: bool | None = None,
) -> list[Cell]:
    """Run ``measure`` for every column of a scenario that compares the runtime with
    itself (a feature on and off, a mode, an observer), starting with a different one
    in every repeat; ``missing(column)`` says why a column cannot run, or None."""
    shift = params.rotation % len(columns)
    cells: list[Cell] = []
    for column in [*columns[shift:], *columns[:shift]]:
        reason = missing(column)
        if reason is not None:
            cells.append(Cell(case, column, na=reason))
            continue
        progress(f"{case}: {column}")
        settle_memory()
        try:
            value, extra = await measure(column)
        except Exception as exc:
            cells.append(error_cell(case, column, exc))
        else:
            cells.append(Cell(case, column, value, extra=extra, higher_is_better=higher_is_better))
    return cells
