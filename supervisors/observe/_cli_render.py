"""The command line's tables (rich): a node's status, a cluster's, dead letters, a journal.

Each function takes the plain dicts a `Source` gives (or the journal's report)
and returns one rich renderable, so that `--watch` can redraw it in place.
Nothing here reads a target; `--json` output bypasses this module.
"""

from __future__ import annotations

import datetime
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

__all__ = ["cluster_status", "journal_report", "letters_table", "node_status"]

_OUTCOMES = ("accepted", "handled", "failed", "interrupted", "dropped")


def _figures(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, str(value))
    return table


def _latency(status: dict[str, Any]) -> Table:
    table = Table(title="latency (ms)", title_justify="left")
    for column in ("", "count", "p50", "p90", "p99", "max"):
        table.add_column(column, justify="right" if column else "left")
    for name in ("wait_ms", "run_ms"):
        figures = status.get(name) or {}
        cells = [str(figures.get("count", 0))]
        cells += [f"{float(figures.get(p, 0.0)):.1f}" for p in ("p50", "p90", "p99", "max")]
        table.add_row(name.removesuffix("_ms"), *cells)
    return table


def _keys(title: str, by_key: dict[str, Any], unit: str) -> Table | None:
    if not by_key:
        return None
    table = Table(title=title, title_justify="left")
    table.add_column("key")
    table.add_column(unit, justify="right")
    for key, value in by_key.items():
        table.add_row(str(key), str(value))
    return table


def _rates(rates: dict[str, float] | None) -> str:
    if not rates:
        return "-"
    return "  ".join(f"{name} {float(rates.get(name, 0.0)):.1f}/s" for name in _OUTCOMES)


def node_status(status: dict[str, Any], rates: dict[str, float] | None) -> Group:
    """One runtime (`--url`): its figures, rates, latencies, deepest and longest keys."""
    rows: list[tuple[str, Any]] = [
        (name, status.get(name, "-"))
        for name in ("state", "live_actors", "known_keys", "pending", "in_flight", "overrunning")
    ]
    rows += [(name, status.get(name, "-")) for name in (*_OUTCOMES, "dead_letters", "restarts")]
    rows.append(("rates", _rates(rates)))
    parts: list[Any] = [_figures("runtime", rows), _latency(status)]
    keys = (
        _keys("deepest keys", status.get("pending_by_key") or {}, "pending"),
        _keys("longest running", status.get("running_by_key") or {}, "seconds"),
    )
    parts += [table for table in keys if table is not None]
    cluster = status.get("cluster")
    if isinstance(cluster, dict):
        lag = cluster.get("lag") or {}
        rows = [(name, cluster.get(name)) for name in ("node", "role", "in_flight")]
        rows.append(("shards owned", ", ".join(map(str, cluster.get("shards_owned", []))) or "-"))
        rows.append(("lag", ", ".join(f"{s}: {n}" for s, n in lag.items()) or "-"))
        rows += [
            (name, value)
            for name, value in cluster.items()
            if isinstance(value, int) and name != "in_flight"
        ]
        parts.append(_figures("cluster node", rows))
    if isinstance(status.get("journal"), dict):
        parts.append(_figures("journal", list(status["journal"].items())))
    return Group(*parts)


def cluster_status(status: dict[str, Any]) -> Group:
    """A cluster (`--redis`): totals over the nodes, the nodes, the shards, the deepest keys."""
    cluster = status["cluster"]
    rows: list[tuple[str, Any]] = [
        ("namespace", cluster["namespace"]),
        ("nodes alive", sum(1 for n in cluster["nodes"] if n["alive"])),
        ("shards owned", f"{cluster['owned']} of {cluster['n_shards']}"),
        ("lag (not yet acknowledged)", cluster["total_lag"]),
        ("delivered, not acknowledged", cluster["stream_pending"]),
        ("dead letters kept", cluster["stored_dead_letters"]),
    ]
    rows += [(name, status.get(name, 0)) for name in ("live_actors", "pending", "in_flight")]
    rows += [(name, status.get(name, 0)) for name in (*_OUTCOMES, "restarts")]
    rows += [(name, cluster.get(name, 0)) for name in ("takeovers", "fenced", "lost")]
    rows.append(("rates", _rates(status.get("rates"))))
    parts: list[Any] = [_figures("cluster", rows), _latency(status)]
    nodes = Table(title="nodes", title_justify="left")
    for column in (
        "node",
        "alive",
        "summary age",
        "live",
        "pending",
        "handled/s",
        "failed/s",
        "shards",
    ):
        nodes.add_column(column, justify="left" if column in ("node", "shards") else "right")
    for node in cluster["nodes"]:
        summary = node["summary"] or {}
        rates = summary.get("rates") or {}
        age = node["seen_ms_ago"]
        nodes.add_row(
            node["node"],
            "yes" if node["alive"] else "gone",
            "-" if age is None else f"{age / 1000:.1f} s",
            str(summary.get("live_actors", "-")),
            str(summary.get("pending", "-")),
            f"{float(rates.get('handled', 0.0)):.1f}",
            f"{float(rates.get('failed', 0.0)):.1f}",
            _ranges(summary.get("shards_owned") or []),
        )
    parts.append(nodes)
    shards = Table(title="shards", title_justify="left")
    for column in ("shard", "owner", "epoch", "lease left", "lag", "pending", "dead letters"):
        shards.add_column(column, justify="left" if column == "owner" else "right")
    for shard in cluster["shards"]:
        lease = shard["lease_ms"]
        shards.add_row(
            str(shard["shard"]),
            shard["owner"] or Text("none", style="red"),
            str(shard["epoch"]),
            "-" if lease is None else f"{lease / 1000:.1f} s",
            str(shard["lag"]),
            str(shard["pending"]),
            str(shard["dead_letters"]),
        )
    parts.append(shards)
    deepest = _keys("deepest keys", status.get("pending_by_key") or {}, "pending")
    if deepest is not None:
        parts.append(deepest)
    return Group(*parts)


def _ranges(indexes: list[int]) -> str:
    """[0, 1, 2, 5] as "0-2, 5"."""
    out: list[str] = []
    for index in sorted(indexes):
        if out and out[-1].split("-")[-1] == str(index - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{index}"
        else:
            out.append(str(index))
    return ", ".join(out) or "-"


def letters_table(letters: list[dict[str, Any]]) -> Table:
    table = Table(title=f"dead letters: {len(letters)}", title_justify="left")
    for column in ("id", "key", "reason", "attempts", "priority", "added", "error", "message"):
        table.add_column(column, overflow="fold")
    for letter in letters:
        added = letter.get("added_at")
        when = "-"
        if isinstance(added, int | float):
            when = datetime.datetime.fromtimestamp(added).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            str(letter.get("id")),
            str(letter.get("key")),
            str(letter.get("reason")),
            str(letter.get("attempts")),
            str(letter.get("priority")),
            when,
            str(letter.get("error") or "-"),
            str(letter.get("message")),
        )
    return table


def journal_report(report: dict[str, Any], problems: list[str]) -> Table:
    verdict = Text("ok", style="green") if not problems else Text(problems[0], style="red")
    rows: list[tuple[str, Any]] = [("verdict", verdict)]
    rows += [(name.replace("_", " "), value) for name, value in report.items()]
    table = Table(title="journal", show_header=False, title_justify="left")
    table.add_column("figure", style="bold")
    table.add_column("value")
    for name, value in rows:
        table.add_row(name, value if isinstance(value, Text) else str(value))
    return table
