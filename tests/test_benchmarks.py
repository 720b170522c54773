"""The benchmark harness: its JSON is complete and sane, its peers are correct.

No timing threshold is checked here: figures depend on the machine. The
smoke test runs ``python -m benchmarks --quick`` in a subprocess and checks
that every scenario is there with positive, finite figures and ratios; the
peer tests check that the baselines keep per-user order and run one handler
at a time per user, so that the comparison is a fair one.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _cluster, _durable, _features
from benchmarks._cluster_child import Trace, read_trace
from benchmarks._failures import NO_FAILURE
from benchmarks._peers import INTERRUPT, AsyncioQueuePeer, LockPeer, PromiseQueuePeer
from benchmarks._pykka_peer import PykkaThreadPeer
from benchmarks._scenarios import SUBJECT, Params, all_scenarios, size_label
from benchmarks._sqlite_peer import SQLitePerMessagePeer

ROOT = Path(__file__).resolve().parent.parent
PEERS = [AsyncioQueuePeer, PromiseQueuePeer, LockPeer, PykkaThreadPeer, SQLitePerMessagePeer]


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _finite_non_negative(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the quick benchmark once for every test of this module."""
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--plain", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "P1 tell throughput" in proc.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.mark.timeout(150)
def test_quick_run_has_machine_info_and_parameters(quick_results: dict[str, Any]) -> None:
    meta = quick_results["meta"]
    assert meta["cpu_count"] >= 1
    assert meta["platform"]
    assert meta["python"]
    assert set(meta["packages"]) >= {"inorder", "pykka", "structlog", "msgpack"}
    assert meta["mode"] == "quick"
    assert meta["params"]["quick"] is True
    assert meta["runtime_import_error"] is None


@pytest.mark.timeout(150)
def test_quick_run_has_every_scenario(quick_results: dict[str, Any]) -> None:
    names = [s["name"] for s in quick_results["scenarios"]]
    assert names == [s.name for s in all_scenarios()]
    assert set(quick_results["summary"]) == set(names)


@pytest.mark.timeout(150)
def test_quick_run_figures_are_positive_and_finite(quick_results: dict[str, Any]) -> None:
    for scenario in quick_results["scenarios"]:
        assert scenario["target"]
        assert scenario["unit"]
        assert scenario["cases"], scenario["name"]
        for case in scenario["cases"]:
            results = case["results"]
            assert SUBJECT in results, (scenario["name"], case["case"])
            for peer, result in results.items():
                where = (scenario["name"], case["case"], peer)
                assert not result["errors"], where
                if result["na"] is not None:
                    assert result["na"].startswith("n/a ("), where
                    assert result["value"] is None, where
                    continue
                assert _positive(result["value"]), where
                assert all(_positive(v) for v in result["runs"]), where
                for name, value in result["extra"].items():
                    assert _finite_non_negative(value), (where, name)
            assert results[SUBJECT]["na"] is None, (scenario["name"], case["case"])


@pytest.mark.timeout(150)
def test_quick_run_has_ratios_and_checks(quick_results: dict[str, Any]) -> None:
    for scenario in quick_results["scenarios"]:
        assert scenario["checks"], scenario["name"]
        for check in scenario["checks"]:
            assert check["met"] in (True, False), (scenario["name"], check)
            assert math.isfinite(check["measured"])
        assert scenario["met"] in (True, False)
        for case in scenario["cases"]:
            measured = [
                p for p, r in case["results"].items() if p != SUBJECT and r["value"] is not None
            ]
            assert measured, (scenario["name"], case["case"])
            assert set(case["ratios"]) == set(measured), (scenario["name"], case["case"])
            assert all(_positive(r) for r in case["ratios"].values())


@pytest.mark.timeout(150)
def test_quick_run_measures_keys_that_fail_once(quick_results: dict[str, Any]) -> None:
    """failing_keys (issue 8 #10): every quick size, both columns, counts that add up."""
    (scenario,) = [s for s in quick_results["scenarios"] if s["name"] == "failing_keys"]
    sizes = Params.for_quick().failing_keys
    assert [c["case"] for c in scenario["cases"]] == [f"{size_label(n)} keys" for n in sizes]
    for keys, case in zip(sizes, scenario["cases"], strict=True):
        for column, restarts in ((SUBJECT, keys), (NO_FAILURE, 0)):
            result = case["results"][column]
            where = (case["case"], column)
            assert _positive(result["value"]), where
            extra = result["extra"]
            assert extra["keys"] == extra["idle_stops"] == keys, where
            assert extra["restarts"] == restarts, where
            assert _positive(extra["cpu_seconds"]), where
            assert 0 < extra["release_seconds"] <= extra["seconds"], where
            assert extra["fail_seconds"] <= extra["seconds"], where
        assert _positive(case["ratios"][NO_FAILURE]), case["case"]
    (check,) = scenario["checks"]
    assert _positive(check["measured"])


@pytest.mark.timeout(150)
def test_quick_run_measures_the_journal(quick_results: dict[str, Any]) -> None:
    """durable (issue 9): every size and the send case, three columns, sane extras."""
    (scenario,) = [s for s in quick_results["scenarios"] if s["name"] == "durable"]
    sizes = Params.for_quick().users
    cases = [_durable.throughput_case(n) for n in sizes] + [_durable.send_case()]
    assert [c["case"] for c in scenario["cases"]] == cases
    for case in scenario["cases"]:
        results, where = case["results"], case["case"]
        assert set(results) == set(_durable.COLUMNS), where
        assert all(_positive(r["value"]) for r in results.values()), where
        assert set(case["ratios"]) == {_durable.IN_MEMORY, _durable.PEER}, where
        assert all(_positive(r) for r in case["ratios"].values()), where
        durable = results[SUBJECT]["extra"]
        assert durable["left_in_journal"] == 0, where  # every message acknowledged
        assert durable["closed_by_runtime"] == 1, where
    send = scenario["cases"][-1]["results"]
    for column, result in send.items():
        extra = result["extra"]
        assert extra["p50_ms"] <= result["value"] <= extra["max_ms"], column
        assert extra["samples"] == _durable.SEND_RATE * _durable.QUICK_SEND_SECONDS, column
        assert _positive(extra["achieved_msg_per_s"]), column
    throughput = scenario["cases"][0]["results"][SUBJECT]["extra"]
    assert throughput["commits"] >= 1
    assert throughput["settled_s"] >= throughput["seconds"] > 0
    assert [c["measured"] is not None for c in scenario["checks"]] == [True] * 3


@pytest.mark.timeout(150)
def test_quick_run_measures_the_cluster(quick_results: dict[str, Any]) -> None:
    """cluster (issue 10): every case and column; what was handled adds up; no timing."""
    (scenario,) = [s for s in quick_results["scenarios"] if s["name"] == "cluster"]
    one, two = _cluster.throughput_case(1), _cluster.throughput_case(2)
    cases = {c["case"]: c["results"] for c in scenario["cases"]}
    assert list(cases) == [
        one,
        two,
        _cluster.CPU_CASE,
        _cluster.COMMANDS_CASE,
        _cluster.FAILOVER_CASE,
    ]
    for name, results in cases.items():
        assert set(results) == set(_cluster.COLUMNS), name
        assert all(_positive(r["value"]) for r in results.values()), name
    sizes = _cluster.Sizes.of(Params.for_quick())
    for processes, case in ((1, one), (2, two)):
        for column, result in cases[case].items():
            extra, where = result["extra"], (case, column)
            assert extra["processes"] == processes, where
            assert extra["users"] == sizes.users, where
            assert extra["messages"] > 0, where
            assert extra["messages"] % (sizes.users * _cluster.BURST) == 0, where
            if processes == 1:  # no kill: nothing lost, nothing twice, one worker in order
                assert extra["lost"] == extra["duplicates"] == 0, where
                assert extra["order_violations"] == 0, where
    for case in (one, two):  # the runtime and the list under a lock keep per-user order
        for column in (SUBJECT, _cluster.LIST_LOCK):
            assert cases[case][column]["extra"]["order_violations"] == 0, (case, column)
    runtime = cases[two][SUBJECT]["extra"]
    assert runtime["lost"] == 0  # a kill -9 loses nothing; what was in flight comes again
    assert runtime["duplicates"] <= runtime["handled_after_kill"]
    commands = cases[_cluster.COMMANDS_CASE][SUBJECT]
    assert abs(commands["extra"]["cmd_xadd_per_msg"] - 1.0) < 0.01  # one XADD per message
    assert commands["value"] == pytest.approx(sum(commands["extra"].values()))
    failover = cases[_cluster.FAILOVER_CASE][SUBJECT]["extra"]
    assert failover["lease_ttl"] == sizes.lease_ttl
    assert failover["handled_after_kill"] > 0
    assert failover["load_rate"] == _cluster.LOAD_RATE
    assert len(scenario["checks"]) == 6
    assert all(c["measured"] is not None for c in scenario["checks"])


@pytest.mark.timeout(150)
def test_quick_run_measures_the_chat_features(quick_results: dict[str, Any]) -> None:
    """features: three cases, on and off; every message handled, the ids remembered."""
    (scenario,) = [s for s in quick_results["scenarios"] if s["name"] == "features"]
    params = Params.for_quick()
    collect, dedup, limited = (
        _features.collect_case(params),
        _features.dedup_case(params),
        _features.limited_case(),
    )
    cases = {c["case"]: c for c in scenario["cases"]}
    assert list(cases) == [collect, dedup, limited]
    for name, case in cases.items():
        assert set(case["results"]) == set(_features.COLUMNS), name
        assert all(_positive(r["value"]) for r in case["results"].values()), name
        assert set(case["ratios"]) == {_features.OFF}, name
        assert _positive(case["ratios"][_features.OFF]), name
    users, burst = params.burst_users, _features.BURST
    for column, turns in ((SUBJECT, 2 * users), (_features.OFF, (1 + burst) * users)):
        extra = cases[collect]["results"][column]["extra"]
        assert extra["messages"] == (1 + burst) * users, column
        assert extra["turns"] == turns, column  # collect: the burst is one turn
    with_ids = cases[dedup]["results"][SUBJECT]["extra"]
    assert with_ids["duplicates_refused"] == 2
    assert with_ids["bytes_per_id"] > with_ids["id_str_bytes"] > 0  # the window holds more
    assert "bytes_per_id" not in cases[dedup]["results"][_features.OFF]["extra"]
    for column, result in cases[limited]["results"].items():
        extra = result["extra"]
        assert extra["p50_ms"] <= result["value"] <= extra["max_ms"], column
        assert extra["samples"] == _features.ASK_RATE * _features.QUICK_SECONDS, column
        expected = _features.LIMITED_KEYS * _features.LIMITED_BURST
        assert extra["limited_messages"] == expected, column
    # The limit at work: a token bucket of one never lets two turns closer than its period.
    gap = cases[limited]["results"][SUBJECT]["extra"]["limited_min_gap_ms"]
    assert gap >= _features.LIMIT_PER * 1e3 * 0.99
    assert len(scenario["checks"]) == 4
    assert all(c["measured"] is not None for c in scenario["checks"])


@pytest.mark.parametrize("column", _features.COLUMNS)
async def test_features_workloads_handle_every_message(column: str) -> None:
    """The features' workloads at small sizes: counts that add up in both columns."""
    rate, collect = await _features.collect_bursts(column, users=20, burst=5)
    assert rate > 0
    assert collect["messages"] == 20 * 6
    assert collect["turns"] == (2 if column == SUBJECT else 6) * 20
    rate, dedup = await _features.dedup_tell(column, users=10, messages=2_000)
    assert rate > 0
    assert dedup["messages"] == 2_000
    if column == SUBJECT:
        assert dedup["duplicates_refused"] == 2
        assert dedup["ids_remembered"] == 4_000
        assert dedup["bytes_per_id"] > 0
    p99, limited = await _features.limited_neighbours(column, seconds=0.2, free=10, limited=10)
    assert 0 < limited["p50_ms"] <= p99 <= limited["max_ms"]
    assert limited["samples"] == 200
    assert limited["limited_messages"] == 10 * _features.LIMITED_BURST


def test_cluster_script_reports_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks.cluster (one measurement, its own embedded server) runs and prints it."""
    from benchmarks.cluster import main

    main(["--quick", "--processes", "1", "--users", "50", "--messages", "800"])

    out = capsys.readouterr().out
    assert out.startswith("inorder, 1 process(es)")
    for name in ("msg_per_s", "cpu_us_per_msg", "commands_per_msg", "order_violations"):
        assert f"  {name} " in out
    assert "    xadd " in out


def test_cluster_analysis_counts_order_duplicates_losses_and_the_wait_after_a_kill() -> None:
    """The records of several processes, merged by time (analyse is the scenario's judge)."""
    workload = _cluster.Workload(2)
    workload.warm_up()  # (0, 0), (1, 0)
    for _ in range(3):
        workload.next(0)  # (0, 1) .. (0, 3)
    workload.next(1)  # (1, 1): never handled
    workload.sent_at.update({(0, 2): 4.5, (0, 3): 5.0})
    records = [
        (0, 0, 1.0),
        (1, 0, 1.5),
        (0, 1, 2.0),
        (0, 3, 6.0),  # after the kill at 4.0, sent at 5.0: waited 1.0
        (0, 2, 7.5),  # out of order (3 came first), sent at 4.5: waited 3.0
        (0, 3, 8.0),  # handled twice
    ]
    out = _cluster.analyse(list(reversed(records)), workload, kill_at=4.0)
    assert out["order_violations"] == 1
    assert out["duplicates"] == 1
    assert out["lost"] == 1
    assert out["failover_s"] == pytest.approx(3.0)
    assert out["handled_after_kill"] == 2
    assert "failover_s" not in _cluster.analyse(records, workload, kill_at=None)


def test_cluster_trace_written_through_survives_without_close(tmp_path: Path) -> None:
    """After `sync`, a record is in the file at once: a process killed with SIGKILL
    leaves every message it handled (buffered ones are written when it switches)."""
    path = tmp_path / "trace.bin"
    trace = Trace(str(path))
    trace.record(7, 1)
    assert read_trace(str(path)) == []
    trace.write_through()
    trace.record(7, 2)
    assert [(u, s) for u, s, _ in read_trace(str(path))] == [(7, 1), (7, 2)]
    trace.close()
    assert trace.count == 2


@pytest.mark.parametrize("column", [*_durable.COLUMNS, _durable.STUB])
async def test_durable_measurements_clean_up_their_files(column: str, tmp_path: Path) -> None:
    """Each column's journal or database lives in a temporary directory, removed after."""
    rate, extra = await _durable.tell_throughput(
        column, users=20, messages=400, directory=str(tmp_path)
    )
    assert rate > 0
    assert extra["messages"] == 400
    assert os.listdir(tmp_path) == []
    p99, latency = await _durable.send_latency(
        column, rate=500, users=10, seconds=0.1, directory=str(tmp_path)
    )
    assert 0 < latency["p50_ms"] <= p99 <= latency["max_ms"]
    assert latency["samples"] == 50
    assert os.listdir(tmp_path) == []
    if column == SUBJECT:
        assert extra["left_in_journal"] == latency["left_in_journal"] == 0


async def test_sqlite_peer_keeps_a_row_per_message_until_handled(tmp_path: Path) -> None:
    """The peer journals by hand: a committed row from tell until the handler has run."""
    rows: list[int] = []
    release = asyncio.Event()

    async def handler(key: str, message: int) -> int:
        rows.append(peer.rows())
        await release.wait()
        return message

    peer = SQLitePerMessagePeer(handler, directory=str(tmp_path))
    async with peer:
        await peer.send("a", 1)
        peer.tell("b", 2)
        reply = peer.ask("a", 3)
        assert peer.rows() == 3
        release.set()
        assert await reply == 3
        assert peer.rows() == 0
        assert peer.path.parent.parent == tmp_path
    assert len(rows) == 3
    assert rows[0] == 3  # all three committed before the first handler ran
    assert os.listdir(tmp_path) == []


# -- the peers are fair baselines ------------------------------------------------


@pytest.mark.parametrize("peer_cls", PEERS, ids=lambda c: c.name)
async def test_peer_keeps_order_and_one_at_a_time(peer_cls: Any) -> None:
    seen: dict[str, list[int]] = {}
    running: set[str] = set()
    overlaps: list[str] = []

    async def handler(key: str, message: int) -> int:
        if key in running:
            overlaps.append(key)
        running.add(key)
        if message % 3 == 0:
            await asyncio.sleep(0)
        seen.setdefault(key, []).append(message)
        running.discard(key)
        return message * 2

    def sync_handler(key: str, message: int) -> int:
        seen.setdefault(key, []).append(message)
        return message * 2

    async with peer_cls(handler, sync_handler=sync_handler) as peer:
        keys = ["a", "b", "c"]
        for i in range(60):
            peer.tell(keys[i % 3], i)
        assert await peer.ask("a", 60) == 120
    assert seen["a"] == list(range(0, 61, 3))
    assert seen["b"] == list(range(1, 60, 3))
    assert not overlaps


@pytest.mark.parametrize(
    "peer_cls", [p for p in PEERS if INTERRUPT in p.capabilities], ids=lambda c: c.name
)
async def test_peer_interrupt_cancels_the_running_handler(peer_cls: Any) -> None:
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def handler(key: str, message: str) -> str:
        if message == "long":
            started.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return message

    async with peer_cls(handler) as peer:
        peer.tell("u", "long")
        await started.wait()
        reply = peer.ask("u", "stop", priority=1, interrupt=True)
        await asyncio.wait_for(cancelled.wait(), 5)
        assert await reply == "stop"


@pytest.mark.parametrize("peer_cls", [AsyncioQueuePeer, PromiseQueuePeer, LockPeer])
async def test_peer_releases_idle_users(peer_cls: Any) -> None:
    async def handler(key: str, message: int) -> None:
        return None

    async with peer_cls(handler, idle_timeout=0.05) as peer:
        await asyncio.gather(*(peer.ask(f"u{i}", i) for i in range(10)))
        for _ in range(100):
            if peer.live() == 0:
                break
            await asyncio.sleep(0.01)
        assert peer.live() == 0


async def test_floor_script_measures_the_floor_and_promise_queue() -> None:
    """benchmarks.floor (the harness with no runtime at all) runs and reports sane rates."""
    from benchmarks.floor import measure

    results = await measure(users=10, messages=2_000, repeat=1)

    assert set(results) == {"p1_tell", "p2_ask"}
    for rates in results.values():
        assert set(rates) == {"floor", "promise-queue"}
        assert all(rate > 0 and math.isfinite(rate) for rate in rates.values())


def test_failing_keys_script_reports_per_key_costs(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks.failing_keys (issue 8 #10, runtime alone) runs and prints every size."""
    from benchmarks.failing_keys import main

    main(["--keys", "100,300"])

    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5, out
    assert all("µs CPU/key" in line for line in out[:4])
    assert out[-1].startswith("per-key cost at 300 keys over 100: ")


async def test_failing_keys_fail_restart_and_are_all_released() -> None:
    """The scenario's measurement: each key fails once, restarts, stops idle, is forgotten."""
    from benchmarks._failures import failing_keys

    failing = await failing_keys(200, fail=True)
    healthy = await failing_keys(200, fail=False)

    assert failing["keys"] == failing["restarts"] == failing["idle_stops"] == 200
    assert 0 < failing["fail_seconds"] <= failing["seconds"]
    assert healthy["restarts"] == healthy["fail_seconds"] == 0
    assert healthy["idle_stops"] == 200
    for r in (failing, healthy):
        assert all(math.isfinite(v) and v >= 0 for v in r.values())
        assert r["cpu_seconds"] > 0


async def test_startup_script_reports_an_ordered_timeline() -> None:
    """benchmarks.startup (P7's start-up, runtime alone) runs; its timeline is in order."""
    from benchmarks.startup import timeline

    t = await timeline(users=200, messages=2, seed=1)

    assert 0 < t["tell_loop_end"] <= t["first_start"] <= t["median_start"] <= t["last_start"]
    assert t["first_start"] <= t["ideal_user_start"] <= t["last_start"]
    assert t["us_per_user_after_tells"] > 0


@pytest.mark.timeout(150)
def test_quick_run_measures_the_observers(quick_results: dict[str, Any]) -> None:
    """The observe scenario: tell and ask, each with no observer, Metrics and Tracing."""
    (scenario,) = [s for s in quick_results["scenarios"] if s["name"] == "observe"]
    assert len(scenario["cases"]) == 2
    for case in scenario["cases"]:
        results = case["results"]
        assert set(results) == {SUBJECT, "metrics", "tracing"}
        for result in results.values():
            assert result["na"] is None, (case["case"], result)
            assert _positive(result["value"])
            assert result["extra"]["messages"] >= 1_000
    assert [c["measured"] is not None for c in scenario["checks"]] == [True] * 4


@pytest.mark.parametrize("column", ["inorder", "metrics", "tracing"])
async def test_the_observe_workloads_handle_every_message(column: str) -> None:
    """What the observe scenario times, at a small size, under each column's observers."""
    from benchmarks import _observe

    for measure in (_observe.observed_tell, _observe.observed_ask):
        rate, extra = await measure(column, users=10, messages=200)
        assert _positive(rate)
        assert extra["messages"] == 200
