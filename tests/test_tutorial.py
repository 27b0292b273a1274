"""docs/your-first-release.md: every command in the tutorial runs, in order, on the shipped example.

The tutorial's commands are the lines starting with ``$ `` inside its ```` ```console ````
blocks. They run one after another in one scratch directory (the repository's
``examples/`` and ``schemas/`` linked into it), so a later command sees what an earlier
one wrote (the ledger, the draft, the bundle), as it would for a reader. ``dpsynth`` runs
as ``python -m dpsynth`` from this checkout. A command is expected to exit 0 unless the
line ends with a comment ``# exit N``; the tutorial uses that to show a refusal.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIAL = ROOT / "docs" / "your-first-release.md"
_BLOCK = re.compile(r"^```console\n(.*?)^```", re.S | re.M)
_EXIT = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")


def tutorial_commands(text: str) -> list[tuple[str, int]]:
    """``(command, expected exit code)`` for every ``$ `` line of every console block, in order."""
    out: list[tuple[str, int]] = []
    for block in _BLOCK.findall(text):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.startswith("$ "):
                continue
            cmd = line[2:]
            while cmd.endswith("\\") and i < len(lines):  # continuation lines
                cmd = cmd[:-1].rstrip() + " " + lines[i].strip()
                i += 1
            m = _EXIT.search(cmd)
            code = int(m.group(1)) if m else 0
            out.append((_EXIT.sub("", cmd).strip(), code))
    return out


def test_tutorial_parser_reads_continuations_and_exit_codes() -> None:
    text = ("intro\n```console\n$ dpsynth a \\\n    --b c\nprinted output\n"
            "$ dpsynth d  # exit 4\n```\n```yaml\n$ not: a command\n```\n")
    assert tutorial_commands(text) == [("dpsynth a --b c", 0), ("dpsynth d", 4)]


def test_tutorial_commands_run_on_the_shipped_example(tmp_path: Path) -> None:
    commands = tutorial_commands(TUTORIAL.read_text(encoding="utf-8"))
    names = [shlex.split(c)[:3] for c, _ in commands]
    # the tutorial covers the whole path from a CSV to a checked bundle
    for step in (["dpsynth", "schema", "draft"], ["dpsynth", "schema", "check"],
                 ["dpsynth", "ledger", "init"], ["dpsynth", "ledger", "show"]):
        assert step in names, f"the tutorial has no `{' '.join(step)}` command"
    for verb in ("release", "inspect", "audit"):
        assert any(n[:2] == ["dpsynth", verb] for n in names), f"no `dpsynth {verb}` command"
    for sub in ("examples", "schemas"):
        (tmp_path / sub).symlink_to(ROOT / sub)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    env.pop("DPSYNTH_LEDGER", None)
    env.pop("DPSYNTH_LEDGER_FILE", None)
    for cmd, code in commands:
        argv = shlex.split(cmd)
        if argv[0] == "dpsynth":
            argv = [sys.executable, "-m", "dpsynth", *argv[1:]]
        res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=900, check=False)
        assert res.returncode == code, (
            f"`{cmd}` exited {res.returncode}, the tutorial says {code}\n"
            f"stdout: {res.stdout[-2000:]}\nstderr: {res.stderr[-2000:]}")


if __name__ == "__main__":  # pragma: no cover
    for c, k in tutorial_commands(TUTORIAL.read_text(encoding="utf-8")):
        print(k, c)
    sys.exit(pytest.main([__file__]))
