"""The fitted model in a release bundle (``model/``): a documented, versioned format.

Owns: turning a :class:`~dpsynth.engines.base.FittedModel` (what dpsynth's own
graphical-model engines, AIM and MST, return) into the bundle files

* ``model/model.json``: format ``dpsynth.model/v1`` (JSON Schema
  ``dpsynth/resources/model.v1.json``), the engine, the domain (column names, their
  sizes, the size the model holds), the junction tree's cliques, parents, sampling
  order and separators, and the model's DP total;
* ``model/model.npz``: the calibrated clique probability tables and, for columns MST
  merged, the expansion matrices (numpy arrays only, read with ``allow_pickle=False``);

reading them back into a :class:`FittedModel` (:func:`read_model`), and every check
of their content (:func:`model_problems`, run by ``dpsynth inspect``). Both files are
deterministic: the same model gives the same bytes (no time stamp in the archive).

Everything written is post-processing of DP measurements: the clique tables were
fitted to noisy marginals, the cliques and merged categories were chosen from noisy
answers, and ``total`` is the estimate from the noisy measurements, never the true
row count. Must not: write the engine's ``info`` (it holds wall-clock seconds, which
grow with the private row count), or anything else the model did not get from the
measurement session; import private-data modules.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jsonschema
import numpy as np

from dpsynth.engines.base import FittedModel, Model
from dpsynth.engines.junction_tree import JunctionTree
from dpsynth.engines.markov_model import MarkovModel

__all__ = [
    "MODEL_ARRAYS",
    "MODEL_ENGINES",
    "MODEL_FORMAT",
    "MODEL_JSON",
    "ModelFormatError",
    "model_bytes",
    "model_files",
    "model_problems",
    "read_model",
]

MODEL_FORMAT = "dpsynth.model/v1"
MODEL_JSON = "model/model.json"
MODEL_ARRAYS = "model/model.npz"
#: Engines whose bundles carry ``model/`` (dpsynth's own graphical models). The
#: smartnoise adapters' models live inside smartnoise and are not saved.
MODEL_ENGINES = ("aim", "mst")

_SUM_TOL = 1e-6
"""How far a probability table's sum, or two tables' agreement on a separator, may be
from exact (float64 sums over up to millions of cells)."""


class ModelFormatError(Exception):
    """``model/`` is missing, unreadable or inconsistent; ``problems`` lists why (never
    a cell value: the model is public, but a message stays one line per problem)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


# --------------------------------------------------------------------------- write


def model_bytes(model: FittedModel, engine: str) -> tuple[bytes, bytes]:
    """``(model.json, model.npz)`` bytes of a fitted model."""
    mm = model.markov_model
    names = model.columns
    arrays: dict[str, np.ndarray] = {}
    columns = []
    for j, (name, size) in enumerate(zip(names, model.sizes, strict=True)):
        ex = model.expansion(j)
        key = None
        if ex is not None:
            key = f"expansion_{j:04d}"
            arrays[key] = np.ascontiguousarray(ex, dtype=np.float64)
        columns.append({"name": name, "size": int(size), "model_size": int(mm.sizes[j]),
                        "expansion": key})
    cliques = []
    for i, (clique, table) in enumerate(zip(mm.cliques, mm.probs, strict=True)):
        key = f"clique_{i:04d}"
        arrays[key] = np.ascontiguousarray(table, dtype=np.float64)
        cliques.append({"columns": [names[a] for a in clique], "array": key})
    jt = mm.jt
    doc = {
        "format": MODEL_FORMAT,
        "engine": engine,
        "arrays": "model.npz",
        "total": float(mm.total),
        "columns": columns,
        "cliques": cliques,
        "junction_tree": {"parent": list(jt.parent), "order": list(jt.order),
                          "separators": [[names[a] for a in s] for s in jt.separator]},
    }
    buf = io.BytesIO()
    np.savez_compressed(buf, allow_pickle=False, **arrays)
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8"), buf.getvalue()


def model_files(model: Model, engine: str) -> dict[str, bytes]:
    """The ``model/`` files of a release: empty when the engine has no dpsynth model
    (the smartnoise adapters)."""
    if not isinstance(model, FittedModel):
        return {}
    doc, arrays = model_bytes(model, engine)
    return {MODEL_JSON: doc, MODEL_ARRAYS: arrays}


# --------------------------------------------------------------------------- read


def _model_schema() -> dict[str, Any]:
    text = resources.files("dpsynth.resources").joinpath("model.v1.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


@dataclass(frozen=True)
class _Parsed:
    doc: dict[str, Any]
    arrays: dict[str, np.ndarray]


def _parse(doc_bytes: bytes, npz_bytes: bytes) -> _Parsed:
    """Both files, structurally valid, or :class:`ModelFormatError`."""
    try:
        doc = json.loads(doc_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError([f"{MODEL_JSON} is not readable JSON ({type(exc).__name__})"]
                               ) from None
    validator = jsonschema.Draft202012Validator(_model_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        raise ModelFormatError([
            f"{MODEL_JSON} is not a valid {MODEL_FORMAT} document "
            f"({'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:120]})"
            for e in errors[:3]])
    try:
        with np.load(io.BytesIO(npz_bytes), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        # ValueError: an object (pickled) array, refused by allow_pickle=False
        raise ModelFormatError([f"{MODEL_ARRAYS} is not a readable numpy archive of plain "
                                f"arrays ({type(exc).__name__})"]) from None
    return _Parsed(doc, arrays)


def _content_problems(p: _Parsed) -> list[str]:
    """Every semantic check of a structurally valid model (see docs/bundle-format.md)."""
    doc, arrays = p.doc, p.arrays
    out: list[str] = []
    cols = [c["name"] for c in doc["columns"]]
    index = {c: j for j, c in enumerate(cols)}
    if len(index) != len(cols):
        out.append(f"{MODEL_JSON}: column names repeat")
        return out
    msizes = [int(c["model_size"]) for c in doc["columns"]]
    if not (isinstance(doc["total"], int | float) and math.isfinite(doc["total"])):
        out.append(f"{MODEL_JSON}: total is not a finite number")
    used: set[str] = set()

    def table(key: str, what: str) -> np.ndarray | None:
        a = arrays.get(key)
        if a is None:
            out.append(f"{MODEL_ARRAYS} has no array {key!r} ({what})")
            return None
        used.add(key)
        if a.dtype != np.float64 or not np.all(np.isfinite(a)) or np.any(a < 0):
            out.append(f"{MODEL_ARRAYS}: {key} ({what}) must hold finite non-negative float64")
            return None
        return a

    for c in doc["columns"]:
        key = c["expansion"]
        if key is None:
            if c["model_size"] != c["size"]:
                out.append(f"{MODEL_JSON}: column {c['name']!r} has model_size "
                           f"{c['model_size']} but no expansion to its {c['size']} codes")
            continue
        ex = table(key, f"expansion of column {c['name']!r}")
        if ex is None:
            continue
        if ex.shape != (c["model_size"], c["size"]):
            out.append(f"{MODEL_ARRAYS}: {key} has shape {list(ex.shape)}, not "
                       f"[{c['model_size']}, {c['size']}]")
        elif not np.allclose(ex.sum(axis=1), 1.0, atol=_SUM_TOL, rtol=0):
            out.append(f"{MODEL_ARRAYS}: the rows of {key} do not sum to 1")
    cliques: list[tuple[int, ...]] = []
    tables: list[np.ndarray | None] = []
    for i, cl in enumerate(doc["cliques"]):
        unknown = [c for c in cl["columns"] if c not in index]
        if unknown:
            out.append(f"{MODEL_JSON}: clique {i} names unknown column {unknown[0]!r}")
            return out
        attrs = tuple(index[c] for c in cl["columns"])
        if list(attrs) != sorted(set(attrs)):
            out.append(f"{MODEL_JSON}: clique {i}'s columns are not distinct and in manifest "
                       "order")
            return out
        cliques.append(attrs)
        t = table(cl["array"], f"clique {i}")
        if t is not None and t.shape != tuple(msizes[a] for a in attrs):
            out.append(f"{MODEL_ARRAYS}: {cl['array']} has shape {list(t.shape)}, not "
                       f"{[msizes[a] for a in attrs]} (the model sizes of clique {i})")
            t = None
        if t is not None and abs(float(t.sum()) - 1.0) > _SUM_TOL:
            out.append(f"{MODEL_ARRAYS}: {cl['array']} does not sum to 1")
            t = None
        tables.append(t)
    extra = sorted(set(arrays) - used)
    if extra:
        out.append(f"{MODEL_ARRAYS} holds arrays {MODEL_JSON} does not name: {', '.join(extra)}")
    missing = sorted(set(cols) - {cols[a] for c in cliques for a in c})
    if missing:
        out.append(f"{MODEL_JSON}: column {missing[0]!r} is in no clique")
    out += _tree_problems(doc["junction_tree"], cliques, cols)
    if not out:  # a consistent tree: the tables must agree on its separators
        jt = doc["junction_tree"]
        for i, par in enumerate(jt["parent"]):
            ti, tp = tables[i], tables[par] if par >= 0 else None
            if par < 0 or ti is None or tp is None:
                continue
            sep = set(cliques[i]) & set(cliques[par])
            mi = ti.sum(axis=tuple(k for k, a in enumerate(cliques[i]) if a not in sep))
            mp = tp.sum(axis=tuple(k for k, a in enumerate(cliques[par]) if a not in sep))
            if not np.allclose(mi, mp, atol=_SUM_TOL, rtol=0):
                out.append(f"{MODEL_ARRAYS}: cliques {i} and {par} disagree on their "
                           "separator (the tree is not calibrated)")
    return out


def _tree_problems(jt: Mapping[str, Any], cliques: Sequence[tuple[int, ...]],
                   cols: Sequence[str]) -> list[str]:
    """A rooted tree over the cliques, parents before children, with the running
    intersection property (each column's cliques are connected)."""
    n = len(cliques)
    parent, order, seps = jt["parent"], jt["order"], jt["separators"]
    where = f"{MODEL_JSON}: junction_tree"
    if not (len(parent) == len(seps) == n and sorted(order) == list(range(n))):
        return [f"{where} does not have one parent, separator and place in order per clique"]
    if [i for i in range(n) if parent[i] == -1] != [order[0]]:
        return [f"{where}: order does not start at the one root (parent -1)"]
    seen: set[int] = set()
    for i in order:
        if parent[i] != -1 and (not 0 <= parent[i] < n or parent[i] not in seen):
            return [f"{where}: clique {i} comes before its parent in order"]
        seen.add(i)
    out = []
    for i in range(n):
        expected = [cols[a] for a in sorted(set(cliques[i]) & set(cliques[parent[i]]))] \
            if parent[i] >= 0 else []
        if list(seps[i]) != expected:
            out.append(f"{where}: separators[{i}] is not what clique {i} shares with its parent")
    for a, name in enumerate(cols):
        tops = [i for i in range(n) if a in cliques[i]
                and not (parent[i] >= 0 and a in cliques[parent[i]])]
        if len(tops) > 1:
            out.append(f"{where}: the cliques holding column {name!r} are not connected")
    return out


def model_problems(doc_bytes: bytes, npz_bytes: bytes) -> list[str]:
    """Every problem of a ``model/`` pair of files (empty: the model is usable)."""
    try:
        parsed = _parse(doc_bytes, npz_bytes)
    except ModelFormatError as exc:
        return exc.problems
    return _content_problems(parsed)


def read_model(doc_bytes: bytes, npz_bytes: bytes) -> tuple[FittedModel, dict[str, Any]]:
    """The model and its ``model.json`` document, or :class:`ModelFormatError`."""
    parsed = _parse(doc_bytes, npz_bytes)
    problems = _content_problems(parsed)
    if problems:
        raise ModelFormatError(problems)
    doc, arrays = parsed.doc, parsed.arrays
    cols = [c["name"] for c in doc["columns"]]
    index = {c: j for j, c in enumerate(cols)}
    cliques = tuple(tuple(index[c] for c in cl["columns"]) for cl in doc["cliques"])
    jt_doc = doc["junction_tree"]
    jt = JunctionTree(cliques, tuple(jt_doc["parent"]), tuple(jt_doc["order"]),
                      tuple(tuple(index[c] for c in s) for s in jt_doc["separators"]))
    msizes = [int(c["model_size"]) for c in doc["columns"]]
    mm = MarkovModel(msizes, jt, [arrays[cl["array"]] for cl in doc["cliques"]],
                     float(doc["total"]))
    expansions = [arrays[c["expansion"]] if c["expansion"] is not None else None
                  for c in doc["columns"]]
    model = FittedModel(cols, [int(c["size"]) for c in doc["columns"]], mm, [],
                        {"engine": doc["engine"]}, expansions)
    return model, doc
