"""Release settings declared once (dpsynth.config): validation, engine options, config files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_release import env, run_release  # noqa: F401  (the fixture)

from dpsynth.cli import main
from dpsynth.config import ReleaseConfig, engine_settings, parse_engine_options
from dpsynth.engines import AIMSettings, MSTSettings
from dpsynth.errors import UsageError

BASE = {"schema_path": Path("s.yaml"), "input_path": Path("t.csv"), "out_dir": Path("out/b"),
        "epsilon": 1.0, "ledger_url": "sqlite:///l.db"}


def test_every_setting_has_one_declaration() -> None:
    flags = [f.metadata["option"].flag for f in dataclasses.fields(ReleaseConfig)]
    assert len(flags) == len(set(flags))
    from dpsynth.cli import release_cmd

    cli_flags = {o for p in release_cmd.params for o in p.opts}
    assert set(flags) <= cli_flags  # each declaration became a click option


@pytest.mark.parametrize("bad", [{"epsilon": 1e308}, {"epsilon": 0}, {"epsilon": float("nan")},
                                 {"delta": 1.0}, {"engine": "nope"}, {"backend": "dask"},
                                 {"rows": 0}, {"seed": -1}, {"ledger_url": None}])
def test_release_config_refuses_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        ReleaseConfig(**{**BASE, **bad})  # type: ignore[arg-type]


def test_engine_options_are_typed_and_validated_by_the_engine() -> None:
    s = engine_settings("aim", parse_engine_options(["max_model_size=500000", "degree=3",
                                                     "max_seconds=null"]))
    assert s == AIMSettings(max_model_size=500000, degree=3, max_seconds=None)
    assert engine_settings("mst", {"oneway_share": 0.2}) == MSTSettings(oneway_share=0.2)
    with pytest.raises(UsageError, match=r"not a setting of engine .aim.*max_model_size"):
        engine_settings("aim", {"max_modelsize": 1})
    with pytest.raises(UsageError, match="must be int"):
        engine_settings("aim", {"max_model_size": "big"})
    with pytest.raises(UsageError, match="must be 1, 2 or 3"):  # the engine's own validation
        engine_settings("aim", {"degree": 7})
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_engine_options(["degree"])


def test_config_file_and_options_reach_the_privacy_report(env: dict[str, Path | str],  # noqa: F811
                                                          tmp_path: Path) -> None:
    cfg = tmp_path / "release.yaml"
    cfg.write_text("epsilon: 0.5\nengine: mst\nengine_options: {max_iters: 300, oneway_share: 0.3}\n")
    code, out, err = run_release(env, "b1", "--json", "--config", str(cfg),
                                 "--engine-option", "oneway_share=0.25")
    assert code == 0, err
    result = json.loads(out)
    assert result["epsilon"] == 0.5 and result["engine"] == "mst"
    report = json.loads((Path(result["bundle"]) / "privacy-report.json").read_text())
    text = json.dumps(report)
    assert '"max_iters": 300' in text and '"oneway_share": 0.25' in text  # the option won


def test_bad_engine_option_is_refused_before_the_budget(env: dict[str, Path | str]) -> None:  # noqa: F811
    code, _, err = run_release(env, "b1", "--epsilon", "1", "--engine-option", "nope=1")
    assert code == 2 and "nope" in err
    res = CliRunner().invoke(main, ["ledger", "show", "--ledger", str(env["ledger"]), "--json"])
    assert json.loads(res.stdout)["datasets"][0]["charges"] == []


def test_smartnoise_adapters_get_the_release_delta() -> None:
    """Issue 16: the smartnoise adapters expressed rho with a fixed delta of 1e-9."""
    cfg = ReleaseConfig(**{**BASE, "engine": "smartnoise-mst", "delta": 1e-6})  # type: ignore[arg-type]
    assert cfg.settings().delta == 1e-6
    cfg = ReleaseConfig(**{**BASE, "engine": "smartnoise-aim", "delta": 1e-6,  # type: ignore[arg-type]
                           "engine_options": {"delta": 1e-7}})
    assert cfg.settings().delta == 1e-7  # an explicit engine option wins
    assert not hasattr(ReleaseConfig(**BASE).settings(), "delta")  # type: ignore[arg-type]


def test_config_file_has_the_schemas_yaml_limits(tmp_path: Path) -> None:
    """A ``--config`` file is read like a schema: an alias bomb is refused before it is
    built, in one line naming the file (exit 2)."""
    from dpsynth.config import load_config_file

    bomb = tmp_path / "bomb.yaml"
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(UsageError, match=r"config file .*bomb\.yaml.*(aliases|values)"):
        load_config_file(bomb)
    bad = tmp_path / "bad.yaml"
    bad.write_text("epsilon: [1\n")
    with pytest.raises(UsageError, match=r"config file .*bad\.yaml.* is not valid YAML"):
        load_config_file(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text("epsilon: 0.5\nquiet: true\n")
    assert load_config_file(ok) == {"epsilon": 0.5, "quiet": True}
