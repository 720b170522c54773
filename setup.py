"""Build hook: compile the per-message path with mypyc.

`pyproject.toml` holds all the metadata; this file only adds extension
modules. The modules listed in `COMPILED` are plain, fully typed Python
(mypy --strict); mypyc turns them into C extensions, which roughly halves
the runtime's own cost per message and per activation (see BENCHMARKS.md).
Everything else, and in particular every coroutine (`actors/_burst.py`),
stays interpreted.

`pip install .` (and `pip install '.[redis]'`: extras do not enter the build)
gives the compiled package, or fails. A build that cannot compile, because
mypyc is missing, finds a type error, or the C compiler fails or is missing,
stops with an error that says why and how to get the pure-Python package
instead. It does not fall back on its own: pip shows a build's output only
when the build fails, so a fallback would go unseen, and the package would
run at the pure-Python speed that no benchmark figure is for.

The pure-Python package is the same code and passes the same tests. It is
what you get when:

* `INORDER_PURE_PYTHON=1` is set at build time;
* the install is editable (`pip install -e .`): compiled modules would
  shadow the sources, and an edited file must take effect;
* the interpreter is not CPython (mypyc builds for CPython only).

mypyc type-checks the compiled modules and everything they import, with the
`[tool.mypy]` settings of pyproject.toml, in pip's isolated build env, which
holds `[build-system] requires` only: the optional extras' packages (redis)
are not there, and pyproject.toml says so to mypy (`ignore_missing_imports`).
Metadata and sdist commands do not run mypyc (nothing is compiled there).
"""

from __future__ import annotations

import os
import platform
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = [
    "actors/_mailbox.py",
    "actors/_host.py",
    "actors/_turn.py",
    "actors/_cell.py",
    "actors/_latency.py",
    "supervisors/_checks.py",
    "supervisors/_core.py",
]


#: Set to anything but "" or "0" at build time: the pure-Python package, on purpose.
PURE_PYTHON = "INORDER_PURE_PYTHON"

#: setup.py commands that only write metadata or an sdist: nothing there is compiled.
NO_BUILD = ("egg_info", "dist_info", "sdist")


def fail(reason: str, remedy: str) -> SystemExit:
    """The error that ends a build which cannot compile: said on stderr, which pip shows."""
    print(
        f"inorder: {reason}; {remedy}.\n"
        f"inorder: or set {PURE_PYTHON}=1 to install the pure-Python package "
        "(the same code, slower).",
        file=sys.stderr,
    )
    return SystemExit(1)


def ext_modules() -> list[object]:
    if os.environ.get(PURE_PYTHON, "") not in ("", "0"):
        return []
    if "editable_wheel" in sys.argv or "develop" in sys.argv:  # editable (PEP 660, legacy)
        return []
    command = next((arg for arg in sys.argv[1:] if not arg.startswith("-")), "")
    if command in NO_BUILD:  # the first command; global options (-v, -q) come before it
        return []
    if platform.python_implementation() != "CPython":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        # Only without build isolation: mypy is a build requirement (pyproject.toml).
        reason = f"mypyc is not importable ({exc})"
        raise fail(reason, "it comes with mypy: pip install mypy") from None
    try:
        extensions = mypycify(COMPILED, opt_level="3", group_name="inorder")
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error, printed above
        detail = "" if isinstance(exc, SystemExit) else f" ({exc!r})"
        reason = f"mypyc could not compile {', '.join(COMPILED)}{detail}"
        raise fail(reason, "mypy's errors are above: please report them") from None
    return extensions


class AllOrNothing(build_ext):
    """Build every extension, or fail the build: a partial build would not even import.

    mypyc's modules share one group library; if it fails to compile while the
    per-module shims succeed, `import actors` fails. So any failure (no C
    compiler, a compiler error) removes whatever was built and ends the build
    with `fail`'s message; the compiler's own errors are printed above it.
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # CompileError, a missing compiler, ...
            for extension in self.extensions:
                built = self.get_ext_fullpath(extension.name)
                if os.path.exists(built):
                    os.remove(built)
            # The compiler's own output is above; its command line need not be said twice.
            reason = f"compiling mypyc's C failed ({str(exc)[:160]})"
            remedy = "this needs a C compiler and Python's headers (e.g. gcc and python3-dev)"
            raise fail(reason, remedy) from None


setup(ext_modules=ext_modules(), cmdclass={"build_ext": AllOrNothing})
