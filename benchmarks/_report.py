"""Reporting: progress on stderr, the results table, the JSON file, PNG charts.

rich is used when it is importable (the ``bench`` extra), plain text otherwise;
matplotlib (the ``plot`` extra) only for ``--plot``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._scenarios import PEERS, SUBJECT, Aggregate, Check, Scenario

RATIO_MEANING = (
    "runtime advantage within one run: inorder/peer for throughput, peer/inorder for "
    "latency, memory and makespan; > 1 means inorder did better"
)


def _has_rich() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class Progress:
    """Shows what is being measured: a rich status line, or plain lines on stderr."""

    def __init__(self, plain: bool = False) -> None:
        self._t0 = time.perf_counter()
        self._label = ""
        self._status: Any = None
        self._console: Any = None
        if not plain and _has_rich() and sys.stderr.isatty():
            from rich.console import Console

            self._console = Console(stderr=True)
            self._status = self._console.status("starting")
            self._status.start()

    def scenario(self, title: str, run: int, repeat: int) -> None:
        self._label = title if repeat == 1 else f"{title} (run {run + 1}/{repeat})"
        self.step("")

    def step(self, text: str) -> None:
        elapsed = time.perf_counter() - self._t0
        line = f"[{elapsed:7.1f} s] {self._label}" + (f" | {text}" if text else "")
        if self._status is not None:
            self._status.update(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def done(self, title: str, seconds: float, met: bool | None) -> None:
        line = f"{title}: {_verdict(met)} in {seconds:.1f} s"
        if self._console is not None:
            self._console.log(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()


def _verdict(met: bool | None) -> str:
    return {True: "MET", False: "MISSED", None: "not measured"}[met]


def overall(checks: Sequence[Check]) -> bool | None:
    """False if any check missed, True if all were met, else None."""
    if any(c.met is False for c in checks):
        return False
    if checks and all(c.met for c in checks):
        return True
    return None


def fmt(value: float | None) -> str:
    """Compact figure: 1.23M, 45.6k, 789, 12.3, 0.456."""
    if value is None or not math.isfinite(value):
        return "-"
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.2f}M"
    if a >= 1e4:
        return f"{value / 1e3:.0f}k"
    if a >= 1e3:
        return f"{value / 1e3:.1f}k"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: map them to null, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _columns(agg: Aggregate) -> list[str]:
    order = [p.name for p in PEERS]
    return sorted(agg.peers, key=lambda p: order.index(p) if p in order else len(order))


def scenario_result(
    scenario: Scenario, agg: Aggregate, checks: list[Check], seconds: float, repeat: int
) -> dict[str, Any]:
    """The JSON record of one scenario: medians, every run's figure, ratios, checks."""
    cases = []
    for case in agg.cases:
        results: dict[str, Any] = {}
        ratios: dict[str, float] = {}
        for peer in _columns(agg):
            cells = agg.samples.get((case, peer), [])
            if not cells:
                continue
            results[peer] = {
                "value": agg.value(case, peer),
                "runs": [c.value for c in cells],
                "na": agg.na(case, peer),
                "errors": [c.na for c in cells if c.na and c.na.startswith("error")],
                "extra": agg.extra(case, peer),
            }
            ratio = agg.ratio(case, peer)
            if peer != SUBJECT and ratio is not None:
                ratios[peer] = ratio
        cases.append({"case": case, "results": results, "ratios": ratios})
    record: dict[str, Any] = _finite(
        {
            "name": scenario.name,
            "title": scenario.title,
            "description": scenario.description,
            "target": scenario.target,
            "unit": scenario.unit,
            "higher_is_better": scenario.higher_is_better,
            "repeat": repeat,
            "cases": cases,
            "checks": [dataclasses.asdict(c) for c in checks],
            "met": overall(checks),
            "seconds": seconds,
        }
    )
    return record


def write_json(path: Path, meta: dict[str, Any], scenarios: list[dict[str, Any]]) -> None:
    document = {
        "meta": meta,
        "ratio_meaning": RATIO_MEANING,
        "scenarios": scenarios,
        "summary": {
            s["name"]: {
                "met": s["met"],
                "checks": [(c["description"], c["met"]) for c in s["checks"]],
            }
            for s in scenarios
        },
    }
    path.write_text(json.dumps(_finite(document), indent=2, allow_nan=False) + "\n")


def _cell_text(result: dict[str, Any], ratio: float | None, subject: bool) -> str:
    if result.get("na"):
        return str(result["na"])
    text = fmt(result.get("value"))
    if not subject and ratio is not None:
        text += f" ({ratio:.2f}x)"
    return text


def _check_text(check: dict[str, Any]) -> str:
    mark = {True: "met", False: "MISSED", None: "not measured"}[check["met"]]
    return f"{check['description']}: {fmt(check['measured'])} -> {mark}"


def scenario_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one scenario's table (``value (ratio x)`` per peer)."""
    columns: list[str] = []
    for case in result["cases"]:
        columns += [p for p in case["results"] if p not in columns]
    rows = []
    for case in result["cases"]:
        row = [case["case"]]
        for peer in columns:
            res = case["results"].get(peer)
            row.append(_cell_text(res, case["ratios"].get(peer), peer == SUBJECT) if res else "")
        rows.append(row)
    return ["case", *columns], rows


def print_table(results: list[dict[str, Any]], plain: bool = False) -> None:
    """Print one table per scenario, with its target and verdict, to stdout."""
    if not plain and _has_rich():
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        console = Console(width=max(140, Console().width))
        for result in results:
            header, rows = scenario_rows(result)
            table = Table(
                title=escape(f"{result['title']} [{result['unit']}]: {_verdict(result['met'])}"),
                caption=escape(
                    "target "
                    + result["target"]
                    + "\n"
                    + "\n".join(_check_text(c) for c in result["checks"])
                ),
                title_justify="left",
                caption_justify="left",
            )
            for name in header:
                table.add_column(name, overflow="fold")
            for row in rows:
                table.add_row(*(escape(cell) for cell in row))
            console.print(table)
        console.print(f"ratios: {RATIO_MEANING}")
        return
    for result in results:
        header, rows = scenario_rows(result)
        print(f"\n== {result['title']} [{result['unit']}]: {_verdict(result['met'])}")
        print(f"   target {result['target']}")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print("   " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
        for check in result["checks"]:
            print("   - " + _check_text(check))
    print(f"\nratios: {RATIO_MEANING}")


def markdown(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The results as Markdown (for BENCHMARKS.md): one table per scenario."""
    packages = ", ".join(f"{k} {v}" for k, v in meta["packages"].items())
    lines = [
        f"{meta['date'][:10]}, {meta['mode']} sizes, median of {meta['repeat']} run(s); "
        f"{meta['cpu_count']} CPUs, {meta['platform']}, Python {meta['python']}; {packages}"
        + (f"; commit {meta['git_commit']}" if meta.get("git_commit") else "")
        + ".",
    ]
    for result in results:
        header, rows = scenario_rows(result)
        lines += [
            "",
            f"**{result['title']}** ({result['unit']}): {_verdict(result['met'])}. "
            + "; ".join(_check_text(c) for c in result["checks"]),
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows),
        ]
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], directory: Path) -> list[Path]:
    """One grouped bar chart per scenario, ``bench-<name>.png`` in ``directory``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(
            f"--plot needs matplotlib ({exc}); install it with: pip install -e '.[plot]'"
        ) from exc
    written = []
    for result in results:
        header, _ = scenario_rows(result)
        peers, cases = header[1:], result["cases"]
        fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(cases) + 3), 4.0))
        width = 0.8 / max(1, len(peers))
        for i, peer in enumerate(peers):
            xs, ys = [], []
            for j, case in enumerate(cases):
                res = case["results"].get(peer)
                if res and res.get("value") is not None:
                    xs.append(j + i * width)
                    ys.append(res["value"])
            ax.bar(xs, ys, width, label=peer)
        ax.set_xticks([j + width * (len(peers) - 1) / 2 for j in range(len(cases))])
        ax.set_xticklabels([c["case"] for c in cases])
        ax.set_ylabel(result["unit"])
        ax.set_title(f"{result['title']}: {_verdict(result['met'])}", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = directory / f"bench-{result['name']}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
