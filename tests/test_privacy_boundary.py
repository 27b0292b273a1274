"""The privacy boundary, checked on the source: engines and public reports never reach
private data.

Nothing in ``dpsynth/engines/`` may import (directly or through another dpsynth
module) the private-table modules ``dpsynth.io``, ``dpsynth.check``,
``dpsynth.marginals`` or the measurement session; nothing in ``dpsynth/report/``
(the public reports) may import those nor the CONFIDENTIAL audit package
``dpsynth.audit``, which reads the real table; only ``dpsynth/privacy/`` imports
opendp.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dpsynth

ROOT = Path(dpsynth.__file__).parent
FORBIDDEN = ("dpsynth.io", "dpsynth.check", "dpsynth.marginals", "dpsynth.privacy.session")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            out.add(prefix)
            out.update(f"{prefix}.{a.name}" for a in node.names)
    return out


def _file_for(module: str) -> Path | None:
    rel = Path(*module.split("."))
    for cand in (ROOT.parent / rel.with_suffix(".py"), ROOT.parent / rel / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _closure(start: Path) -> set[str]:
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


def test_engine_files_exist() -> None:
    names = {p.name for p in ENGINE_FILES}
    assert {"base.py", "sampler.py", "estimation.py", "mst.py", "aim.py"} <= names


@pytest.mark.parametrize("path", ENGINE_FILES, ids=lambda p: p.name)
def test_engines_do_not_reach_private_modules(path: Path) -> None:
    reached = _closure(path)
    assert _hits(reached, FORBIDDEN) == []
    assert _hits(reached, ("opendp",)) == []


REPORT_FILES = sorted((ROOT / "report").rglob("*.py"))
AUDIT_FILES = sorted((ROOT / "audit").rglob("*.py"))


@pytest.mark.parametrize("path", REPORT_FILES, ids=lambda p: p.name)
def test_public_reports_do_not_reach_private_modules(path: Path) -> None:
    assert _hits(_closure(path), (*FORBIDDEN, "dpsynth.audit")) == []


def test_audit_package_is_on_the_private_side() -> None:
    assert {"__init__.py", "utility.py", "disclosure.py", "render.py"} <= {p.name for p in AUDIT_FILES}
    # it reads the real table itself: the check above is what keeps it out of public code
    assert _hits(_closure(ROOT / "audit" / "__init__.py"), ("dpsynth.io",))


def test_only_privacy_package_imports_opendp() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        if (ROOT / "privacy") in path.parents:
            continue
        if _hits(_imports(path), ("opendp",)):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_checker_sees_relative_and_aliased_imports(tmp_path: Path) -> None:
    # The checker itself must catch the forms an import can take.
    src = "from ..privacy import session as s\nimport dpsynth.io as x\nfrom dpsynth import marginals\n"
    fake = ROOT / "engines" / "_boundary_probe.py"
    assert not fake.exists()
    tree_imports = set()
    tree = ast.parse(src)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 2:
            tree_imports.add("dpsynth." + (node.module or "") + "." + node.names[0].name)
        elif isinstance(node, ast.ImportFrom):
            tree_imports.add(f"{node.module}.{node.names[0].name}")
        elif isinstance(node, ast.Import):
            tree_imports.add(node.names[0].name)
    assert len(_hits(tree_imports, FORBIDDEN)) == 3
