"""AIM (McKenna, Mullins, Sheldon, Miklau 2022): adaptive, workload-aware synthesis.

Owns the AIM recipe on a measurement session: measure every 1-way marginal,
then rounds of (select the candidate marginal the current model gets most
wrong, by noisy max on ``w_c * (||M_c(model) - M_c(data)||_1 -
sqrt(2/pi) * sigma * cells_c)``; measure it; re-estimate with a warm start),
halving the noise and doubling the selection budget when a measurement no
longer moves the model (budget annealing). Candidates are the workload's
marginals (all ``degree``-way, weights from workload overlap) whose addition
keeps the junction tree under ``max_model_size`` cells, scaled by the share of
budget spent so far.

Cost per round (what keeps diabetes130's 48 columns within minutes): the
hypothetical junction-tree size of each candidate is computed exactly but only
over the connected components the candidate touches, and reused until a new
clique is measured (:class:`_SizeOracle`); the model marginals of all
candidates come from one tree walk per attribute
(:meth:`MarkovModel.marginals`; pairs a clique holds through shared partial
sums); each round's estimate is warm-started and stops at ``round_iters`` or
when it stalls (``round_tol``). The min-fill triangulation behind the sizes
rescores only the vertices an elimination can affect. Where the time goes on
NIST national2019 (ε = 1) and what was changed for it: ``benchmarks/aim_profile.py``
and ``benchmarks/results/aim-speed.md``.

Analysis targets (issue 14; public, from the schema's ``analysis`` section, set by the
release in ``targets``/``focus``/``subgroups``) get their extra weight as budget, not as
selection weight: ``analysis_share`` (default 0.2) of the budget goes to analysis
marginals, without touching AIM's own selection:

* each target's pair with each subgroup column, and every focus set (within
  ``max_model_size`` cells), are measured: public choices, no selection;
* of each target's pairs with the other columns, ``analysis_pairs`` (default 8) are chosen
  by noisy max, one pick at a time, on how far the pair's exact counts are from the
  product of their own exact margins, less the distance sampling alone would put there:
  ``||n_ab - n_a n_b / n||_1 - sqrt(2/pi) * sum sqrt(n p_a p_b (1 - p_a) (1 - p_b))``, the
  penalty from the noisy 1-way shares (``session.select_dependence``, sensitivity ``4 k``):
  the columns the target depends on most. An earlier score compared the pair with the
  independent model of the noisy 1-way marginals (sensitivity ``k``); at epsilon 1 those
  carry noise of about 200 per cell, which added to a wide column's distance in
  proportion to its levels, so 1-3 of 8 picks went to ICD-9 groups or specialty. The
  picks spend ``1 - measure_share`` of the share; every analysis measurement gets an equal
  part of the rest. When a target has no more other pairs than ``analysis_pairs``, all
  are measured, without selection.

They are measured before the rounds (their cliques count in the model-size limit) but
fitted only in the final estimate, so the rounds select and anneal as plain AIM's do, on
the rest of the budget, except that they leave a measured target alone: they select no
marginal of it with another column (``rounds_with_targets``; their noisier measurements of
the target's relations lowered the TSTR AUC). Fitting them from the start slowed the
rounds' warm-started estimates (their noise is far smaller than a round's, and mirror
descent's step follows the most precise measurement), so new measurements seemed not to
move the model and the annealing spent the budget early: 26 rounds instead of plain AIM's
56 on diabetes130. The selection's workload is by default the generic one only
(``analysis_weight`` 0): noisy max scales its noise with the largest candidate weight, and
weighting the target marginals 4 times made every generic choice noisier (the 2-way TVD
rose by 27 %). With ``analysis_weight`` > 0, every target pair, every triple of a target,
a subgroup column and another column, and every focus set join the workload at that
weight; a candidate's AIM weight is then ``w_c = sum_r weight_r * |c & r|`` over the
workload's marginals ``r``. Measured on diabetes130:
``benchmarks/results/analysis_targets.md``. The workload used, and which pairs were
chosen, is in ``info["workload"]`` (the privacy report lists it). Without targets and
focus the fit is exactly the plain AIM below.

Budget: every round spends ``rho / max_rounds`` (0.9 measure, 0.1 select)
until fewer than two rounds' worth remain; that round then spends exactly the
remainder, so the total equals the session's budget and never exceeds it.

Every decision of the loop (how many rounds, which round is the last, each
round's rho, the model-size limit) is a function of public quantities only: the
round index, the budget, the domain sizes and earlier DP outputs. Nothing is
decided by wall-clock time, which grows with the private row count (exact
counting). ``max_seconds`` is a guard, not a stopping rule: when it passes the
fit *fails* (:class:`~dpsynth.errors.ResourceLimitError`; the budget stays
spent), so the time never silently changes what is released. The final
estimate (post-processing of the noisy measurements) runs ``final_iters``
iterations or until it converges, again independent of the clock.

Must not: see data except through the session (scores with exact counts are
computed inside ``session.select_marginal``).
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dpsynth.engines.base import (
    FittedModel,
    NoisyMarginalLike,
    SessionLike,
    to_observation,
    zero_masks,
)
from dpsynth.engines.estimation import EstimationResult, MarkovModel, estimate
from dpsynth.engines.junction_tree import triangulate
from dpsynth.engines.unionfind import DisjointSets
from dpsynth.errors import ResourceLimitError, UsageError

__all__ = ["AIMSettings", "analysis_workload", "fit_aim"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class AIMSettings:
    """Settings of the AIM engine (a documented model-size budget and an optional time guard)."""

    degree: int = 2
    """Workload: all marginals over this many columns (2 or 3)."""
    max_model_size: int = 2_000_000
    """Most cells the junction tree may hold (memory and time grow with it)."""
    max_rounds: int | None = None
    """Planned rounds ``T``; default ``rounds_per_column * n_columns``."""
    rounds_per_column: int = 4
    """Planned rounds per column when ``max_rounds`` is not given (the paper: 16). With 16,
    every round starts on a quarter of the budget 4 gives it, and the annealing raises it
    only after rounds whose measurement did not move the model. Measured on the same noise
    draws (numpy noise of OpenDP's scales, seeds 1 and 2, epsilon 1; raw-value 2-way TVD,
    fit seconds), old default (16 per column, ``round_iters`` 100) -> this one (4, 50):

    * NIST national2019: 0.0622 / 0.0623 -> 0.0608 / 0.0604, fit 19 / 15 s -> 8.6 / 6.6 s
      (4 with 100 iterations: 0.0587 / 0.0582 but 47 / 35 s);
    * diabetes130, training split, without ``analysis``: 0.0193 / 0.0177 -> 0.0168 / 0.0166;
      with the shipped ``analysis``: 0.0178 / 0.0174 -> 0.0167 / 0.0162, TSTR AUC 0.616 /
      0.655 -> 0.642 / 0.654 (2 per column with 100 iterations: 0.0184 / 0.0171).

    ``benchmarks/results/aim_rounds.md``."""
    max_seconds: float | None = None
    """Optional guard on the select/measure loop's wall-clock time. When passed,
    the release *fails* (exit 7; the budget stays spent) instead of stopping
    early: an early stop would make the released rounds depend on the run time,
    which depends on the private row count. ``None``: no guard."""
    measure_share: float = 0.9
    """Share of each round's budget for measuring (the rest selects)."""
    round_iters: int = 50
    """Most mirror-descent iterations per round (warm-started; see ``rounds_per_column``)."""
    round_tol: float = 1e-3
    """A round's estimation stops once the loss improved by less than this
    (relative) over 10 iterations; the final estimate runs to ``1e-5``."""
    final_iters: int = 1000
    """Mirror-descent iterations of the final estimate."""
    keep_together: tuple[tuple[str, ...], ...] = ()
    """Column sets measured jointly right after the 1-way marginals, at one round's
    measurement cost each, without selection (public: the release sets them from
    the schema's error rules, so that the model learns what a rule allows instead
    of having it imposed by rejection). A set larger than ``degree`` columns, or
    over ``max_model_size`` cells, is measured as the pairs of a chain instead."""
    structural_zeros: tuple[tuple[tuple[str, ...], tuple[tuple[int, ...], ...]], ...] = ()
    """Cells no row can hold (public: the release sets them from the schema's error
    rules, :func:`dpsynth.rules.structural_zeros`): per column set, the code tuples.
    Where the set is measured, the model is fitted with zero mass on them."""
    targets: tuple[str, ...] = ()
    """Analysis targets (public: the release sets them from the schema's
    ``analysis.targets``): their pairs with the subgroup columns are measured before the
    rounds, and ``analysis_pairs`` of their other pairs, chosen by noisy max, too (from
    ``analysis_share``)."""
    focus: tuple[tuple[str, ...], ...] = ()
    """Column sets known to matter (the schema's ``analysis.focus``): measured before the
    rounds like the target x subgroup pairs."""
    subgroups: tuple[str, ...] = ()
    """The schema's subgroup columns; used only with ``targets`` (target x subgroup pairs,
    and with ``analysis_weight`` > 0 target x subgroup x column triples in the workload)."""
    analysis_share: float = 0.2
    """Share of the budget for the analysis marginals before the rounds (selection and
    measurement; 0: none are measured up front)."""
    analysis_pairs: int = 8
    """Per target, how many of its pairs with non-subgroup columns are chosen by noisy max
    and measured from ``analysis_share`` (a target with no more such pairs: all, without
    selection)."""
    subgroup_pairs: int = 0
    """Per subgroup column (with ``targets`` or ``focus`` declared), how many of its pairs
    with the columns other than the targets are chosen by noisy max on their dependence,
    like a target's, and measured from ``analysis_share``: the subgroup's own structure
    (who its members are), which the rounds alone measure with noise of hundreds per
    cell. Off by default: on diabetes130 (same noise draws, 8 seeds), 2 pairs with
    ``analysis_share`` 0.28 changed the race = Hispanic 2-way TVD by -2.4 % and the TSTR AUC
    by +0.002, both within their noise (``benchmarks/results/aim_subgroup_pairs.md``)."""
    rounds_with_targets: bool = False
    """Whether the rounds may select marginals of a target with other columns when its pairs were
    measured up front (``analysis_share`` > 0). False: a target's relations come from the
    analysis measurements only (with less noise per cell than a round's), and the rounds
    spend their budget on the other columns' relations (``analysis_weight`` > 0, which asks
    the rounds to weigh the target's marginals, implies True). Measured on the same noise draws
    (``benchmarks/seeded_options.py``, diabetes130, epsilon 1, seeds 1-8): TSTR AUC for
    ``readmitted`` 0.638 with True, 0.641 with False (higher or equal in 6 of 8 seeds,
    mean difference 0.0035, standard error 0.0018); raw 2-way TVD 0.0166 / 0.0165
    (``benchmarks/results/aim_rounds_targets.md``)."""
    analysis_weight: float = 0.0
    """Workload weight of each analysis marginal in the rounds' selection (the generic
    ones weigh 1). 0: the rounds weigh candidates as plain AIM (the analysis marginals get
    their weight as the up-front budget instead)."""

    def __post_init__(self) -> None:
        if not (isinstance(self.analysis_weight, int | float) and math.isfinite(self.analysis_weight)
                and self.analysis_weight >= 0):
            raise UsageError(f"analysis_weight ({self.analysis_weight}) must be a number >= 0")
        if not (isinstance(self.analysis_share, int | float) and 0 <= self.analysis_share < 0.5):
            raise UsageError(f"analysis_share ({self.analysis_share}) must be in [0, 0.5)")
        for name in ("analysis_pairs", "subgroup_pairs"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
                raise UsageError(f"{name} ({v}) must be a non-negative integer")
        if self.degree not in (1, 2, 3):
            raise UsageError(f"degree ({self.degree}) must be 1, 2 or 3")
        if not (isinstance(self.max_model_size, int) and self.max_model_size >= 1):
            raise UsageError(f"max_model_size ({self.max_model_size}) must be a positive integer")
        if self.max_rounds is not None and not (isinstance(self.max_rounds, int) and self.max_rounds >= 1):
            raise UsageError(f"max_rounds ({self.max_rounds}) must be a positive integer")
        v = self.max_seconds
        if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise UsageError(f"max_seconds ({v}) must be a positive number of seconds")
        if not (0 < self.measure_share < 1):
            raise UsageError(f"measure_share ({self.measure_share}) must be in (0, 1)")
        for name in ("round_iters", "final_iters", "rounds_per_column"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise UsageError(f"{name} ({v}) must be a positive integer")


def _workload(d: int, degree: int, sizes: list[int], limit: int,
              extra: Sequence[tuple[tuple[int, ...], float]] = ()) -> dict[tuple[int, ...], float]:
    """Candidates with AIM weights: all subsets of workload cliques, ``w_c = sum_r weight_r
    * |c & r|`` over the generic cliques (weight 1) and ``extra`` (clique, weight) pairs."""
    deg = min(degree, d)
    work = [(r, 1.0) for r in itertools.combinations(range(d), deg)
            if math.prod(sizes[a] for a in r) <= limit]
    work += [(r, w) for r, w in extra if math.prod(sizes[a] for a in r) <= limit]
    cands: dict[tuple[int, ...], float] = {}
    for r, _ in work:
        for k in range(1, len(r) + 1):
            for c in itertools.combinations(r, k):
                cands[c] = 0.0
    for c in cands:
        sc = set(c)
        cands[c] = float(sum(w * len(sc.intersection(r)) for r, w in work))
    return cands


@dataclass(frozen=True)
class AnalysisPlan:
    """The schema's analysis section as AIM uses it (attribute indices; cliques sorted)."""

    weighted: list[tuple[tuple[int, ...], float]]
    """(clique, weight) pairs joining the rounds' selection workload (empty when
    ``analysis_weight`` is 0)."""
    public: list[tuple[int, ...]]
    """Measured before the rounds without selection: target x subgroup pairs, focus sets,
    and every pair of a target with at most ``analysis_pairs`` other columns."""
    choose_from: list[tuple[list[tuple[int, ...]], int]]
    """(pairs, how many to choose) for noisy max before the rounds: per target with more
    than ``analysis_pairs`` other pairs, those pairs and ``analysis_pairs``; then per
    subgroup column its pairs with the non-target columns and ``subgroup_pairs``."""


def analysis_workload(cols: tuple[str, ...], s: AIMSettings) -> AnalysisPlan:
    """Where the analysis marginals go: the selection workload, the public up-front
    measurements, and the target pairs to choose among (no duplicates)."""
    index = {c: j for j, c in enumerate(cols)}
    targets = [index[t] for t in dict.fromkeys(s.targets) if t in index]
    subgroups = [index[g] for g in s.subgroups if g in index]
    public: list[tuple[int, ...]] = []
    choose_from: list[tuple[list[tuple[int, ...]], int]] = []
    pairs: list[tuple[int, ...]] = []
    triples: list[tuple[int, ...]] = []
    for t in targets:
        mine = [tuple(sorted((t, a))) for a in range(len(cols)) if a != t]
        pairs += mine
        public += [tuple(sorted((t, g))) for g in subgroups if g != t]
        others = [c for c in mine if c not in public]
        if len(others) <= s.analysis_pairs:
            public += others
        elif s.analysis_pairs > 0:
            choose_from.append((others, s.analysis_pairs))
        for g in subgroups:
            if g != t:
                triples += [tuple(sorted((t, g, a))) for a in range(len(cols)) if a not in (t, g)]
    focus = [tuple(sorted(index[c] for c in f)) for f in s.focus if all(c in index for c in f)]
    public = list(dict.fromkeys([*public, *focus]))
    if s.subgroup_pairs > 0 and (targets or focus):
        for g in subgroups:
            mine = [tuple(sorted((g, a))) for a in range(len(cols)) if a != g and a not in targets]
            choose_from.append(([c for c in mine if c not in public], s.subgroup_pairs))
    weighted: list[tuple[tuple[int, ...], float]] = []
    if s.analysis_weight > 0:
        weighted = [(c, float(s.analysis_weight)) for c in dict.fromkeys([*pairs, *focus, *triples])]
    return AnalysisPlan(weighted, public, choose_from)


class _SizeOracle:
    """``model_size(cliques + [candidate])`` for many candidates, exactly.

    Min-fill elimination never mixes connected components (a vertex's score
    only depends on its own component), so the junction tree of ``cliques +
    [c]`` is that of the components ``c`` does not touch, unchanged, plus the
    triangulation of the touched components joined by ``c``. Only the latter is
    recomputed per candidate.
    """

    def __init__(self, d: int, cliques: list[tuple[int, ...]], sizes: list[int]) -> None:
        self.d, self.sizes = d, sizes
        parts = DisjointSets(d)
        for cl in cliques:
            for a in cl[1:]:
                parts.union(a, cl[0])
        self.comp = [parts.find(a) for a in range(d)]
        self.members: dict[int, set[int]] = {}
        for a, r in enumerate(self.comp):
            self.members.setdefault(r, set()).add(a)
        self.cliques_of: dict[int, list[tuple[int, ...]]] = {}
        for cl in cliques:
            self.cliques_of.setdefault(self.comp[cl[0]], []).append(cl)
        self.comp_size = {r: self._size(self.cliques_of.get(r, []), vs) for r, vs in self.members.items()}
        self.total = sum(self.comp_size.values())

    def _size(self, cliques: list[tuple[int, ...]], verts: set[int]) -> int:
        tri = triangulate(self.d, cliques, self.sizes)
        return sum(math.prod(self.sizes[a] for a in c) for c in tri if verts.intersection(c))

    def size_with(self, cand: tuple[int, ...]) -> int:
        touched = {self.comp[a] for a in cand}
        verts: set[int] = set().union(*(self.members[r] for r in touched))
        cls = [cl for r in touched for cl in self.cliques_of.get(r, [])]
        rest = self.total - sum(self.comp_size[r] for r in touched)
        return rest + self._size([*cls, cand], verts)


class _Shortlist:
    """Each round's candidates: the marginals the model holds already, and those
    whose addition keeps the junction tree within the round's size limit.

    Hypothetical model sizes depend only on the measured cliques and the
    candidate; cliques only grow, so sizes are reused until one is added.
    """

    def __init__(self, d: int, sizes: list[int], candidates: dict[tuple[int, ...], float]) -> None:
        self.d, self.sizes, self.candidates = d, sizes, candidates
        self.cells_of = {c: math.prod(sizes[a] for a in c) for c in candidates}
        self.cliques: list[tuple[int, ...]] = [(a,) for a in range(d)]
        self._sizes_for: dict[tuple[int, ...], int] = {}
        self._version = len(self.cliques)
        self._oracle: _SizeOracle | None = None

    def add(self, clique: tuple[int, ...]) -> None:
        """A newly measured clique."""
        if clique not in self.cliques:
            self.cliques.append(clique)

    def drop_pairs_with(self, attrs: set[int]) -> None:
        """No more candidates joining any of ``attrs`` with another column (their weights,
        computed over the whole workload, stay as they are for the rest)."""
        for c in [c for c in self.candidates if len(c) > 1 and attrs.intersection(c)]:
            del self.candidates[c], self.cells_of[c]

    def within(self, model: MarkovModel, limit: float) -> list[tuple[int, ...]]:
        closure = {
            sub
            for cl in model.cliques
            for r in range(1, len(cl) + 1)
            for sub in itertools.combinations(cl, r)
        }
        if self._version != len(self.cliques) or self._oracle is None:
            self._sizes_for.clear()
            self._version = len(self.cliques)
            self._oracle = _SizeOracle(self.d, self.cliques, self.sizes)
        small: list[tuple[int, ...]] = []
        for cand in self.candidates:
            if cand in closure:
                small.append(cand)
                continue
            if self.cells_of[cand] > limit:
                continue
            size = self._sizes_for.get(cand)
            if size is None:
                size = self._sizes_for[cand] = self._oracle.size_with(cand)
            if size <= limit:
                small.append(cand)
        return small or [cand for cand in self.candidates if len(cand) == 1]


def _measure_oneway(session: SessionLike, cols: tuple[str, ...], oneway_rho: float,
                    rho: float) -> list[NoisyMarginalLike]:
    """AIM's initialisation: every 1-way marginal at ``oneway_rho``; if that would
    exhaust the budget ``rho``, the last one takes exactly what remains."""
    d = len(cols)
    out: list[NoisyMarginalLike] = []
    for j, c in enumerate(cols):
        last = j == d - 1 and oneway_rho * d >= rho * (1 - 1e-12)
        out.append(session.measure((c,), session.remaining.rho if last else oneway_rho, "aim/1-way"))
    return out


def _forced_cliques(cols: tuple[str, ...], sizes: list[int], s: AIMSettings
                    ) -> list[tuple[int, ...]]:
    """The cliques ``keep_together`` asks for (columns in the domain, sorted), each at
    most ``degree`` columns and ``max_model_size`` cells, else as chain pairs."""
    index = {c: j for j, c in enumerate(cols)}
    out: list[tuple[int, ...]] = []
    for group in s.keep_together:
        members = sorted({index[c] for c in group if c in index})
        if len(members) < 2:
            continue
        if len(members) <= s.degree and math.prod(sizes[a] for a in members) <= s.max_model_size:
            parts = [tuple(members)]
        else:
            parts = [tuple(sorted(p)) for p in itertools.pairwise(members)]
        out.extend(p for p in parts if p not in out)
    return out


def _workload_info(cols: tuple[str, ...], s: AIMSettings, plan: AnalysisPlan,
                   measured: list[tuple[int, ...]], chosen: list[tuple[int, ...]],
                   held: set[int]) -> dict[str, object]:
    """The workload, as the privacy report lists it (public: the schema, the settings and
    the noisy-max choices)."""
    d = len(cols)
    deg = min(s.degree, d)
    weights = dict(plan.weighted)
    listed = list(dict.fromkeys([*measured, *(c for c, _ in plan.weighted)]))
    return {
        "generic": f"all {math.comb(d, deg)} {deg}-way marginals of the {d} columns, weight 1",
        "analysis": [{"columns": [cols[a] for a in c], "weight": weights.get(c, 0.0),
                      "measured_first": c in measured,
                      **({"chosen_by_noisy_max": True} if c in chosen else {})} for c in listed],
        "analysis_share": s.analysis_share if measured else 0.0,
        "analysis_pairs_chosen": [[cols[a] for a in c] for c in chosen],
        "rounds": (f"no marginal of {', '.join(cols[a] for a in sorted(held))} with another column" if held
                   else "every workload marginal"),
    }


def _chance_l1(pa: np.ndarray, pb: np.ndarray, rows: float) -> float:
    """What sampling alone puts between a pair's counts and the product of its own margins
    when the columns are independent: cell ``(a, b)`` then deviates with standard deviation
    about ``sqrt(n p_a p_b (1 - p_a) (1 - p_b))``, so ``E||.||_1 ~ sqrt(2/pi) * sum`` of
    those. From public shares ``pa``, ``pb`` (noisy 1-way) and a public row count."""
    var = rows * np.outer(pa * (1 - pa), pb * (1 - pb))
    return math.sqrt(2 / math.pi) * float(np.sqrt(var).sum())


def _measure_analysis(session: SessionLike, cols: tuple[str, ...], sizes: list[int], s: AIMSettings,
                      plan: AnalysisPlan, rho: float, oneway: list[NoisyMarginalLike]
                      ) -> tuple[list[NoisyMarginalLike], list[tuple[int, ...]]]:
    """Spend ``analysis_share`` of the release's budget ``rho``: choose ``analysis_pairs``
    of each target's pairs (and ``subgroup_pairs`` of each subgroup column's) by noisy max
    on their dependence (the pair's distance from the product of its own margins, less
    what sampling alone would show, judged from the noisy 1-way marginals ``oneway``), then
    measure them and the public analysis marginals in equal parts. Returns (the
    measurements, the chosen cliques)."""
    fits = lambda c: math.prod(sizes[a] for a in c) <= s.max_model_size  # noqa: E731
    public = [c for c in plan.public if fits(c)]
    pools: list[tuple[list[tuple[int, ...]], int]] = []  # (pairs within the size limit, picks)
    for pool, n in plan.choose_from:
        fitting = [c for c in pool if fits(c)]
        pools.append((fitting, min(n, len(fitting))))
    n_picks = sum(n for _, n in pools)
    n_meas = len(public) + n_picks
    if s.analysis_share <= 0 or n_meas == 0:
        return [], []
    share = min(s.analysis_share * rho, session.remaining.rho / 2)
    select_rho = (1 - s.measure_share) * share if n_picks else 0.0
    each = (share - select_rho) / n_meas
    chosen: list[tuple[int, ...]] = []
    if n_picks:
        counts = [np.clip(np.asarray(m.counts, dtype=np.float64).ravel(), 0, None) for m in oneway]
        totals = [float(x.sum()) for x in counts]
        rows = max(float(np.median(totals)), 1.0)  # public: noisy totals
        probs = [x / t if t > 0 else np.full(x.size, 1 / x.size) for x, t in zip(counts, totals, strict=True)]
        for pool, n in pools:
            # a pair an earlier pool chose is not offered again (it is measured once); if
            # fewer than n pairs remain, the share of the picks not made goes to the rounds
            left = [c for c in pool if c not in chosen]
            chance = [_chance_l1(probs[a], probs[b], rows) for a, b in left]
            for _ in range(min(n, len(left))):
                pick = session.select_dependence(
                    [(cols[a], cols[b]) for a, b in left],
                    chance,
                    select_rho / n_picks,
                    "aim/analysis-select",
                )
                chosen.append(left.pop(pick))
                del chance[pick]
    todo = list(dict.fromkeys([*public, *chosen]))
    out = [session.measure(tuple(cols[a] for a in cl), min(each, session.remaining.rho), "aim/analysis")
           for cl in todo]
    return out, chosen


def fit_aim(session: SessionLike, settings: AIMSettings | None = None) -> FittedModel:
    """Fit AIM, spending the session's whole remaining budget."""
    s = settings or AIMSettings()
    t0 = time.perf_counter()
    cols = tuple(session.columns)
    sizes = [session.domain[c] for c in cols]
    index = {c: j for j, c in enumerate(cols)}
    d = len(cols)
    k = session.contribution_bound
    rho = session.remaining.rho
    if rho <= 0:
        raise UsageError("the session has no budget left (rho must be positive)")
    rounds = s.max_rounds or s.rounds_per_column * d
    plan = analysis_workload(cols, s) if (s.targets or s.focus) else AnalysisPlan([], [], [])
    shortlist = _Shortlist(d, sizes, _workload(d, s.degree, sizes, s.max_model_size, plan.weighted))
    rho_round = rho / rounds
    rho_meas = s.measure_share * rho_round
    rho_sel = rho_round - rho_meas
    # 1-way measurements at the round's measurement cost (AIM's initialisation);
    # if that alone would exhaust the budget, split what remains instead.
    measurements = _measure_oneway(session, cols, min(rho_meas, rho / d), rho)
    forced = _forced_cliques(cols, sizes, s)
    for n, cl in enumerate(forced):  # public choices: no selection, only measurement
        share = session.remaining.rho / (len(forced) - n + 1)
        measurements.append(session.measure(tuple(cols[a] for a in cl), min(rho_meas, share),
                                            "aim/keep-together"))
        shortlist.add(cl)
    # The analysis marginals: measured now (their cliques count in the model-size limit),
    # fitted only in the final estimate, so the rounds run as plain AIM's on the rest.
    analysis, chosen = _measure_analysis(session, cols, sizes, s, plan, rho, measurements[:d])
    measured = [tuple(sorted(index[c] for c in m.columns)) for m in analysis]
    for cl in measured:
        shortlist.add(cl)
    held = ({index[t] for t in s.targets if t in index}
            if measured and not s.rounds_with_targets and s.analysis_weight == 0 else set())
    shortlist.drop_pairs_with(held)  # the targets' relations: from the analysis step only
    index_of = lambda m: to_observation(m, index)  # noqa: E731
    zeros = zero_masks(s.structural_zeros, index, sizes)
    est: EstimationResult = estimate(sizes, [index_of(m) for m in measurements],
                                     max_iters=s.round_iters, zeros=zeros)
    n_rounds = 0
    while session.remaining.rho > 0 and len(shortlist.candidates) > 0:
        remaining = session.remaining.rho
        if s.max_seconds is not None and time.perf_counter() - t0 > s.max_seconds:
            raise ResourceLimitError(
                f"AIM's select/measure loop passed max_seconds={s.max_seconds:g} after "
                f"{n_rounds} rounds; the budget stays spent. Raise max_seconds, lower "
                "max_model_size or use --engine mst")
        last = remaining < 2 * (rho_meas + rho_sel)
        if last:
            rho_meas = s.measure_share * remaining
            rho_sel = remaining - rho_meas
        used = rho - remaining + rho_meas + rho_sel
        small = shortlist.within(est.model, s.max_model_size * min(1.0, used / rho))
        sigma = k / math.sqrt(2 * rho_meas)
        pick = session.select_marginal(
            [tuple(cols[a] for a in c) for c in small],
            est.model.marginals(small),
            [shortlist.candidates[c] for c in small],
            [math.sqrt(2 / math.pi) * sigma * math.prod(sizes[a] for a in c) for c in small],
            rho_sel,
            "aim/select",
        )
        cl = small[pick]
        before = est.model.marginal(cl)
        m = session.measure(
            tuple(cols[a] for a in cl),
            session.remaining.rho if last else rho_meas,
            "aim/measure",
        )
        measurements.append(m)
        shortlist.add(cl)
        n_rounds += 1
        _log.debug("aim round %d: %s (%d candidates, %d iterations, %.1fs)", n_rounds,
                   tuple(cols[a] for a in cl), len(small), est.iterations, time.perf_counter() - t0)
        if last:
            break
        est = estimate(sizes, [index_of(x) for x in measurements], warm_start=est,
                       max_iters=s.round_iters, tol=s.round_tol, zeros=zeros)
        after = est.model.marginal(cl)
        cells = math.prod(sizes[a] for a in cl)
        if float(np.abs(after - before).sum()) <= math.sqrt(2 / math.pi) * m.sigma * cells:
            rho_meas *= 4  # sigma / 2
            rho_sel *= 4  # epsilon * 2
    measurements += analysis
    est = estimate(sizes, [index_of(x) for x in measurements], warm_start=est,
                   max_iters=s.final_iters, zeros=zeros)
    info = {
        "engine": "aim",
        "rounds": n_rounds,
        "seconds": time.perf_counter() - t0,
        "final_iterations": est.iterations,
        "workload": _workload_info(cols, s, plan, measured, chosen, held),
    }
    return FittedModel(cols, sizes, est.model, measurements, info)
