"""``NAME_FILE`` settings: the ledger URL read from a mounted secret file, never echoed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from dpsynth.cli import main
from dpsynth.config import ReleaseConfig, env_or_file
from dpsynth.errors import UsageError

PASSWORD = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DPSYNTH_LEDGER", raising=False)
    monkeypatch.delenv("DPSYNTH_LEDGER_FILE", raising=False)


def test_value_from_file_without_trailing_newline(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for content in ("sqlite:///x.db\n", "sqlite:///x.db", "sqlite:///x.db\r\n"):
        (tmp_path / "url").write_text(content, newline="")
        monkeypatch.setenv("DPSYNTH_LEDGER_FILE", str(tmp_path / "url"))
        assert env_or_file("DPSYNTH_LEDGER") == "sqlite:///x.db"
    # the command line wins over the file, as it does over DPSYNTH_LEDGER
    assert env_or_file("DPSYNTH_LEDGER", "sqlite:///y.db") == "sqlite:///y.db"


def test_nothing_set() -> None:
    assert env_or_file("DPSYNTH_LEDGER") is None


@pytest.mark.parametrize(("content", "message"), [
    ("", "is empty"), ("\n", "is empty"), (f"postgresql://u:{PASSWORD}@h/d\nextra\n", "one line"),
])
def test_bad_file_never_echoes_the_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         content: str, message: str) -> None:
    (tmp_path / "url").write_text(content)
    monkeypatch.setenv("DPSYNTH_LEDGER_FILE", str(tmp_path / "url"))
    with pytest.raises(UsageError, match=message) as exc:
        env_or_file("DPSYNTH_LEDGER")
    assert PASSWORD not in str(exc.value)


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DPSYNTH_LEDGER_FILE", str(tmp_path / "nope"))
    with pytest.raises(UsageError, match=r"DPSYNTH_LEDGER_FILE .* does not exist"):
        env_or_file("DPSYNTH_LEDGER")


def test_both_set_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "url").write_text("sqlite:///x.db\n")
    monkeypatch.setenv("DPSYNTH_LEDGER_FILE", str(tmp_path / "url"))
    monkeypatch.setenv("DPSYNTH_LEDGER", f"postgresql://u:{PASSWORD}@h/d")
    with pytest.raises(UsageError, match="both set") as exc:
        env_or_file("DPSYNTH_LEDGER", f"postgresql://u:{PASSWORD}@h/d")
    assert PASSWORD not in str(exc.value)
    res = CliRunner().invoke(main, ["ledger", "show", "--json"])
    assert res.exit_code == 2
    assert "both set" in res.stderr and PASSWORD not in res.output + res.stderr


def test_ledger_commands_read_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "url").write_text(f"sqlite:///{tmp_path / 'ledger.db'}\n")
    monkeypatch.setenv("DPSYNTH_LEDGER_FILE", str(tmp_path / "url"))
    res = CliRunner().invoke(main, ["ledger", "init", "--dataset-id", "d", "--total-epsilon",
                                    "2", "--json"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["ledger", "show", "--json"])
    assert [d["dataset_id"] for d in json.loads(res.stdout)["datasets"]] == ["d"]


def test_release_reads_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The release command resolves DPSYNTH_LEDGER_FILE before building its config (a
    missing schema stops it after that, before any ledger is opened)."""
    (tmp_path / "url").write_text(f"postgresql://u:{PASSWORD}@127.0.0.1:1/d\n")
    monkeypatch.setenv("DPSYNTH_LEDGER_FILE", str(tmp_path / "url"))
    res = CliRunner().invoke(main, ["release", "--schema", str(tmp_path / "none.yaml"),
                                    "--input", str(tmp_path / "t.csv"), "--out",
                                    str(tmp_path / "out"), "--epsilon", "1", "--json"])
    assert res.exit_code == 2
    assert "--ledger is required" not in res.output + res.stderr
    assert PASSWORD not in res.output + res.stderr
    monkeypatch.delenv("DPSYNTH_LEDGER_FILE")
    res = CliRunner().invoke(main, ["release", "--schema", str(tmp_path / "none.yaml"),
                                    "--input", str(tmp_path / "t.csv"), "--out",
                                    str(tmp_path / "out"), "--epsilon", "1"])
    assert res.exit_code == 2 and "DPSYNTH_LEDGER_FILE" in res.stderr


def test_ledger_url_is_not_in_the_config_repr() -> None:
    fields = {f.name: f for f in dataclasses.fields(ReleaseConfig)}
    assert fields["ledger_url"].repr is False
    assert fields["ledger_url"].metadata["option"].secret
