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
* the C compiler fails: the extensions are optional, so the build goes on.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup

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
    for extension in extensions:
        extension.optional = True  # no compiler: install the pure-Python package
    return extensions


setup(ext_modules=ext_modules())
