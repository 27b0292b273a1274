"""docs/cli.md is generated from --help; every command must have help text.

Regenerate with: python tests/test_cli_docs.py
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path

import click
from click.testing import CliRunner

import dpsynth
from dpsynth.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


Entry = tuple[tuple[str, ...], click.Command]


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[Entry]:
    out: list[Entry] = [(prefix, group)]
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*prefix, name))
        else:
            out.append(((*prefix, name), cmd))
    return out


def render() -> str:
    parts = ["# dpsynth command-line reference\n",
             "Generated from `--help` by `python tests/test_cli_docs.py`; do not edit by hand.\n"]
    for path, _ in _commands(main):
        res = CliRunner().invoke(main, [*path, "--help"], terminal_width=100, prog_name="dpsynth")
        assert res.exit_code == 0, res.output
        title = " ".join(("dpsynth", *path))
        parts.append(f"## `{title}`\n\n```\n{res.stdout.rstrip()}\n```\n")
    return "\n".join(parts)


def test_every_command_and_option_has_help() -> None:
    for path, cmd in _commands(main):
        assert cmd.help or cmd.short_help, f"command {' '.join(path)} has no help text"
        for p in cmd.params:
            if isinstance(p, click.Option) and p.name not in ("help", "version"):
                assert p.help, f"option {p.opts} of {' '.join(path) or 'dpsynth'} has no help"


def test_cli_reference_is_current() -> None:
    assert DOC.read_text() == render(), "docs/cli.md is stale: run python tests/test_cli_docs.py"


def test_readme_release_synopsis_is_generated_from_the_declarations() -> None:
    """The README's `dpsynth release` block comes from ReleaseConfig's declarations
    (regenerate it from dpsynth.config.release_synopsis())."""
    from dpsynth.config import ReleaseConfig, release_synopsis

    readme = (DOC.parents[1] / "README.md").read_text()
    assert release_synopsis() in readme
    for f in dataclasses.fields(ReleaseConfig):  # every setting is in the block
        assert f.metadata["option"].flag in release_synopsis()


def test_public_api_is_exact() -> None:
    """__all__ lists exactly the public names (submodules aside), and nothing stale."""
    public = {n for n in dir(dpsynth)  # dir(): the pipeline's names are loaded lazily
              if not n.startswith("_")
              and not isinstance(getattr(dpsynth, n), types.ModuleType)}
    assert set(dpsynth.__all__) - {"__version__"} == public


if __name__ == "__main__":
    DOC.write_text(render())
    print(f"wrote {DOC}")
