"""The privacy boundary, checked on the source: engines and public reports never reach
private data or uncharged noise.

Nothing in ``dpsynth/engines/``, ``dpsynth/report/`` or ``dpsynth/draft.py`` may import,
directly or through other dpsynth modules, the private-table modules ``dpsynth.io`` and
``dpsynth.marginals``, the measurement and draft sessions, the noise mechanisms they charge for,
or the CONFIDENTIAL audit (``dpsynth.audit``, which reads the real table); only
``dpsynth/privacy/`` imports opendp. Names are matched as prefixes, so each rule holds
whether a module is one file or a package (``audit.py`` or ``audit/``).

The checker (:func:`_imports`, :func:`_closure`) reads every import statement in a
file: at module level, in class and function bodies, under ``if TYPE_CHECKING:``,
in ``try`` blocks, and ``importlib.import_module`` / ``__import__`` calls with a
literal name; relative imports are resolved from the file's place in the package.
``test_checker_sees_every_import_form`` runs it on probe files to show it misses none.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import dpsynth

ROOT = Path(dpsynth.__file__).parent
FORBIDDEN = (
    "dpsynth.io",
    "dpsynth.marginals",
    "dpsynth.privacy.session",
    "dpsynth.privacy.draft_session",
    "dpsynth.privacy.mechanisms",
    "dpsynth.audit",
)

LOAD, CALL, TYPING = "load", "call", "typing"
"""When an import runs: as the module loads, when a function is called, or never
(under ``if TYPE_CHECKING:``)."""


@dataclass(frozen=True)
class Import:
    """One import, resolved to absolute names."""

    module: str
    """``import a.b`` -> ``a.b``; ``from ..x import y`` in ``dpsynth/engines/m.py`` -> ``dpsynth.x``."""
    names: tuple[str, ...]
    """The names after ``from ... import`` (empty for ``import a.b``)."""
    when: str
    line: int

    def targets(self) -> set[str]:
        """Every dotted name the import may load: the module, and ``module.name`` per name."""
        return {self.module, *(f"{self.module}.{n}" for n in self.names)}


def _module_name(path: Path) -> str:
    """``.../dpsynth/engines/aim.py`` -> ``dpsynth.engines.aim`` (also for a copy of the
    layout elsewhere, such as a probe file under ``tmp_path/dpsynth/``)."""
    parts = path.with_suffix("").parts
    top = max(i for i, p in enumerate(parts[:-1]) if p == "dpsynth")
    names = list(parts[top:])
    if names[-1] == "__init__":
        names.pop()
    return ".".join(names)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _dynamic_import(node: ast.Call) -> str | None:
    """The literal module name of ``importlib.import_module("x")`` / ``__import__("x")``."""
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
    if name in ("import_module", "__import__") and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    return None


def read_imports(path: Path) -> list[Import]:
    """Every import in ``path``, with when it runs (see :data:`LOAD`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: list[Import] = []

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = package.split(".")
        if node.level - 1 >= len(base):
            raise AssertionError(f"{path}:{node.lineno}: relative import beyond the top package")
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def visit(node: ast.AST, when: str) -> None:
        if isinstance(node, ast.Import):
            out.extend(Import(a.name, (), when, node.lineno) for a in node.names)
            return
        if isinstance(node, ast.ImportFrom):
            out.append(Import(resolve(node), tuple(a.name for a in node.names), when, node.lineno))
            return
        if isinstance(node, ast.Call) and (name := _dynamic_import(node)) is not None:
            out.append(Import(name, (), when, node.lineno))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, TYPING)
            for stmt in node.orelse:
                visit(stmt, when)
            return
        inner = CALL if when == LOAD and isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) else when
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(tree, LOAD)
    return out


def _imports(path: Path) -> set[str]:
    """Every dotted name ``path`` may import, whenever it runs (the boundary counts a
    deferred or type-checking-only import as reaching its module)."""
    return {t for imp in read_imports(path) for t in imp.targets()}


def _file_for(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for cand in (ROOT.parent / rel.with_suffix(".py"), ROOT.parent / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _closure(start: Path) -> set[str]:
    """Every name reachable from ``start`` through dpsynth's own modules."""
    seen: set[str] = set()
    todo = [start]
    done: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in done:
            continue
        done.add(f)
        for m in _imports(f):
            seen.add(m)
            if m.startswith("dpsynth"):
                g = _file_for(m)
                if g is not None:
                    todo.append(g)
    return seen


def _hits(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


ENGINE_FILES = sorted((ROOT / "engines").rglob("*.py"))
REPORT_FILES = sorted((ROOT / "report").rglob("*.py"))


def test_engine_and_report_files_exist() -> None:
    assert {"base.py", "sampler.py", "estimation.py", "mst.py", "aim.py"} <= {p.name for p in ENGINE_FILES}
    assert {"__init__.py", "privacy.py", "quality.py", "datasheet.py"} <= {p.name for p in REPORT_FILES}


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: p.name)
def test_engines_do_not_reach_private_modules(path: Path) -> None:
    reached = _closure(path)
    assert _hits(reached, FORBIDDEN) == []
    assert _hits(reached, ("opendp",)) == []


@pytest.mark.parametrize("path", REPORT_FILES, ids=lambda p: p.name)
def test_public_reports_do_not_reach_private_modules(path: Path) -> None:
    reached = _closure(path)
    assert _hits(reached, FORBIDDEN) == []
    assert _hits(reached, ("opendp",)) == []


def test_schema_drafting_logic_does_not_reach_private_modules() -> None:
    """``dpsynth/draft.py`` decides a schema draft from noisy answers only: it gets a draft
    session, never the table, and imports neither the private modules nor opendp."""
    reached = _closure(ROOT / "draft.py")
    assert _hits(reached, FORBIDDEN) == []
    assert _hits(reached, ("opendp",)) == []


def test_audit_package_is_on_the_private_side() -> None:
    audit_files = {p.name for p in (ROOT / "audit").rglob("*.py")}
    assert {"__init__.py", "utility.py", "disclosure.py", "render.py"} <= audit_files
    # it reads the real table itself: the check above is what keeps it out of public code
    assert _hits(_closure(ROOT / "audit" / "__init__.py"), ("dpsynth.io",))


def test_forbidden_modules_exist() -> None:
    """A rule about a module that is not there guards nothing."""
    assert [m for m in FORBIDDEN if _file_for(m) is None] == []


def test_validation_does_not_reach_private_modules() -> None:
    """The great-expectations suite runs on the synthetic table only, in a worker process
    as a rule (its results go into the public bundle)."""
    for name in ("validate.py", "validation_worker.py"):
        reached = _closure(ROOT / name)
        assert _hits(reached, FORBIDDEN) == [], name
        assert _hits(reached, ("opendp",)) == [], name


def test_only_validate_imports_great_expectations() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                 if p != ROOT / "validate.py" and _hits(_imports(p), ("great_expectations",))]
    assert offenders == []
    assert _hits(_imports(ROOT / "validate.py"), ("great_expectations",))


def test_only_privacy_package_imports_opendp() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        if (ROOT / "privacy") in path.parents:
            continue
        if _hits(_imports(path), ("opendp",)):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


# -- the checker itself -----------------------------------------------------------------

PROBE = Path("dpsynth", "engines", "_boundary_probe.py")

FORMS = {
    "import": ("import dpsynth.io\n", "dpsynth.io"),
    "import-as": ("import dpsynth.io as public_looking\n", "dpsynth.io"),
    "import-submodule": ("import dpsynth.marginals.spark\n", "dpsynth.marginals"),
    "from-package": ("from dpsynth import io\n", "dpsynth.io"),
    "from-package-as": ("from dpsynth import marginals as m\n", "dpsynth.marginals"),
    "from-module": ("from dpsynth.privacy.session import MeasurementSession\n",
                    "dpsynth.privacy.session"),
    "from-subpackage-module": ("from dpsynth.audit.render import x\n", "dpsynth.audit"),
    "relative": ("from ..privacy import session as s\n", "dpsynth.privacy.session"),
    "relative-module": ("from ..privacy.mechanisms import gaussian_counts\n",
                        "dpsynth.privacy.mechanisms"),
    "relative-bare": ("from .. import io\n", "dpsynth.io"),
    "relative-package": ("from ..audit import write_audit\n", "dpsynth.audit"),
    "in-function": ("def f():\n    from dpsynth.privacy import session\n    return session\n",
                    "dpsynth.privacy.session"),
    "in-method": ("class C:\n    def m(self):\n        import dpsynth.io as x\n", "dpsynth.io"),
    "in-class-body": ("class C:\n    import dpsynth.marginals\n", "dpsynth.marginals"),
    "type-checking": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from dpsynth.privacy.session import MeasurementSession\n",
                      "dpsynth.privacy.session"),
    "typing-attr": ("import typing\nif typing.TYPE_CHECKING:\n    import dpsynth.audit\n",
                    "dpsynth.audit"),
    "try": ("try:\n    import dpsynth.marginals\nexcept ImportError:\n    pass\n",
            "dpsynth.marginals"),
    "importlib": ("import importlib\nm = importlib.import_module('dpsynth.io')\n", "dpsynth.io"),
    "import_module": ("from importlib import import_module\nm = import_module('dpsynth.audit')\n",
                      "dpsynth.audit"),
    "dunder-import": ("m = __import__('dpsynth.marginals')\n", "dpsynth.marginals"),
}


def _probe(tmp_path: Path, source: str) -> Path:
    """``source`` as ``dpsynth/engines/_boundary_probe.py`` under ``tmp_path``: the place an
    engine would be, so relative imports resolve as they would for an engine."""
    path = tmp_path / PROBE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    assert _module_name(path) == "dpsynth.engines._boundary_probe"
    return path


@pytest.mark.parametrize("form", FORMS)
def test_checker_sees_every_import_form(tmp_path: Path, form: str) -> None:
    source, reached = FORMS[form]
    hits = _hits(_imports(_probe(tmp_path, source)), FORBIDDEN)
    assert hits, f"the checker missed {form}: {source!r}"
    assert all(h == reached or h.startswith(reached + ".") for h in hits), hits


@pytest.mark.parametrize("source", [
    "from dpsynth import pipeline\n",  # through the pipeline's own imports
    "from dpsynth import check\n",     # a lazy package attribute: dpsynth/__init__ -> pipeline
])
def test_checker_follows_imports_through_dpsynth(tmp_path: Path, source: str) -> None:
    path = _probe(tmp_path, source)
    assert _hits(_imports(path), FORBIDDEN) == []
    reached = _closure(path)
    assert _hits(reached, ("dpsynth.io",)) and _hits(reached, ("dpsynth.privacy.session",))


def test_checker_does_not_flag_public_imports(tmp_path: Path) -> None:
    source = ("from . import base\nfrom ..errors import UsageError\nimport dpsynth.domain\n"
              "from dpsynth.privacy.accountant import Budget\nimport io\n")
    assert _hits(_closure(_probe(tmp_path, source)), FORBIDDEN) == []


def test_checker_sees_opendp(tmp_path: Path) -> None:
    for source in ("import opendp.prelude as dp\n", "from opendp import prelude\n",
                   "def f():\n    import opendp\n"):
        assert _hits(_imports(_probe(tmp_path, source)), ("opendp",)), source
