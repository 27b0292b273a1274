"""requirements.lock: the image's packages, pinned with hashes, and the check that keeps it
in step with pyproject.toml.

    .venv/bin/python ci/lock.py update   # regenerate (needs uv and packaging; PyPI reachable)
    .venv/bin/python ci/lock.py check    # offline: exit 1 when pyproject.toml and the lock disagree

The lock covers what the Dockerfile installs: pyproject.toml's ``dependencies``, the
``postgres`` extra (the image's default EXTRAS) and the build backend
(``[build-system] requires``, so dpsynth itself is built without fetching anything
unpinned). It is resolved for the image: CPython 3.11 on x86-64 Linux. Its header records
the SHA-256 of those requirements as written in pyproject.toml (``input-sha256``); the
check fails when pyproject.toml changed since the lock was made, when a direct requirement
is missing or pinned outside its range, or when a pin lacks a hash.
``tests/test_k8s_manifests.py`` runs the check.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
EXTRAS = ("postgres",)
PYTHON, PLATFORM = "3.11", "x86_64-unknown-linux-gnu"
UV_VERSION = "0.13.9"  # the uv that wrote the lock: another version may annotate differently

HEADER = """\
# requirements.lock: every package of the dpsynth image (pyproject.toml's dependencies, the
# {extras} extra and the build backend), for CPython {python} on x86-64 Linux.
# Why everything is pinned: the image is built from this file alone, so two builds install
# the same versions, and `pip install --require-hashes` refuses any file whose SHA-256 is
# not listed here (a replaced or tampered upload fails the build). "# via" names the
# requirement that needs each package.
# Regenerate after changing pyproject.toml: .venv/bin/python ci/lock.py update (uv {uv}).
# tests/test_k8s_manifests.py (ci/lock.py check) fails while this file and pyproject.toml
# disagree.
# input-sha256: {digest}
"""


def direct_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The requirements the lock must satisfy, as written in pyproject.toml."""
    doc = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    reqs = list(doc["project"]["dependencies"])
    for extra in EXTRAS:
        reqs += doc["project"]["optional-dependencies"][extra]
    reqs += doc["build-system"]["requires"]
    return reqs


def input_digest(reqs: list[str]) -> str:
    text = "\n".join(sorted(" ".join(r.split()) for r in reqs))
    return hashlib.sha256(f"python={PYTHON};platform={PLATFORM}\n{text}".encode()).hexdigest()


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def pins(lock_text: str) -> dict[str, tuple[str, int]]:
    """``name -> (version, number of hashes)`` from a ``--generate-hashes`` lock."""
    out: dict[str, tuple[str, int]] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock_text):
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)", block)
        if m:
            out[_name(m.group(1))] = (m.group(3), len(re.findall(r"--hash=sha256:[0-9a-f]{64}",
                                                                  block)))
    return out


def problems(lock: Path = LOCK, pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """Why the lock does not fit pyproject.toml (empty when it does)."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    if not lock.is_file():
        return [f"{lock.name} is missing: run .venv/bin/python ci/lock.py update"]
    text = lock.read_text(encoding="utf-8")
    reqs = direct_requirements(pyproject)
    out = []
    m = re.search(r"^# input-sha256: ([0-9a-f]{64})$", text, re.M)
    if not m or m.group(1) != input_digest(reqs):
        out.append("pyproject.toml's dependencies changed since requirements.lock was made: "
                   "run .venv/bin/python ci/lock.py update")
    pinned = pins(text)
    env = {"python_version": PYTHON, "python_full_version": f"{PYTHON}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    for r in map(Requirement, reqs):
        if r.marker is not None and not r.marker.evaluate(env):
            continue
        name = _name(r.name)
        if name not in pinned:
            out.append(f"{r.name} ({r}) is not in requirements.lock")
        elif not r.specifier.contains(Version(pinned[name][0]), prereleases=True):
            out.append(f"requirements.lock pins {r.name}=={pinned[name][0]}, outside {r}")
    out += [f"requirements.lock pins {n}=={v} without a hash" for n, (v, h) in pinned.items()
            if h == 0]
    unpinned = [ln for ln in text.splitlines() if re.match(r"[A-Za-z0-9]", ln) and "==" not in ln]
    out += [f"requirements.lock has an unpinned line: {ln!r}" for ln in unpinned]
    return out


def update() -> int:
    uv = shutil.which("uv")
    if uv is None:
        print(f"ci/lock.py: needs uv (pip install uv=={UV_VERSION})", file=sys.stderr)
        return 2
    reqs = direct_requirements()
    build = "\n".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"])
    res = subprocess.run(
        [uv, "pip", "compile", "pyproject.toml", "-", *(f"--extra={e}" for e in EXTRAS),
         "--generate-hashes", "--python-version", PYTHON, "--python-platform", PLATFORM,
         "--custom-compile-command", ".venv/bin/python ci/lock.py update", "--quiet"],
        cwd=ROOT, input=build + "\n", capture_output=True, text=True, check=False)
    if res.returncode != 0:
        print(res.stderr, file=sys.stderr)
        return res.returncode
    body = res.stdout
    for req in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]:
        name = re.match(r"[A-Za-z0-9._-]+", req)
        assert name is not None
        # stdin carries no name: say where the build backend's pin comes from
        body = re.sub(rf"(?m)^({re.escape(name.group(0))}==\S+ \\\n(?:    --hash=\S+ \\\n)*"
                      rf"    --hash=\S+)\n(?!    # via)",
                      r"\1\n    # via pyproject.toml [build-system] requires\n", body)
    LOCK.write_text(HEADER.format(extras=", ".join(EXTRAS), python=PYTHON, uv=UV_VERSION,
                                  digest=input_digest(reqs)) + body, encoding="utf-8")
    found = problems()
    for p in found:
        print(p, file=sys.stderr)
    return 1 if found else 0


def main(argv: list[str]) -> int:
    if argv == ["update"]:
        return update()
    if argv == ["check"]:
        found = problems()
        for p in found:
            print(p, file=sys.stderr)
        return 1 if found else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
