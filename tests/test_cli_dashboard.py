"""`python -m supervisors dashboard`: the page and its API over a cluster read from Redis
and over a journal file, as a subprocess (run through asyncio, so that the node in this
process keeps its leases meanwhile)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from actors import Context, UserActor
from supervisors import RedisCluster, RestartPolicy, Runtime

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent


class Bot(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "boom":
            raise ValueError("boom")
        return message


async def dashboard(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start the command; its URL, from the first line it prints."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "supervisors", "dashboard", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    if not line.startswith("dashboard: "):
        await process.wait()
        stderr = await process.stderr.read() if process.stderr else b""
        raise AssertionError(f"{line!r} {stderr.decode()!r}")
    return process, line.split()[1].rstrip("/")


async def get(url: str, method: str = "GET") -> tuple[int, Any]:
    def call() -> tuple[int, Any]:
        request = urllib.request.Request(url, method=method)
        if method == "POST":
            request.add_header("Content-Type", "application/json")
            request.data = b"{}"
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read().decode()
            if response.headers.get_content_type() == "application/json":
                return response.status, json.loads(body)
            return response.status, body

    return await asyncio.get_running_loop().run_in_executor(None, call)


async def stopped(process: asyncio.subprocess.Process) -> tuple[int, str]:
    process.send_signal(signal.SIGINT)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    return int(process.returncode or 0), stderr.decode()


async def test_a_cluster_dashboard_shows_every_shard_and_purges(redis_url: str) -> None:
    cluster = RedisCluster(redis_url, n_shards=4, lease_ttl=2.0, tick=0.1, member_ttl=1.0,
                           join_grace=0.0, namespace="board")  # fmt: skip
    async with Runtime(Bot, cluster=cluster, restart=RestartPolicy(max_retries=0)) as rt:
        for _ in range(1000):
            if len(rt.stats()["cluster"]["shards_owned"]) == 4:
                break
            await asyncio.sleep(0.01)
        assert await rt.ask("k", "hello") == "hello"
        rt.tell("j", "boom")
        await rt.wait_idle()
        node = rt.stats()["cluster"]["node"]
        process, url = await dashboard("--redis", redis_url, "--prefix", "board", "--port", "0")
        try:
            status, page = await get(url + "/")
            assert status == 200
            assert "<title>inorder</title>" in page
            status, body = await get(url + "/api/status")
            assert [s["owner"] for s in body["cluster"]["shards"]] == [node] * 4
            _, body = await get(url + "/api/dead-letters")
            assert [d["key"] for d in body["dead_letters"]] == ["j"]
            _, body = await get(url + "/api/dead-letters/purge", "POST")
            assert body == {"purged": 1}
        finally:
            code, stderr = await stopped(process)
    assert code == 0, stderr
    assert "Traceback" not in stderr


async def test_a_journal_dashboard_lists_a_stopped_bots_letters(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"
    async with Runtime(Bot, store=path, restart=RestartPolicy(max_retries=0)) as rt:
        await rt.send("k", "boom")
        await rt.wait_idle()
    process, url = await dashboard("--journal", str(path), "--port", "0")
    try:
        _, body = await get(url + "/api/dead-letters")
        assert [(d["key"], d["reason"]) for d in body["dead_letters"]] == [("k", "failed")]
        _, body = await get(url + "/api/status")
        assert body["dead_letters"] == 1
    finally:
        code, stderr = await stopped(process)
    assert code == 0, stderr


async def run(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "supervisors", "dashboard", *args,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    return int(process.returncode or 0), stderr.decode()


async def test_clear_errors_and_exit_codes(tmp_path: Path, redis_url: str) -> None:
    code, stderr = await run("--redis", redis_url, "--host", "0.0.0.0", "--port", "0")
    assert code == 2
    assert "without a token" in stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        path = tmp_path / "bot.db"
        async with Runtime(Bot, store=path):
            pass
        code, stderr = await run("--journal", str(path), "--port", port)
    assert code == 3
    assert f"cannot serve on 127.0.0.1:{port}" in stderr
    code, stderr = await run("--journal", str(tmp_path / "missing.db"))
    assert code == 3
    assert "missing.db" in stderr
    code, stderr = await run()
    assert code == 2
    for output in (stderr,):
        assert "Traceback" not in output
