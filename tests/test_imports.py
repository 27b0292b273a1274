"""dpsynth's own import graph, read from the source: no cycles, nothing imports back up
from a package ``__init__``, and ``import dpsynth`` stays light.

The graph has one node per module of ``dpsynth`` and an edge for every import of
another dpsynth module, read by the boundary checker
(``test_privacy_boundary.read_imports``). ``from P import n`` is an edge to the
submodule ``P.n`` when there is one, else to ``P`` itself. Importing ``a.b.c`` also
runs ``a/__init__`` and ``a/b/__init__``; those implicit edges are left out, or every
package that re-exports its submodules would be a cycle.

What counts for cycles:

* imports that run when a module loads (module level, class bodies, ``try``):
  ``test_no_cycles_at_load``, no exceptions;
* plus imports deferred into functions: ``test_no_cycles_counting_deferred_imports``.
  A function-level import that exists to dodge a cycle is still a cycle in the
  design (schema <-> domain was one, until issue 16 broke it);
* never imports under ``if TYPE_CHECKING:``, which do not run.

"Back up" means a module importing a name that is not a submodule from a package
that contains it (``from dpsynth import UsageError`` inside ``dpsynth.engines.aim``):
that name lives in the package ``__init__``, which imports downward. Checked for
every import, deferred and type-checking ones included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from test_privacy_boundary import CALL, LOAD, ROOT, Import, _module_name, read_imports

MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
IMPORTS: dict[str, list[Import]] = {m: read_imports(p) for m, p in MODULES.items()}



def _targets(imp: Import) -> set[str]:
    """The dpsynth modules ``imp`` loads (see the module docstring)."""
    if not imp.names:
        return {imp.module} & MODULES.keys()
    out = set()
    for n in imp.names:
        if f"{imp.module}.{n}" in MODULES:
            out.add(f"{imp.module}.{n}")
        elif imp.module in MODULES:
            out.add(imp.module)
    return out


def _graph(when: Iterable[str]) -> dict[str, set[str]]:
    kinds = set(when)
    return {m: {t for imp in imps if imp.when in kinds for t in _targets(imp)} - {m}
            for m, imps in IMPORTS.items()}


def _cycles(graph: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def _describe(cycle: frozenset[str], graph: Mapping[str, set[str]]) -> str:
    return "; ".join(f"{m} -> {', '.join(sorted(graph[m] & cycle))}" for m in sorted(cycle))


def test_the_graph_is_read() -> None:
    assert {"dpsynth", "dpsynth.pipeline", "dpsynth.privacy.session", "dpsynth.engines.aim"} <= (
        MODULES.keys())
    graph = _graph([LOAD, CALL])
    assert "dpsynth.privacy.session" in graph["dpsynth.pipeline"]
    assert "dpsynth.pipeline" in graph["dpsynth"]  # the lazy names, loaded in __getattr__
    assert "dpsynth.pipeline" not in _graph([LOAD])["dpsynth"]


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [frozenset("abc")]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_cycles_at_load() -> None:
    graph = _graph([LOAD])
    assert [_describe(c, graph) for c in _cycles(graph)] == []


def test_no_cycles_counting_deferred_imports() -> None:
    graph = _graph([LOAD, CALL])
    new = list(_cycles(graph))
    assert [_describe(c, graph) for c in new] == []


def _back_up(mod: str, imps: Iterable[Import]) -> list[tuple[str, int]]:
    """``(package.name, line)`` for each name ``mod`` takes from a package containing it
    that is not a submodule (``import package`` itself included, as ``package.``)."""
    out = []
    for imp in imps:
        pkg = imp.module
        if mod.startswith(pkg + ".") and MODULES.get(pkg, Path()).name == "__init__.py":
            out += [(f"{pkg}.{n}", imp.line) for n in imp.names or ("",)
                    if f"{pkg}.{n}" not in MODULES]
    return out


def test_nothing_imports_back_up_from_a_package_init() -> None:
    assert [(mod, *hit) for mod, imps in IMPORTS.items() for hit in _back_up(mod, imps)] == []


def test_back_up_check_sees_package_imports(tmp_path: Path) -> None:
    probe = tmp_path / "dpsynth" / "engines" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("from dpsynth import release\nfrom .. import UsageError\nimport dpsynth\n"
                     "def f():\n    from dpsynth.engines import get_engine\n"
                     "from dpsynth import errors\nfrom . import base\nimport dpsynth.io\n"
                     "from dpsynth.privacy.ledger import Ledger\n", encoding="utf-8")
    assert _back_up("dpsynth.engines.probe", read_imports(probe)) == [
        ("dpsynth.release", 1), ("dpsynth.UsageError", 2), ("dpsynth.", 3),
        ("dpsynth.engines.get_engine", 5)]


def test_import_dpsynth_does_not_load_the_pipeline() -> None:
    code = ("import sys, dpsynth\n"
            "print(sorted(m for m in sys.modules if m in ('dpsynth.pipeline', 'opendp')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_pipeline_loads_without_great_expectations(tmp_path: Path) -> None:
    """Issue 15: great-expectations (and pandas, which only validation uses) load where
    validation runs, not with the pipeline: a release imports them in its validation
    worker while it reads and fits. A script file, not ``-c``: pyspark, which
    great-expectations imports, ends a ``-c`` process silently."""
    script = tmp_path / "probe.py"
    script.write_text("import sys\nimport dpsynth.pipeline\nimport dpsynth.cli\n"
                      "print(sorted(m for m in ('great_expectations', 'pandas', 'matplotlib', "
                      "'scipy') if m in sys.modules))\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent)}  # this checkout's dpsynth
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stdout.strip() == "[]"
