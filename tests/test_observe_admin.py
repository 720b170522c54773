"""The admin endpoint over real HTTP on 127.0.0.1, and the observers' lifecycle."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from actors import Context, SQLiteJournal, UserActor
from supervisors import RestartPolicy, Runtime
from supervisors.observe import AdminServer, RuntimeSource, Source

TOKEN = "a-token-of-enough-length"
RUNS: list[Any] = []


class Flaky(UserActor):
    """Fails "boom" until `RUNS` says otherwise: a dead letter that a redelivery fixes."""

    async def on_message(self, message: Any, ctx: Context) -> Any:
        RUNS.append(message)
        if message == "boom" and "fixed" not in RUNS:
            raise ValueError("boom")
        if message == "wait":
            await asyncio.Event().wait()
        return message


@pytest.fixture(autouse=True)
def _fresh() -> None:
    RUNS.clear()


def runtime(**options: Any) -> Runtime:
    # No backoff: a key restarts at once, so wait_idle() covers a redelivered message.
    return Runtime(Flaky, restart=RestartPolicy(max_retries=0, backoff_min=0.0), **options)


async def request(
    server: AdminServer, method: str, path: str, token: str | None = None, **kw: Any
) -> tuple[int, Any]:
    headers = dict(kw.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, headers=headers, **kw) as response,
    ):
        if response.content_type == "application/json":
            return response.status, await response.json()
        return response.status, await response.text()


async def test_status_dead_letters_redeliver_and_purge() -> None:
    admin = AdminServer(port=0)
    async with runtime(observe=[admin]) as rt:
        assert admin.port != 0
        rt.tell("alice", "hello")
        rt.tell("bob", "boom")
        rt.tell("carol", "boom")
        await rt.wait_idle()
        status, body = await request(admin, "GET", "/api/status")
        assert status == 200
        assert body["state"] == "running"
        assert body["handled"] == 1
        assert body["failed"] == 2
        assert body["dead_letters_kept"] == 2
        assert body["now"] > 0
        status, body = await request(admin, "GET", "/api/dead-letters")
        letters = body["dead_letters"]
        assert [(d["key"], d["reason"], d["error"]) for d in letters] == [
            ("bob", "failed", "ValueError: boom"),
            ("carol", "failed", "ValueError: boom"),
        ]
        RUNS.append("fixed")
        bob = letters[0]["id"]
        status, body = await request(admin, "POST", f"/api/dead-letters/{bob}/redeliver", json={})
        assert (status, body) == (200, {"redelivered": bob})
        await rt.wait_idle()
        assert RUNS.count("boom") == 3  # bob's ran again, and was handled this time
        assert [d.key for d in rt.dead_letters()] == ["carol"]
        status, body = await request(admin, "POST", f"/api/dead-letters/{bob}/redeliver", json={})
        assert status == 404
        assert "no dead letter" in body["error"]
        status, body = await request(admin, "POST", "/api/dead-letters/purge", json={})
        assert (status, body) == (200, {"purged": 1})
        assert rt.dead_letters() == []
        status, page = await request(admin, "GET", "/")
        assert status == 200
        assert "<title>inorder</title>" in page
    with pytest.raises(aiohttp.ClientConnectionError):  # closed with the runtime
        await request(admin, "GET", "/api/status")


async def test_a_token_guards_every_route_but_the_page() -> None:
    admin = AdminServer(port=0, token=TOKEN)
    async with runtime(observe=[admin]):
        assert (await request(admin, "GET", "/api/status"))[0] == 401
        assert (await request(admin, "GET", "/api/status", "wrong-token-wrong-token"))[0] == 401
        assert (await request(admin, "GET", "/api/status", TOKEN))[0] == 200
        assert (await request(admin, "POST", "/api/dead-letters/purge", json={}))[0] == 401
        assert (await request(admin, "GET", "/metrics"))[0] == 401
        assert (await request(admin, "GET", "/"))[0] == 200  # no data in it


async def test_another_site_cannot_make_a_browser_purge() -> None:
    admin = AdminServer(port=0)
    async with runtime(observe=[admin]) as rt:
        rt.tell("bob", "boom")
        await rt.wait_idle()
        # A form post from anywhere is not JSON; a cross-origin fetch is refused.
        status, _ = await request(admin, "POST", "/api/dead-letters/purge", data="x=1")
        assert status == 415
        status, body = await request(
            admin, "POST", "/api/dead-letters/purge", json={},
            headers={"Origin": "http://evil.example"},
        )  # fmt: skip
        assert status == 403
        assert "cross-origin" in body["error"]
        status, body = await request(admin, "POST", "/api/dead-letters/purge", json={"ids": [1]})
        assert status == 400
        assert len(rt.dead_letters()) == 1


async def test_metrics_are_served_by_the_endpoint() -> None:
    admin = AdminServer(port=0)
    async with runtime(observe=[admin]) as rt:
        await rt.ask("k", 1)
        status, text = await request(admin, "GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["inorder_run_seconds"].type == "histogram"
    handled = [s for s in families["inorder_messages"].samples if s.labels["outcome"] == "handled"]
    assert handled[0].value == 1


async def test_journaled_letters_are_redelivered_and_purged_in_the_journal(
    tmp_path: Path,
) -> None:
    path = tmp_path / "bot.db"
    admin = AdminServer(port=0)
    async with runtime(store=path, observe=[admin]) as rt:
        for key in ("a", "b", "c"):
            await rt.send(key, "boom")
        await rt.wait_idle()
        _, body = await request(admin, "GET", "/api/dead-letters")
        ids = [d["id"] for d in body["dead_letters"]]
        assert all(i.isdigit() for i in ids)  # the journal's own ids
        RUNS.append("fixed")
        assert (await request(admin, "POST", f"/api/dead-letters/{ids[0]}/redeliver", json={}))[
            0
        ] == 200
        await rt.wait_idle()
        _, body = await request(admin, "POST", "/api/dead-letters/purge", json={"ids": [ids[1]]})
        assert body == {"purged": 1}
    with SQLiteJournal(path) as journal:
        assert [d.key for d in journal.dead_letters()] == ["c"]
        assert list(journal.pending()) == []


async def test_a_taken_port_fails_the_start_with_nothing_started() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rt = runtime(observe=[AdminServer(port=port)])
        with pytest.raises(OSError, match="address already in use"):
            await rt.start()
        assert rt.stats()["state"] == "new"


async def test_bad_arguments_fail_at_the_call() -> None:
    with pytest.raises(ValueError, match="without a token"):
        AdminServer(host="0.0.0.0")
    AdminServer(host="0.0.0.0", token=TOKEN)  # allowed, with a token
    AdminServer(host="::1")
    with pytest.raises(ValueError, match="16 characters"):
        AdminServer(token="short")
    with pytest.raises(ValueError, match="port"):
        AdminServer(port=70000)
    with pytest.raises(TypeError, match="Source"):
        AdminServer(source=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refresh"):
        AdminServer(refresh=0)
    with pytest.raises(RuntimeError, match="source"):
        await AdminServer(port=0).start()
    with pytest.raises(TypeError, match="observe must be a list"):
        runtime(observe=AdminServer())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="observers"):
        runtime(observe=[object()])
    admin = AdminServer()
    with pytest.raises(ValueError, match="twice"):
        runtime(observe=[admin, admin])


class Broken:
    """A Source whose reads fail: the endpoint says so and keeps serving."""

    async def status(self) -> dict[str, Any]:
        raise ConnectionError("redis is down")

    async def dead_letters(self) -> list[dict[str, Any]]:
        return []

    async def redeliver(self, letter_id: str) -> bool:
        return False

    async def purge(self, ids: list[str] | None = None) -> int:
        return 0


async def test_a_standalone_server_over_a_source_reports_its_failures() -> None:
    assert isinstance(Broken(), Source)
    async with AdminServer(port=0, source=Broken()) as admin:
        status, body = await request(admin, "GET", "/api/status")
        assert status == 500
        assert body["error"] == "ConnectionError: redis is down"
        assert (await request(admin, "GET", "/api/dead-letters"))[1] == {"dead_letters": []}
        assert (await request(admin, "GET", "/metrics"))[0] == 404
        with pytest.raises(RuntimeError, match="already serving"):
            await admin.start()


class Recorder:
    def __init__(self, name: str, calls: list[str], fail: str = "") -> None:
        self.name, self.calls, self.fail = name, calls, fail

    async def open(self, runtime: Runtime) -> None:
        self.calls.append(f"open {self.name} {runtime.stats()['state']}")
        if self.fail == "open":
            raise OSError(f"{self.name} cannot open")

    def attached(self, runtime: Runtime) -> None:
        self.calls.append(f"attached {self.name} {runtime.stats()['state']}")

    async def close(self) -> None:
        self.calls.append(f"close {self.name}")
        if self.fail == "close":
            raise RuntimeError(f"{self.name} cannot close")


async def test_observers_are_told_in_order_and_a_failing_one_stops_nothing() -> None:
    calls: list[str] = []
    rt = runtime(observe=[Recorder("a", calls), Recorder("b", calls, fail="close")])
    with capture_logs() as logs:
        async with rt:
            calls.append("running")
    assert calls == [
        "open a new", "open b new", "attached a new", "attached b new", "running",
        "close b", "close a",
    ]  # fmt: skip
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["observer_close_failed"]
    calls.clear()
    rt = runtime(observe=[Recorder("a", calls), Recorder("b", calls, fail="open")])
    with pytest.raises(OSError, match="b cannot open"):
        await rt.start()
    assert calls == ["open a new", "open b new", "close a"]


async def test_a_failed_start_closes_the_observers(tmp_path: Path) -> None:
    calls: list[str] = []
    foreign = tmp_path / "not-a-journal.db"
    foreign.write_text("hello")
    rt = runtime(store=foreign, observe=[Recorder("a", calls)])
    with pytest.raises(Exception, match="not-a-journal"):
        await rt.start()
    assert calls == ["open a new", "close a"]


async def test_the_source_of_a_runtime_before_its_start() -> None:
    source = RuntimeSource(runtime())
    assert (await source.status())["state"] == "new"
    assert await source.dead_letters() == []
    assert await source.redeliver("m1") is False
    assert await source.purge() == 0


def test_the_dashboard_demo_serves_and_stops() -> None:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "examples.dashboard_demo", "--port", "0", "--seconds", "1"],
        cwd=root, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    first, last = done.stdout.splitlines()[0], done.stdout.splitlines()[-1]
    assert first.startswith("dashboard: http://127.0.0.1:")
    assert last.startswith("stopped: ")
    assert "Traceback" not in done.stderr
