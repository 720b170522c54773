"""The operations command line as a subprocess: journal files made by real runtimes, an
admin endpoint (a stdlib stub speaking the admin API), and every error path: one line
on stderr, the documented exit code, never a traceback.

The cluster side (`--redis`, on the embedded Valkey) is in test_cluster_inspect.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from actors import Context, SQLiteJournal, UserActor
from supervisors import RestartPolicy, Runtime
from tests.helpers import in_flight

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
SEEN: list[tuple[Any, Any, bool]] = []  # (key, message, redelivered)


def cli(
    *args: str, code: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m supervisors ARGS` (or `python -c CODE ARGS`); never a traceback."""
    head = ["-c", code] if code is not None else ["-m", "supervisors"]
    done = subprocess.run(
        [sys.executable, *head, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def failed(done: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """The command failed with exit `code` and one line on stderr naming `words`."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("inorder: "), done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def all_fail(*cases: tuple[Any, ...]) -> None:
    """Run each (args, code, *words) at once (in parallel) and check each with `failed`."""
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda case: cli(*case[0]), cases))
    for case, done in zip(cases, runs, strict=True):
        failed(done, case[1], *case[2:])


class Bot(UserActor):
    async def on_message(self, message: Any, ctx: Context) -> Any:
        SEEN.append((ctx.key, message, ctx.redelivered))
        if message == "boom":
            raise ValueError("boom")
        if message == "block":
            await asyncio.Event().wait()
        return message


@pytest.fixture
async def journal(tmp_path: Path) -> Path:
    """A journal left by a real runtime: a dead letter (a failing handler), a snapshot-less
    key with pending messages (stopped without draining, one of them in flight)."""
    SEEN.clear()
    path = tmp_path / "bot.db"
    rt = Runtime(Bot, store=path, idle_timeout=None, restart=RestartPolicy(max_retries=0))
    await rt.start()
    with pytest.raises(ValueError, match="boom"):
        await rt.ask("user:1", "boom")
    rt.tell("user:2", "block")
    await in_flight(rt, 1)
    rt.tell("user:2", "later")
    rt.tell("user:2", {"n": (1, 2)}, priority=1)  # waits too: no interrupt
    await rt.stop(drain=False)
    return path


# -- journal files -----------------------------------------------------------------------


async def test_check_counts_a_real_journal(journal: Path) -> None:
    done = cli("journal", "check", str(journal), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert report["in_use"] is False
    assert (report["pending"], report["in_flight_at_stop"], report["dead_letters"]) == (3, 1, 1)
    table = cli("journal", "check", str(journal))
    assert table.returncode == 0
    assert "verdict" in table.stdout
    assert "ok" in table.stdout


async def test_dead_letters_list_then_redeliver_runs_it_at_the_next_start(journal: Path) -> None:
    listed = cli("dead-letters", "list", "--journal", str(journal), "--json")
    assert listed.returncode == 0, listed.stderr
    (letter,) = json.loads(listed.stdout)
    assert (letter["key"], letter["reason"], letter["message"]) == ("user:1", "failed", "'boom'")
    assert letter["error"] == "ValueError: boom"
    assert letter["added_at"] > 0
    table = cli("dead-letters", "list", "--journal", str(journal))
    assert "user:1" in table.stdout
    assert "ValueError: boom" in table.stdout

    again = cli("dead-letters", "redeliver", letter["id"], "--journal", str(journal))
    assert (again.returncode, again.stdout.strip()) == (0, f"redelivered {letter['id']}")
    failed(cli("dead-letters", "redeliver", letter["id"], "--journal", str(journal)), 1, "no dead")
    with SQLiteJournal(journal) as j:
        assert j.dead_letters() == []
        assert j.pending_count() == 4

    SEEN.clear()
    rt = Runtime(Bot, store=journal, idle_timeout=None, restart=RestartPolicy(max_retries=0))
    await rt.start()  # replays the journal: the letter's message with the others
    try:
        for _ in range(500):
            if ("user:1", "boom", True) in SEEN:
                break
            await asyncio.sleep(0.01)
    finally:
        await rt.stop(drain=False)  # "block" is replayed too, and never ends
    assert ("user:1", "boom", True) in SEEN  # handled again, replayed from the journal


async def test_purge_by_id_and_all(journal: Path) -> None:
    failed(cli("dead-letters", "purge", "--journal", str(journal)), 2, "--all")
    failed(cli("dead-letters", "purge", "99", "--journal", str(journal)), 1, "1 of the ids")
    done = cli("dead-letters", "purge", "--all", "--journal", str(journal))
    assert (done.returncode, done.stdout.strip()) == (0, "purged 1 dead letter")
    with SQLiteJournal(journal) as j:
        assert j.dead_letters() == []
        assert j.pending_count() == 3


async def test_export_writes_json_lines(journal: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    done = cli("journal", "export", str(journal), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "3 pending messages, 1 dead letters, 0 snapshots" in done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["type"] for r in rows] == ["journal", "pending", "pending", "pending", "dead_letter"]
    assert [r["message"] for r in rows[1:4]] == ["block", "later", {"n": [1, 2]}]
    assert rows[3]["priority"] == 1
    assert rows[1]["attempts"] == 1
    assert rows[4]["error"] == ["ValueError", "boom"]
    assert rows[4]["message"] == "boom"
    to_stdout = cli("journal", "export", str(journal))
    assert to_stdout.stdout.splitlines() == out.read_text().splitlines()


async def test_compact_reports_sizes(journal: Path) -> None:
    done = cli("journal", "compact", str(journal), "--json")
    assert done.returncode == 0, done.stderr
    sizes = json.loads(done.stdout)
    assert sizes["bytes_after"] <= sizes["bytes_before"]
    assert json.loads(cli("journal", "check", str(journal), "--json").stdout)["pending"] == 3


CHILD = """
import asyncio, sys
from actors import UserActor
from supervisors import Runtime

class Stuck(UserActor):
    async def on_message(self, message, ctx):
        await asyncio.Event().wait()

async def main():
    rt = Runtime(Stuck, store=sys.argv[1], idle_timeout=None)
    await rt.start()
    for n in range(4):
        await rt.send("k", n)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_running_bot_holds_the_journal_and_a_kill_leaves_its_messages(tmp_path: Path) -> None:
    path = tmp_path / "live.db"
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    ) as child:
        _while_it_runs(child, path)
    report = json.loads(cli("journal", "check", str(path), "--json").stdout)
    assert (report["in_use"], report["pending"], report["in_flight_at_stop"]) == (False, 4, 1)
    assert cli("dead-letters", "list", "--journal", str(path), "--json").stdout.strip() == "[]"


def _while_it_runs(child: subprocess.Popen[str], path: Path) -> None:
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        failed(cli("dead-letters", "list", "--journal", str(path)), 3, "in use", "--url")
        failed(cli("journal", "compact", str(path)), 3, "in use")
        report = json.loads(cli("journal", "check", str(path), "--json").stdout)
        assert report["ok"]
        assert report["in_use"] is True
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)


def test_missing_foreign_and_broken_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.db")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE t (x)")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    all_fail(
        (("journal", "check", missing), 3, "no such file"),
        (("dead-letters", "list", "--journal", missing), 3, "no such file"),
        (("journal", "check", str(text)), 1, "not an SQLite database"),
        (("dead-letters", "list", "--journal", str(text)), 3, "not an SQLite database"),
        (("journal", "compact", str(text)), 3, "not an SQLite database"),
        (("journal", "export", str(text)), 1, "not an SQLite database"),
        (("journal", "check", str(other)), 1, "not an inorder journal"),
        (("journal", "check", str(empty)), 1, "empty"),
        (("journal", "check", str(tmp_path)), 3, "not a file"),
    )
    assert not os.path.exists(missing)  # never created by looking


async def test_a_corrupted_journal_fails_its_check(journal: Path) -> None:
    with SQLiteJournal(journal):
        pass  # closed: everything is in the main file now
    wreck(journal)
    done = cli("journal", "check", str(journal))
    failed(done, 1)
    assert "corrupt" in done.stderr or "cannot read" in done.stderr


def wreck(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = 4096
    data[page + 10 : 2 * page] = b"\xff" * (page - 10)  # the second page
    path.write_bytes(bytes(data))


HIDE_RICH = (
    "import sys; sys.modules['rich'] = None; import runpy; "
    "runpy.run_module('supervisors', run_name='__main__')"
)


def test_usage_errors_and_a_missing_rich() -> None:
    all_fail(
        (("bogus",), 2, "invalid choice"),
        (("status",), 2, "--url", "--redis"),
        (("status", "--url", "ftp://127.0.0.1:1"), 2, "http://"),
        (("status", "--url", "http://127.0.0.1:x"), 2, "port"),
        (("status", "--redis", "http://127.0.0.1:1"), 2, "redis://"),
        (("status", "--url", "http://127.0.0.1:1", "--watch", "soon"), 2, "seconds"),
        (("dead-letters", "redeliver", "--journal", "x.db"), 2, "ID"),
    )
    helped = cli("--help")
    assert helped.returncode == 0
    assert "exit codes" in helped.stdout
    assert "3 " in helped.stdout
    failed(cli("journal", "check", "x.db", code=HIDE_RICH), 2, "pip install 'inorder[cli]'")


# -- an admin endpoint -------------------------------------------------------------------


class Admin(BaseHTTPRequestHandler):
    """The admin API (supervisors/observe/_admin.py) over one fixed dead letter."""

    token: str | None = None
    broken = False
    stall = threading.Event()
    reads = 0
    letters: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, code: int, body: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _guard(self) -> bool:
        if self.path == "/stall/api/status":
            Admin.stall.wait(10)
        if self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
            self._send(401, {"error": "unauthorized"})
            return False
        if Admin.broken:
            self._send(500, {"error": "the source failed: boom"})
            return False
        return True

    def do_GET(self) -> None:
        if not self._guard():
            return
        if self.path in ("/api/status", "/stall/api/status"):
            Admin.reads += 1
            figures = {
                "state": "running",
                "live_actors": 3,
                "pending": 7,
                "handled": 100 * Admin.reads,
            }
            figures |= {"pending_by_key": {"telegram:42": 5}, "now": 1000.0 + Admin.reads}
            self._send(200, figures)
        elif self.path == "/api/dead-letters":
            self._send(200, {"dead_letters": Admin.letters})
        elif self.path.startswith("/plain"):
            self._send(200, None, raw=b"<html>hello</html>")
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        if not self._guard():
            return
        assert self.headers.get("Content-Type") == "application/json"
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        ids = [letter["id"] for letter in Admin.letters]
        if self.path == "/api/dead-letters/purge":
            gone = ids if "ids" not in body else [i for i in body["ids"] if i in ids]
            Admin.letters = [letter for letter in Admin.letters if letter["id"] not in gone]
            self._send(200, {"purged": len(gone)})
        elif self.path.startswith("/api/dead-letters/") and self.path.endswith("/redeliver"):
            wanted = self.path.split("/")[3]
            if wanted not in ids:
                self._send(404, {"error": f"no dead letter {wanted}"})
            else:
                Admin.letters = [letter for letter in Admin.letters if letter["id"] != wanted]
                self._send(200, {"redelivered": wanted})
        else:
            self._send(404, {"error": "not found"})


@pytest.fixture
def admin() -> Iterator[str]:
    letter = {"id": "m1f", "key": "k", "reason": "failed", "priority": 0, "attempts": 1,
              "error": "ValueError: boom", "message": "'boom'", "added_at": None}  # fmt: skip
    Admin.token, Admin.broken, Admin.reads, Admin.letters = None, False, 0, [letter]
    Admin.stall.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Admin)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        Admin.stall.set()
        server.shutdown()
        server.server_close()


def test_status_of_a_node_with_rates(admin: str) -> None:
    done = cli("status", "--url", admin, "--json", "--sample", "0.05")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["live_actors"] == 3
    assert status["rates"]["handled"] == 100.0
    table = cli("status", "--url", admin, "--sample", "0")
    assert table.returncode == 0, table.stderr
    assert "telegram:42" in table.stdout
    assert "live_actors" in table.stdout


def test_watch_prints_each_read_until_interrupted(admin: str) -> None:
    command = ["status", "--url", admin, "--json", "--watch", ".05"]
    with subprocess.Popen(
        [sys.executable, "-m", "supervisors", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        preexec_fn=_sigint_default,
    ) as child:
        _watched(child)


def _sigint_default() -> None:
    """In the child before it starts: SIGINT at its default and not blocked, whatever this
    process inherited. A SIGINT ignored or blocked here passes on to the child (as a shell
    does for a background job), whose Python then installs no KeyboardInterrupt for it: its
    watch went on until its pipes closed (seen once in a whole suite's run)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


def _watched(child: subprocess.Popen[str]) -> None:
    assert child.stdout is not None
    first, second = json.loads(child.stdout.readline()), json.loads(child.stdout.readline())
    assert first["rates"] is None
    assert second["rates"]["handled"] == 100.0
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=10)
    assert child.returncode == 0, err
    assert "Traceback" not in err


def test_dead_letters_through_the_endpoint(admin: str) -> None:
    listed = cli("dead-letters", "list", "--url", admin, "--json")
    assert [letter["id"] for letter in json.loads(listed.stdout)] == ["m1f"]
    failed(cli("dead-letters", "redeliver", "nope", "--url", admin), 1, "no dead letter", "nope")
    done = cli("dead-letters", "redeliver", "m1f", "--url", admin)
    assert (done.returncode, done.stdout.strip()) == (0, "redelivered m1f")
    assert (
        cli("dead-letters", "purge", "--all", "--url", admin).stdout.strip()
        == "purged 0 dead letters"
    )


def test_endpoint_errors(admin: str) -> None:
    Admin.token = "s3cret"
    all_fail(
        (("status", "--url", admin, "--sample", "0"), 4, "HTTP 401", "--token"),
        (("status", "--url", admin, "--token", "wrong", "--sample", "0"), 4, "refused"),
    )
    ok = cli("status", "--url", admin, "--token", "s3cret", "--sample", "0", "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["pending"] == 7
    from_env = cli("status", "--url", admin, "--sample", "0", env={"INORDER_ADMIN_TOKEN": "s3cret"})
    assert from_env.returncode == 0, from_env.stderr
    Admin.token, Admin.broken = None, True
    failed(cli("dead-letters", "list", "--url", admin), 1, "HTTP 500", "boom")
    Admin.broken = False
    nobody = closed_port_url()
    all_fail(
        (("status", "--url", admin + "/elsewhere"), 3, "HTTP 404"),
        (("status", "--url", admin + "/plain", "--sample", "0"), 3, "not JSON"),
        (("status", "--url", admin + "/stall", "--timeout", "0.3"), 3, "no answer within 0.3 s"),
        (("status", "--url", nobody), 3, "connection refused"),
        (("dead-letters", "list", "--url", nobody), 3, "connection refused"),
    )


def closed_port_url() -> str:
    """A loopback URL on which nothing listens (a port just released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"
