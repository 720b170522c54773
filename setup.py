"""Build hook: compile the per-message path with mypyc when it can be.

`pyproject.toml` holds all the metadata; this file only adds extension
modules. The modules listed in `COMPILED` are plain, fully typed Python
(mypy --strict); mypyc turns them into C extensions, which roughly halves
the runtime's own cost per message and per activation (see BENCHMARKS.md).
Everything else, and in particular every coroutine (`actors/_burst.py`),
stays interpreted.

The pure-Python package is the same code and passes the same tests. It is
what you get when:

* the install is editable (`pip install -e .`): compiled modules would
  shadow the sources, and an edited file must take effect;
* `INORDER_PURE_PYTHON=1` is set at build time;
* mypyc is not importable at build time;
* the C compiler fails, or is missing: nothing compiled is kept (all or
  nothing, see `AllOrNothing`), so the build goes on.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = [
    "actors/_mailbox.py",
    "actors/_cell.py",
    "actors/_latency.py",
    "supervisors/_core.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("INORDER_PURE_PYTHON", "") not in ("", "0"):
        return []
    if "editable_wheel" in sys.argv:  # setuptools' PEP 660 hook runs this command
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("inorder: mypyc is not available, building the pure-Python package")
        return []
    try:
        extensions = mypycify(COMPILED, opt_level="3", group_name="inorder")
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error
        print(f"inorder: mypyc failed ({exc!r}), building the pure-Python package")
        return []
    return extensions


class AllOrNothing(build_ext):
    """Build every extension, or none: a partial build would not even import.

    mypyc's modules share one group library; if it fails to compile while the
    per-module shims succeed, `import actors` fails. So any failure (no C
    compiler, a compiler error) removes whatever was built, and the package
    installs as pure Python.
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # CompileError, a missing compiler, ...
            print(f"inorder: compiling failed ({exc!r}), building the pure-Python package")
            for extension in self.extensions:
                built = self.get_ext_fullpath(extension.name)
                if os.path.exists(built):
                    os.remove(built)
            self.extensions = []
            self.distribution.ext_modules = []


setup(ext_modules=ext_modules(), cmdclass={"build_ext": AllOrNothing})
