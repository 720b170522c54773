"""Measurement helpers shared by the scenarios: completion tracking,
percentiles, memory readings and a description of the machine.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

#: Repository root: the parent of the ``benchmarks`` package.
ROOT = Path(__file__).resolve().parent.parent

now = time.perf_counter


def _no_progress(text: str) -> None:
    """Default progress sink: silent (``__main__`` installs a real one)."""


_progress_sink: list[Callable[[str], None]] = [_no_progress]


def set_progress(sink: Callable[[str], None]) -> None:
    """Route progress lines (one per measurement) to ``sink``."""
    _progress_sink[0] = sink


def progress(text: str) -> None:
    """Report what is being measured now."""
    _progress_sink[0](text)


class Tracker:
    """Counts handled messages and wakes the measuring coroutine at a target.

    ``hit()`` may be called from the loop thread or from any other thread
    (the pykka peer runs handlers in actor threads): ``next()`` on an
    ``itertools.count`` is atomic in CPython, and the event is set through
    ``call_soon_threadsafe`` when the last hit comes from another thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop or asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._count = itertools.count(1)
        self._done = 0
        self._target = -1
        self._event = asyncio.Event()
        self.finished_at = 0.0

    def expect(self, n: int) -> None:
        """Wait for ``n`` more hits from now on."""
        self._count = itertools.count(1)
        self._target = n
        self._event = asyncio.Event()
        self.finished_at = 0.0
        if n == 0:
            self._event.set()

    def hit(self) -> None:
        """Record one handled message."""
        if next(self._count) == self._target:
            self.finished_at = now()
            if threading.get_ident() == self._loop_thread:
                self._event.set()
            else:
                self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, limit: float) -> None:
        """Return once the expected hits arrived; TimeoutError after ``limit`` s."""
        async with asyncio.timeout(limit):
            await self._event.wait()


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (``p`` in 0..100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    """Median of the finite values, NaN when there are none."""
    finite = sorted(v for v in values if isinstance(v, (int, float)) and math.isfinite(v))
    if not finite:
        return math.nan
    mid = len(finite) // 2
    if len(finite) % 2:
        return float(finite[mid])
    return (finite[mid - 1] + finite[mid]) / 2.0


def rss_bytes() -> int:
    """Current resident set size of this process, in bytes."""
    try:
        import psutil  # type: ignore[import-untyped,unused-ignore]  # optional extra
    except ImportError:
        pass
    else:
        return int(psutil.Process().memory_info().rss)
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far, in bytes.

    On Linux this is ``VmHWM`` of the process's own address space. Not
    ``getrusage().ru_maxrss``: that survives ``fork`` and ``exec``, so a child
    would report its parent's peak whenever the parent was larger.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def settle_memory() -> None:
    """Collect garbage so that an RSS reading reflects live objects only."""
    for _ in range(3):
        gc.collect()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _inorder_version() -> str:
    """The version, and whether its per-message path is compiled (setup.py)."""
    try:
        import actors

        build = "compiled" if actors.COMPILED else "pure Python"
    except Exception:
        build = "not importable"
    version = _version("inorder")
    if version != "not installed":
        return f"{version} ({build})"
    try:
        import tomllib

        with open(ROOT / "pyproject.toml", "rb") as f:
            return str(tomllib.load(f)["project"]["version"]) + f" (source tree, {build})"
    except (OSError, KeyError, ValueError):
        return f"unknown ({build})"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _platform() -> str:
    """Operating system, architecture and C library, e.g. ``Linux x86_64 glibc 2.36``."""
    libc, version = platform.libc_ver()
    parts = [platform.system(), platform.machine(), f"{libc} {version}" if libc else ""]
    return " ".join(p for p in parts if p)


def machine_info() -> dict[str, Any]:
    """What the figures depend on: CPU count, platform, Python and packages.

    Deliberately no host name, user name or file system path.
    """
    return {
        "cpu_count": os.cpu_count(),
        "platform": _platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "event_loop": "asyncio (default policy)",
        "packages": {
            "inorder": _inorder_version(),
            "pykka": _version("pykka"),
            "structlog": _version("structlog"),
            "msgpack": _version("msgpack"),
        },
        "git_commit": _git_commit(),
    }
