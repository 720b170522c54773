"""The compiled and the pure-Python package: same code, same behaviour, no leaks.

`make test` runs the whole suite twice, on the sources (pure Python) and on
the package built by `setup.py` (mypyc); these tests check what differs
between the two builds. The `wheel` tests build the package the way pip does
for users; they take a minute, so `make check-wheel` runs them, once per
`make test` (INORDER_TEST_WHEEL=1), and the suites skip them.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import os
import shutil
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

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


# -- the package as pip builds it for users ----------------------------------------------------

wheel_check = pytest.mark.skipif(
    os.environ.get("INORDER_TEST_WHEEL") != "1",
    reason="builds the package as pip does (a minute): make check-wheel runs it once",
)
#: A build: pip, its isolated build env, mypyc and the C compiler (PyPI is reachable).
BUILD_TIMEOUT = 480.0


def source_copy(dest: Path) -> Path:
    """The working tree's files (tracked, and new ones git does not ignore) copied to `dest`.

    pip builds in the source tree (`./build`): a copy keeps this build apart from
    `make compiled`'s, and from whatever `./build` holds.
    """
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree is not there
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def pip_env(**extra: str) -> dict[str, str]:
    """The environment a user's pip runs in: no PYTHONPATH, no INORDER_ setting of ours."""
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("INORDER_")
    }
    return {**env, **extra}


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv of this Python, with nothing but pip: no mypy, no redis."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    return venv / ("Scripts" if sys.platform == "win32" else "bin")


def pip(bin_dir: Path, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """pip as a user runs it: isolated build, no -v (so its output is what a user sees)."""
    return subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", *args],
        cwd=cwd,
        env=pip_env(**env),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
    )


@wheel_check
@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_wheel_pip_install_gives_the_compiled_package(fresh_venv: Path, tmp_path: Path) -> None:
    """`pip install .` in a fresh venv compiles: the build env has no redis, and needs none.

    mypyc type-checks what the compiled modules import, supervisors/cluster/_node.py
    among them, which imports redis (an optional extra, not in the build env).
    """
    source = source_copy(tmp_path / "src")
    installed = pip(fresh_venv, "install", str(source), cwd=tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "inorder:" not in installed.stderr  # nothing went wrong, so nothing is said

    # -P and a cwd outside the source: import the installed package.
    probe = "import actors, actors._cell as c; print(actors.COMPILED, c.__file__)"
    out = subprocess.run(
        [str(fresh_venv / "python"), "-P", "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    compiled, cell = out.stdout.split()
    assert compiled == "True", f"pip install built the pure-Python package ({cell})"


@wheel_check
@pytest.mark.skipif(sys.platform == "win32", reason="CC=false: a POSIX compiler setting")
@pytest.mark.timeout(2 * BUILD_TIMEOUT + 60)
def test_wheel_that_cannot_compile_fails_and_says_how_to_build_pure_python(
    fresh_venv: Path, tmp_path: Path
) -> None:
    """No working C compiler: the build fails, on stderr as pip shows it; the opt-out works.

    pip hides a build's output unless the build fails, so a build that fell back
    to pure Python would say nothing; it must fail instead, and say what to do.
    """
    dist = tmp_path / "dist"
    wheel = ("wheel", "--no-deps", "--wheel-dir", str(dist))
    failed = pip(fresh_venv, *wheel, str(source_copy(tmp_path / "src")), cwd=tmp_path, CC="false")
    assert failed.returncode != 0, failed.stdout
    assert "inorder: compiling mypyc's C failed" in failed.stderr
    assert "INORDER_PURE_PYTHON=1" in failed.stderr
    assert not dist.exists() or list(dist.iterdir()) == []

    # A fresh copy: a failed build leaves ./build behind, as it would for a user.
    pure = pip(
        fresh_venv,
        *wheel,
        str(source_copy(tmp_path / "src-pure")),
        cwd=tmp_path,
        CC="false",
        INORDER_PURE_PYTHON="1",
    )
    assert pure.returncode == 0, pure.stdout + pure.stderr
    assert [w.name for w in dist.iterdir()] == ["inorder-0.1.0-py3-none-any.whl"]
