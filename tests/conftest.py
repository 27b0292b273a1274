"""Shared fixtures: a throwaway PostgreSQL server (tests/pg_fixture.py) and test noise.

Noise backends for ``MeasurementSession(..., _noise=...)``, the session's test-only
argument (no setting, command or pipeline step reaches it; tests/test_session.py
checks that). The session builds, charges and records the same OpenDP mechanism as in
a release; only the draw is replaced, so tests need not monkeypatch mechanisms.

  zero_noise    ZeroNoise(): exact counts, the index of the highest score.
  seeded_noise  SeededNoise(seed=0): noise of the mechanism's own scale from numpy
                (rounded Gaussian for counts, Gumbel for noisy max), reproducible;
                NOT OpenDP's samplers, so never evidence of a privacy property.
  make_session  factory: MeasurementSession over codes with column names c0, c1, ...,
                a fresh Accountant, and the given noise backend.

Both doubles record ``calls``: (mechanism name, scale) of each mechanism they ran.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

if TYPE_CHECKING:  # imported when used: collecting the tests should not load OpenDP
    from dpsynth.privacy.accountant import Accountant
    from dpsynth.privacy.mechanisms import NoiseBackend, PreparedMechanism
    from dpsynth.privacy.session import MeasurementSession

sys.path.insert(0, str(Path(__file__).parent))

# Releases in tests (and the CLI subprocesses they start) validate in their own process:
# a validation worker per release would import great-expectations again each time
# (seconds of CPU). tests/test_validation_worker.py runs the worker explicitly.
os.environ.setdefault("DPSYNTH_VALIDATION_WORKER", "0")

from pg_fixture import pg_server, pg_url  # noqa: F401


class ZeroNoise:
    """Runs every mechanism without noise: exact counts, the highest score's index."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float]] = []

    def __call__(self, mechanism: PreparedMechanism, data: Any, /) -> Any:
        self.calls.append((mechanism.name, mechanism.scale))
        if mechanism.name == "discrete_gaussian":
            return np.asarray(data, dtype=np.float64)
        if mechanism.name == "noisy_max":
            return int(np.argmax(data))
        raise AssertionError(f"ZeroNoise does not know mechanism {mechanism.name!r}")


class SeededNoise:
    """Noise of each mechanism's scale from ``numpy.random.default_rng(seed)``."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.calls: list[tuple[str, float]] = []

    def __call__(self, mechanism: PreparedMechanism, data: Any, /) -> Any:
        self.calls.append((mechanism.name, mechanism.scale))
        values = np.asarray(data, dtype=np.float64)
        if mechanism.name == "discrete_gaussian":
            return values + np.rint(self.rng.normal(0.0, mechanism.scale, values.shape))
        if mechanism.name == "noisy_max":
            return int(np.argmax(values + self.rng.gumbel(0.0, mechanism.scale, values.shape)))
        raise AssertionError(f"SeededNoise does not know mechanism {mechanism.name!r}")


@pytest.fixture
def zero_noise() -> ZeroNoise:
    return ZeroNoise()


@pytest.fixture
def seeded_noise() -> SeededNoise:
    return SeededNoise(seed=0)


SessionFactory = Callable[..., "MeasurementSession"]


def session_with_test_noise(codes: np.ndarray, columns: Sequence[str], sizes: Sequence[int],
                            k: int, accountant: Accountant, noise: NoiseBackend | None
                            ) -> MeasurementSession:
    """A session whose noise is ``noise`` (not DP): for tests and for
    ``benchmarks/aim_profile.py --noise seeded`` (same noise for two engine versions).
    The only place outside the tests' own calls that passes ``_noise``."""
    from dpsynth.privacy.session import MeasurementSession

    return MeasurementSession(codes, list(columns), list(sizes), k, accountant, _noise=noise)


@pytest.fixture
def make_session() -> SessionFactory:
    """``make_session(codes, sizes, noise, rho=1.0, k=1, accountant=None)``."""

    def make(
        codes: np.ndarray,
        sizes: Sequence[int],
        noise: NoiseBackend,
        rho: float = 1.0,
        k: int = 1,
        accountant: Accountant | None = None,
    ) -> MeasurementSession:
        from dpsynth.privacy.accountant import Accountant, Budget
        from dpsynth.privacy.session import MeasurementSession

        cols = [f"c{j}" for j in range(np.asarray(codes).shape[1])]
        acc = accountant if accountant is not None else Accountant(Budget(rho))
        return MeasurementSession(codes, cols, sizes, k, acc, _noise=noise)

    return make


def cli_release(d: Path, *, total_epsilon: str, epsilon: str = "2",
                extra: Sequence[str] = ()) -> Path:
    """``ledger init`` then an MST ``release`` (seed 1) of ``d/table.csv`` under
    ``d/schema.yaml`` into ``d/bundle``, through the CLI; the bundle's path."""
    import json

    from click.testing import CliRunner

    from dpsynth.cli import main

    ledger = f"sqlite:///{d / 'ledger.db'}"
    r = CliRunner().invoke(main, ["ledger", "init", "--ledger", ledger, "--dataset-id", "clinic",
                                  "--total-epsilon", total_epsilon])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["release", "--schema", str(d / "schema.yaml"), "--input",
                                  str(d / "table.csv"), "--out", str(d / "bundle"), "--ledger",
                                  ledger, "--engine", "mst", "--epsilon", epsilon, "--seed", "1",
                                  "--quiet", "--json", *extra])
    assert r.exit_code == 0, r.output
    return Path(json.loads(r.stdout)["bundle"])
