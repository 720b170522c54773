"""The public surface is what the contract says, and nothing private leaks into it."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import pkgutil
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Every name `from actors import ...` and `from supervisors import ...` offer. Names
#: may be added; one removed or moved breaks users' imports (issue 15 moved modules
#: into rooms of their own and kept these).
PUBLIC = {
    "actors": {
        "AlreadyStarted", "BlockingOnLoop", "COMPILED", "Clock", "Codec", "CodecError",
        "Context", "DeadLetter", "DeadLetterRecord", "Dropped", "EnvelopeRecord",
        "FutureTimeout", "HandlerCrashed", "HandlerTimeout", "InorderError", "Interrupted",
        "InvalidKey", "InvalidPriority", "Journal", "JournalClosed", "JournalError",
        "LoopClock", "LoopFuture", "MailboxFull", "PendingRecord", "RecordedError",
        "RuntimeStopped", "SQLiteJournal", "StopFromHandler", "UserActor",
    },
    "supervisors": {
        "Decider", "Directive", "Observer", "RedisCluster", "RestartPolicy", "Runtime",
        "ShutdownSummary", "default_decider",
    },
    "supervisors.observe": {
        "AdminServer", "Metrics", "RuntimeCollector", "RuntimeSource", "Source", "Tracing",
    },
    "supervisors.testing": {
        "REDIS_URL_ENV", "EmbeddedRedis", "ExternalRedis", "RedisServer", "RedisStartError",
        "flush_database", "redis_server_from_env", "redis_url_from_env",
    },
}  # fmt: skip

#: Every package of the library (the rooms: DESIGN section 7).
PACKAGES = [
    "actors",
    "actors.journal",
    "supervisors",
    "supervisors.adapters",
    "supervisors.cluster",
    "supervisors.durable",
    "supervisors.observe",
    "supervisors.testing",
]


def test_the_public_names_stay() -> None:
    for name, names in PUBLIC.items():
        module = importlib.import_module(name)
        assert names <= set(module.__all__), f"{name} lost {names - set(module.__all__)}"


def test_every_package_is_listed_and_says_what_happens_when() -> None:
    """A reader finds each room by its folder, and its docstring says what it is."""
    found = ["actors", "supervisors"]
    for top in ("actors", "supervisors"):
        package = importlib.import_module(top)
        found += [m.name for m in pkgutil.walk_packages(package.__path__, f"{top}.") if m.ispkg]
    assert sorted(found) == PACKAGES
    for name in PACKAGES:
        doc = importlib.import_module(name).__doc__
        assert doc is not None, name
        assert len(doc.split()) > 40, name


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    """__all__ is sorted (constants, then classes, then functions: ruff's RUF022),
    every name resolves, and none is private."""
    module = importlib.import_module(name)

    def kind(attr: str) -> tuple[int, str]:
        return (0 if attr.isupper() else 1 if attr[:1].isupper() else 2, attr)

    assert list(module.__all__) == sorted(module.__all__, key=kind)
    for attr in module.__all__:
        assert not attr.startswith("_")
        assert getattr(module, attr) is not None


def test_contract_names() -> None:
    """The names acceptance tests import exist where the contract puts them."""
    from actors import (  # noqa: F401
        AlreadyStarted,
        Context,
        Dropped,
        Interrupted,
        MailboxFull,
        RuntimeStopped,
        StopFromHandler,
        UserActor,
    )
    from supervisors import RestartPolicy, Runtime  # noqa: F401


def test_one_error_hierarchy() -> None:
    """Every error the library raises on purpose derives from InorderError."""
    import actors

    for name in (
        "Dropped",
        "Interrupted",
        "MailboxFull",
        "RuntimeStopped",
        "InvalidKey",
        "InvalidPriority",
        "HandlerTimeout",
        "BlockingOnLoop",
        "HandlerCrashed",
        "FutureTimeout",
        "CodecError",
        "JournalError",
        "JournalClosed",
        "RecordedError",
        "AlreadyStarted",
        "StopFromHandler",
    ):
        assert issubclass(getattr(actors, name), actors.InorderError)
    assert issubclass(actors.InvalidKey, ValueError)
    assert issubclass(actors.HandlerTimeout, TimeoutError)
    assert issubclass(actors.FutureTimeout, TimeoutError)
    assert issubclass(actors.CodecError, ValueError)
    assert issubclass(actors.JournalClosed, actors.JournalError)
    assert issubclass(actors.JournalClosed, RuntimeError)
    for name in ("RuntimeStopped", "AlreadyStarted", "StopFromHandler", "BlockingOnLoop"):
        assert issubclass(getattr(actors, name), RuntimeError)
    # A second start is misuse, not a call on a stopped runtime: a class of its own.
    assert not issubclass(actors.AlreadyStarted, actors.RuntimeStopped)


def test_every_exported_error_is_defined_in_one_module() -> None:
    """The error hierarchy lives in actors._errors: an error exported from the package
    is that module's class, not a copy defined next to the code that raises it."""
    import actors
    from actors import _errors

    errors = [
        n
        for n in actors.__all__
        if isinstance(getattr(actors, n), type) and issubclass(getattr(actors, n), BaseException)
    ]
    assert set(errors) == set(_errors.__all__)
    for name in errors:
        assert getattr(actors, name) is getattr(_errors, name)
        assert getattr(actors, name).__module__ == "actors._errors"


def test_journal_names() -> None:
    """The journal seam, its embedded implementation and its records are exported."""
    from actors import (
        DeadLetterRecord,
        Journal,
        PendingRecord,
        SQLiteJournal,
    )

    assert Journal.__module__ == "actors.journal._seam"
    assert SQLiteJournal.__module__ == "actors.journal._sqlite"
    assert {DeadLetterRecord.__module__, PendingRecord.__module__} == {"actors.journal._seam"}
    # The implementation has every method of the seam.
    seam = {n for n in vars(Journal) if not n.startswith("_")}
    assert seam <= set(dir(SQLiteJournal))


def test_recorded_error() -> None:
    """What a dead letter restored after a restart carries instead of the exception."""
    import copy
    import pickle

    from actors import RecordedError

    err = RecordedError("ValueError", "bad input")
    assert (err.type_name, err.text) == ("ValueError", "bad input")
    assert str(err) == "ValueError: bad input"
    assert str(RecordedError("KeyError", "")) == "KeyError"
    for again in (copy.copy(err), pickle.loads(pickle.dumps(err))):
        assert (again.type_name, again.text, str(again)) == (err.type_name, err.text, str(err))

    class Local(Exception):
        pass

    of = RecordedError.of(Local("boom"))
    assert (of.type_name, of.text) == ("test_recorded_error.<locals>.Local", "boom")
    assert str(RecordedError.of(KeyboardInterrupt())) == "KeyboardInterrupt"
    assert str(RecordedError.of(err)) == "ValueError: bad input"  # not "RecordedError: ..."

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    unprintable = RecordedError.of(Unprintable())
    assert unprintable.text == "<unprintable test_recorded_error.<locals>.Unprintable>"


def test_no_module_is_over_500_lines() -> None:
    """Split by concept before a module grows past what a reader holds in mind."""
    for path in [*ROOT.glob("actors/**/*.py"), *ROOT.glob("supervisors/**/*.py")]:
        lines = len(path.read_text().splitlines())
        assert lines <= 500, f"{path.relative_to(ROOT)}: {lines} lines"


def test_the_journal_room_never_imports_the_runtime() -> None:
    """actors.journal (the codec and the journal seam) is below supervisors: usable alone."""
    for path in ROOT.glob("actors/**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                assert not any(n.split(".")[0] == "supervisors" for n in names), path


def _third_party_imports(folder: Path) -> set[str]:
    first_party = {"actors", "supervisors", "benchmarks", "examples", "tests"}
    names: set[str] = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - first_party - set(sys.stdlib_module_names)


def _normal(name: str) -> str:
    """A distribution's name as PEP 503 compares them: slack_bolt is slack-bolt."""
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_dev_extra_brings_what_the_tests_import() -> None:
    """`pip install '.[dev]'` then `pytest` collects the whole suite, on every Python."""
    metadata = importlib.metadata.metadata("inorder")
    dev = set()
    for requirement in metadata.get_all("Requires-Dist") or []:
        name, _, marker = requirement.partition(";")
        if "extra ==" in marker and "dev" not in marker:
            continue  # another extra's
        dev.add(_normal(re.split(r"[<>=!~ \[]", name.strip(), maxsplit=1)[0]))
    providers = importlib.metadata.packages_distributions()
    for module in sorted(_third_party_imports(ROOT / "tests")):
        dists = {_normal(d) for d in providers.get(module, [module])}
        assert dists & dev, f"tests import {module} ({dists}), which the dev extra lacks"


# -- the rooms and their imports ------------------------------------------------------

#: The core of the supervisors package: the router and its parts (the facade is the rest).
CORE = {
    "_admission",
    "_checks",
    "_core",
    "_dedup",
    "_holds",
    "_ingress",
    "_modes",
    "_pacing",
    "_policy",
    "_slow",
    "_snapshots",
    "_supervisor",
}


def _room(module: str) -> str:
    parts = module.split(".")
    if module in ("actors", "supervisors"):
        return "surface"  # the curated __init__: what users import, above every room
    if parts[0] == "actors":
        return "journal" if parts[1:2] == ["journal"] else "kernel"
    if parts[1] in ("adapters", "cluster", "durable", "observe", "testing"):
        return parts[1]
    if parts[1] == "__main__":
        return "observe"  # the command line (python -m supervisors) is observe's
    return "core" if parts[1] in CORE else "facade"


def _import_graph() -> dict[str, set[str]]:
    """Every module of the library and the library modules it imports, TYPE_CHECKING too."""
    modules: dict[str, Path] = {}
    for path in [*ROOT.glob("actors/**/*.py"), *ROOT.glob("supervisors/**/*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_across_rooms() -> None:
    """kernel < journal < core < durable, cluster < facade, testing < surface: the rooms
    import downwards only, type-only imports included."""
    rooms: dict[str, set[str]] = {}
    for module, imported in _import_graph().items():
        for other in imported:
            if _room(other) != _room(module):
                rooms.setdefault(_room(module), set()).add(_room(other))
    assert _cycles(rooms) == []
    assert "surface" not in set().union(*rooms.values())
    assert rooms.get("kernel", set()) == set()
    assert rooms["journal"] == {"kernel"}
    assert rooms["core"] <= {"kernel"}
    assert not {"durable", "cluster", "facade"} & (rooms["durable"] | rooms["cluster"])
    # The framework adapters sit above the facade they drive: nothing imports them.
    assert all("adapters" not in found for room, found in rooms.items() if room != "adapters")
    # So do the observers (metrics, tracing, the admin endpoint) and the command line.
    assert all("observe" not in found for room, found in rooms.items() if room != "observe")


def test_each_circle_inside_a_room_is_deliberate_and_says_why() -> None:
    """A module in an import circle (type-only, since nothing fails to import) says so."""
    for component in _cycles(_import_graph()):
        assert len({_room(m) for m in component}) == 1, component
        for module in component:
            # From the source: a module mypyc compiled has no __doc__.
            path = ROOT / (module.replace(".", "/") + ".py")
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "deliberate" in doc, f"{module} is in the circle {sorted(component)}"
