"""Release settings, declared once.

Each field of :class:`ReleaseConfig` carries its command-line declaration
(:class:`Option` in the field's metadata): its flag, help text, environment
variable and value type. From that one declaration come

* the ``dpsynth release`` click options (:func:`dpsynth.cli.release_options`),
* the validation in ``ReleaseConfig.__post_init__``,
* ``docs/cli.md`` (generated from ``--help``) and the README's command block
  (:func:`release_synopsis`, checked by ``tests/test_cli_docs.py``).

A setting with an environment variable ``NAME`` can also be given as ``NAME_FILE``,
the path of a file that holds the value (a mounted Kubernetes Secret), so a
credential such as the ledger URL need not sit in the process environment
(:func:`env_or_file`).

Engine and backend choices come from their registries (``dpsynth.engines.ENGINES``
and ``BACKENDS`` below). Engine settings (AIM's ``max_model_size``, MST's
shares, ...) are given as ``--engine-option KEY=VALUE`` or under
``engine_options:`` in a ``--config FILE``; :func:`engine_settings` turns them
into the engine's frozen settings class, which validates them. A config file
holds the same settings as the options (by field name); options given on the
command line win.

Nothing here reads data.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpsynth.confidential import refuse_audit_dir
from dpsynth.errors import SchemaError, UsageError

__all__ = [
    "BACKENDS",
    "DEFAULT_DELTA",
    "MAX_ROWS",
    "Option",
    "ReleaseConfig",
    "engine_settings",
    "env_or_file",
    "load_config_file",
    "release_synopsis",
]

DEFAULT_DELTA = 1e-9
BACKENDS = ("polars", "spark")
"""Where the private steps run: ``polars`` on this machine, or ``spark``."""
MAX_EPSILON = 100.0
"""Largest epsilon of one release: beyond it DP gives no meaningful protection and the
conversions lose precision."""
MAX_ROWS = 2**32 - 1
"""Most synthetic rows of one release (``--rows``): the synthetic table is a polars frame,
whose row index is 32-bit. Below it, the release also refuses more rows than the
memory available can hold (``dpsynth.capacity``), before anything is reserved."""


@dataclass(frozen=True)
class Option:
    """The command-line declaration of one setting."""

    flag: str
    help: str
    metavar: str | None = None
    envvar: str | None = None
    required: bool = False
    choices: str | None = None
    """``engines`` or ``backends``: the choices come from that registry."""
    secret: bool = False
    """The value may hold a credential: kept out of ``repr`` and never echoed."""


def _opt(default: Any, flag: str, help: str, **kw: Any) -> Any:
    opt = Option(flag, help, **kw)
    meta = {"option": opt}
    if isinstance(default, Mapping):
        return field(default_factory=lambda: types.MappingProxyType({}), metadata=meta)
    return field(default=default, metadata=meta, repr=not opt.secret)


def _engine_names() -> tuple[str, ...]:
    from dpsynth.engines import ENGINES

    return tuple(ENGINES)


@dataclass(frozen=True, kw_only=True)
class ReleaseConfig:
    """Everything a release needs; validated on construction."""

    schema_path: Path = _opt(None, "--schema", "Table schema file (YAML).", metavar="FILE",
                             required=True)
    input_path: Path | str = _opt(
        None, "--input", "The private table: CSV, gzip CSV or Parquet (with --backend spark "
        "also a directory or a URL such as s3a://...).", metavar="FILE", required=True)
    out_dir: Path = _opt(None, "--out", "Bundle directory to create (must not exist or be "
                         "empty).", metavar="DIR", required=True)
    epsilon: float = _opt(None, "--epsilon", f"Epsilon of this release (at most {MAX_EPSILON:g}).",
                          metavar="E", required=True)
    delta: float = _opt(DEFAULT_DELTA, "--delta", "Delta of this release.", metavar="D")
    engine: str = _opt("aim", "--engine", "Synthesis engine.", choices="engines")
    rows: int | None = _opt(None, "--rows", "Synthetic rows (default: the DP estimate of the "
                            f"row count); at most {MAX_ROWS:,} and what the memory available "
                            "can hold, checked before the budget is reserved.", metavar="N")
    ledger_url: str | None = _opt(
        None, "--ledger", "Ledger URL: sqlite:///path or postgresql://...; required. Keep a "
        "SQLite ledger away from the bundle's directory. DPSYNTH_LEDGER_FILE may name a file "
        "holding the URL instead (a mounted secret).", metavar="URL",
        envvar="DPSYNTH_LEDGER", required=True, secret=True)
    dataset_id: str | None = _opt(None, "--dataset-id", "Ledger dataset id (default: the "
                                  "schema's name).", metavar="ID")
    release_id: str | None = _opt(
        None, "--release-id", "Release id; a release id that already has a charge is refused, "
        "so a retried job never spends twice.", metavar="ID")
    audit_dir: Path | None = _opt(
        None, "--audit-dir", "Write the CONFIDENTIAL internal audit report (utility against the "
        "real table) here; never inside, at or above the bundle.", metavar="DIR")
    sign_key: Path | None = _opt(
        None, "--sign-key", "Sign the bundle: write manifest.json.sig, an Ed25519 signature of "
        "manifest.json, with this private key (PEM; see `dpsynth keygen`). Researchers check it "
        "with `dpsynth inspect --verify-key KEY.pub`.", metavar="KEY")
    seed: int | None = _opt(None, "--seed", "Seed of the post-processing sampler (not the DP "
                            "noise).", metavar="S")
    backend: str = _opt("polars", "--backend", "Where the private steps (read, check, bound, "
                        "count) run: polars on this machine, or Spark (needs dpsynth[spark]).",
                        choices="backends")
    spark_master: str | None = _opt(
        None, "--spark-master", "Spark master URL for --backend spark (local[4], "
        "spark://host:7077, k8s://...). Default: the spark-submit environment or the active "
        "session, else local[*].", metavar="URL")
    allow_shared_input: bool = _opt(
        False, "--allow-shared-input", "Release an input file whose exact bytes were already "
        "charged in this ledger under another dataset id, with a separate budget (only when "
        "the two budgets are separate on purpose; refused with exit 4 otherwise).")
    engine_options: Mapping[str, Any] = _opt(
        types.MappingProxyType({}), "--engine-option",
        "An engine setting KEY=VALUE (repeatable), e.g. max_model_size=500000 for aim; "
        "validated by the engine and recorded in the privacy report.", metavar="KEY=VALUE")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.metadata["option"].required and getattr(self, f.name) is None:
                raise UsageError(f"{f.metadata['option'].flag} is required"
                                 + (" (or DPSYNTH_LEDGER or DPSYNTH_LEDGER_FILE)"
                                    if f.name == "ledger_url" else ""))
        if not (isinstance(self.epsilon, int | float) and math.isfinite(self.epsilon)
                and 0 < self.epsilon <= MAX_EPSILON):
            raise UsageError(f"epsilon ({self.epsilon}) must be a number in (0, {MAX_EPSILON:g}]")
        if not (isinstance(self.delta, int | float) and 0 < self.delta < 1):
            raise UsageError(f"delta ({self.delta}) must be in (0, 1)")
        if self.engine not in _engine_names():
            raise UsageError(f"engine ({self.engine!r}) must be one of: "
                             f"{', '.join(_engine_names())}")
        if self.backend not in BACKENDS:
            raise UsageError(f"backend ({self.backend!r}) must be one of: {', '.join(BACKENDS)}")
        if self.rows is not None and not (isinstance(self.rows, int) and 1 <= self.rows <= MAX_ROWS):
            raise UsageError(f"rows ({self.rows}) must be a positive integer, at most {MAX_ROWS:,}")
        if self.seed is not None and not (isinstance(self.seed, int) and self.seed >= 0):
            raise UsageError(f"seed ({self.seed}) must be a non-negative integer")
        if self.audit_dir is not None:
            refuse_audit_dir(self.audit_dir, self.out_dir, option="--audit-dir")
        object.__setattr__(self, "engine_options", types.MappingProxyType(dict(self.engine_options)))
        self.settings()  # validate engine options before anything else happens

    def settings(self) -> Any:
        """The engine's frozen settings object built from ``engine_options``. An engine
        setting named ``delta`` (the smartnoise adapters express the charged rho as
        an (epsilon, delta) pair) defaults to this release's ``delta``."""
        options = dict(self.engine_options)
        if "delta" in {f.name for f in dataclasses.fields(engine_settings(self.engine, {}))}:
            options.setdefault("delta", float(self.delta))
        return engine_settings(self.engine, options)

    @classmethod
    def from_values(cls, cli: Mapping[str, Any], file: Mapping[str, Any] | None = None
                    ) -> ReleaseConfig:
        """Merge a config file's values with command-line values (``None``/``False``/
        empty means "not given on the command line"; those win otherwise)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in (file or {}).items():
            if key not in known:
                raise UsageError(f"config file: unknown setting {key!r} (known: "
                                 f"{', '.join(sorted(known))})")
            values[key] = value
        for key, value in cli.items():
            if value is not None and value is not False and value != ():
                values[key] = value
        for key in ("schema_path", "out_dir", "audit_dir", "sign_key"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        if values.get("backend", "polars") == "polars" and values.get("input_path") is not None:
            values["input_path"] = Path(values["input_path"])
        return cls(**values)


def env_or_file(name: str, given: str | None = None) -> str | None:
    """A setting's value from the environment: ``given`` (the command line, or ``$NAME``
    as click read it) if set, else the content of the file named by ``$NAME_FILE``
    without its trailing newline. Refuses both ``NAME`` and ``NAME_FILE`` being set,
    and a file that is empty or holds more than one line. Messages name the variable
    and the file, never the value (it may be a password)."""
    var = f"{name}_FILE"
    file = os.environ.get(var)
    if file and os.environ.get(name):
        raise UsageError(f"{name} and {var} are both set; set only one")
    if given is not None or not file:
        return given
    try:
        text = Path(file).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{var} ({file!r}) does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{var} ({file!r}) cannot be read ({type(exc).__name__})") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value.strip():
        raise UsageError(f"{var} ({file!r}) is empty")
    if "\n" in value or "\r" in value:
        raise UsageError(f"{var} ({file!r}) must hold one line")
    return value


def _parse_scalar(text: str) -> Any:
    """A command-line VALUE as YAML reads a scalar (numbers, true/false, null), so
    ``--engine-option k=v`` and ``engine_options: {k: v}`` mean the same."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_engine_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> a mapping (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--engine-option {pair!r} must look like KEY=VALUE")
        out[key.strip()] = _parse_scalar(value.strip())
    return out


def engine_settings(engine: str, options: Mapping[str, Any]) -> Any:
    """The engine's settings class built from ``options`` (refusing unknown keys and
    values of the wrong type, with the valid keys in the message)."""
    from dpsynth.engines import get_engine

    cls = get_engine(engine).settings
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key not in fields:
            raise UsageError(f"engine option {key!r} is not a setting of engine {engine!r} "
                             f"(settings: {', '.join(fields)})")
        kwargs[key] = _coerce(key, value, hints[key])
    return cls(**kwargs)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (types.UnionType,
                                                                    typing.Union) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    for t in allowed:
        if t is not type(None) and isinstance(t, type) and isinstance(value, t) and not (
                t is int and isinstance(value, bool)):
            return value
    names = " or ".join("null" if t is type(None) else getattr(t, "__name__", str(t))
                        for t in allowed)
    raise UsageError(f"engine option {key!r} must be {names} (got {value!r})")


def load_config_file(path: Path) -> dict[str, Any]:
    """A ``--config`` file: YAML (or JSON) mapping of setting names to values, with
    engine settings under ``engine_options``."""
    from dpsynth.schema import load_yaml

    try:
        # the schema's loader: the same scalars, size and alias limits (no alias bomb)
        data = load_yaml(Path(path).read_text(encoding="utf-8"), f"config file {str(path)!r}")
    except FileNotFoundError:
        raise UsageError(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"config file {str(path)!r} is not readable YAML "
                         f"({type(exc).__name__})") from None
    except SchemaError as exc:
        raise UsageError(exc.message) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {str(path)!r} must hold a mapping of settings")
    opts = data.get("engine_options", {})
    if not isinstance(opts, dict):
        raise UsageError("config file: engine_options must be a mapping of KEY: VALUE")
    return data


def release_synopsis() -> str:
    """The ``dpsynth release`` usage line for the README, from the declarations."""
    parts = []
    for f in dataclasses.fields(ReleaseConfig):
        opt: Option = f.metadata["option"]
        if opt.choices == "engines":
            value = "|".join(_engine_names())
        elif opt.choices == "backends":
            value = "|".join(BACKENDS)
        else:
            value = opt.metavar or ""
        text = f"{opt.flag} {value}".strip()
        parts.append(text if opt.required else f"[{text}]")
    parts += ["[--config FILE]", "[--quiet]", "[--json]"]
    lines, line = [], "dpsynth release"
    for p in parts:
        if len(line) + 1 + len(p) > 88:
            lines.append(line)
            line = " " * 16 + p
        else:
            line += " " + p
    lines.append(line)
    return "\n".join(lines)
