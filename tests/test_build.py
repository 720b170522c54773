"""The compiled and the pure-Python package: same code, same behaviour, no leaks.

`make test` runs the whole suite twice, on the sources (pure Python) and on
the package built by `setup.py` (mypyc); these tests check what differs
between the two builds.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import actors
from actors import Context, UserActor, _cell, _mailbox
from supervisors import Runtime, _core


def test_compiled_flag_matches_the_modules() -> None:
    """`actors.COMPILED` is true exactly when the per-message path is an extension."""
    files = [module.__file__ or "" for module in (_cell, _mailbox, _core)]
    assert all(not f.endswith(".py") for f in files) == actors.COMPILED
    assert all(f.endswith(".py") for f in files) == (not actors.COMPILED)


def test_runtime_needs_no_build_tools() -> None:
    """mypy_extensions (mypyc's decorator) is a build-time name only."""
    code = (
        "import sys; sys.modules['mypy_extensions'] = None\n"
        "import actors, supervisors\n"
        "print(actors.COMPILED)\n"
    )
    # -P: import the build under test (PYTHONPATH or the install), not the working tree.
    out = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == str(actors.COMPILED)


ROOT = Path(__file__).resolve().parents[1]


def compiled_sources() -> list[str]:
    """setup.py's `COMPILED` list, read without running setup.py (it calls `setup()`)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in node.targets)
        ) or (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "COMPILED"
        ):
            assert node.value is not None
            sources = ast.literal_eval(node.value)
            assert isinstance(sources, list)
            assert sources
            return sources
    raise AssertionError("setup.py has no COMPILED list")


def test_no_coroutine_in_a_compiled_module() -> None:
    """Every coroutine stays interpreted (README, setup.py).

    A coroutine compiled by mypyc calls the generator `throw(type, value, tb)`,
    deprecated since Python 3.12: under the suite's warnings-as-errors, a cancelled
    compiled coroutine ended `stop()` with `CancelledError` on 3.12 and 3.13.
    """
    found = []
    for source in compiled_sources():
        path = ROOT / source
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found += [
            f"{source}:{node.lineno} async def {node.name}"
            for node in ast.walk(tree)  # every nesting: methods, inner functions
            if isinstance(node, ast.AsyncFunctionDef)
        ]
    assert found == [], "coroutines in modules that mypyc compiles (setup.py COMPILED)"


KEYS = ("build-test:a", "build-test:b")


class _Keeper(UserActor):
    """Handles messages that refer back to the actor's own context (a cycle)."""

    waiting: asyncio.Event

    async def on_message(self, message: Any, ctx: Context) -> Any:
        if message == "loop":
            ctx.tell(ctx.key, ("self", ctx))  # that envelope holds its own cell
        elif message == "wait":
            _Keeper.waiting.set()
            await asyncio.sleep(3600)
        return None


async def test_a_stopped_runtime_is_collected_even_with_self_referring_messages() -> None:
    """Envelopes are not GC-tracked when compiled: nothing may leave one in a cycle."""
    _Keeper.waiting = asyncio.Event()
    rt = await Runtime(_Keeper).start()
    a, b = KEYS
    rt.tell(b, "loop")  # handled: the cycle is made and undone
    rt.tell(a, "loop")
    rt.tell(a, "wait")  # in flight until the stop, so ("self", ctx) stays queued
    await _Keeper.waiting.wait()
    assert rt.stats()["pending"] == 1
    runtime = weakref.ref(rt)
    await rt.stop(drain=False, timeout=1.0)
    del rt
    gc.collect()

    assert runtime() is None
    # Cells take no weak references (slots): look for survivors among all objects.
    left = [o for o in gc.get_objects() if isinstance(o, _cell.Cell) and o.key in KEYS]
    assert left == []
