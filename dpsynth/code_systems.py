"""Public code systems a schema draft recognises: ICD-9-CM and ICD-10-CM diagnosis codes.

Owns: each system's code pattern, the regular expressions that sort a cell's text into
the *code forms* a draft counts (:data:`CODE_FORMS`, :func:`form_patterns`), how a code
maps to its 3-character category (:data:`CATEGORY_PATTERN`), and the standard chapter
list of each classification as ``code``-column groups (:func:`chapter_groups`).

Everything here is written from the public classifications (the ICD-9-CM tabular list's
chapters and supplementary classifications, the ICD-10-CM chapter table), never from
data: a draft may only *choose* between these systems from DP counts, and may keep a
frequent 3-character category apart only through DP key selection (see
:mod:`dpsynth.draft`).

Must not: read data, import the private modules or draw noise.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CATEGORY_PATTERN",
    "CODE_FORMS",
    "ICD9",
    "ICD10",
    "CodeSystem",
    "category_group",
    "chapter_groups",
    "form_patterns",
]

CODE_FORMS: tuple[str, ...] = ("icd9-number", "icd9-decimal", "icd9-letter", "icd10", "other")
"""What a present cell's text (surrounding whitespace stripped) looks like, tested in this
order (each cell in exactly one form): an ICD-9 code of 1-3 digits (``428``, ``008``), one
with a decimal part (``250.83``), an ICD-9 supplementary code (``V57``, ``E885.9``), an
ICD-10 code (``E11.9``, ``I10``), anything else."""


@dataclass(frozen=True)
class CodeSystem:
    """One public code system: its name in a schema, the pattern a code matches (the
    ``code`` column's ``pattern``) and its chapters as ``(label, prefixes, ranges)``."""

    key: str
    system: str
    pattern: str
    chapters: tuple[tuple[str, tuple[str, ...], tuple[tuple[int, int], ...]], ...]


ICD9 = CodeSystem(
    key="icd9",
    system="ICD-9-CM (chapters of the public classification; leading zeros may be stripped)",
    pattern=r"V\d{1,2}(\.\d{1,2})?|E\d{3}(\.\d{1,2})?|\d{1,3}(\.\d{1,2})?",
    chapters=(
        ("001-139 infectious and parasitic", (), ((1, 139),)),
        ("140-239 neoplasms", (), ((140, 239),)),
        ("240-279 endocrine, nutritional, metabolic, immunity", (), ((240, 279),)),
        ("280-289 blood and blood-forming organs", (), ((280, 289),)),
        ("290-319 mental disorders", (), ((290, 319),)),
        ("320-389 nervous system and sense organs", (), ((320, 389),)),
        ("390-459 circulatory system", (), ((390, 459),)),
        ("460-519 respiratory system", (), ((460, 519),)),
        ("520-579 digestive system", (), ((520, 579),)),
        ("580-629 genitourinary system", (), ((580, 629),)),
        ("630-679 pregnancy, childbirth, puerperium", (), ((630, 679),)),
        ("680-709 skin and subcutaneous tissue", (), ((680, 709),)),
        ("710-739 musculoskeletal and connective tissue", (), ((710, 739),)),
        ("740-759 congenital anomalies", (), ((740, 759),)),
        ("760-779 perinatal conditions", (), ((760, 779),)),
        ("780-799 symptoms, signs, ill-defined conditions", (), ((780, 799),)),
        ("800-999 injury and poisoning", (), ((800, 999),)),
        ("V01-V91 supplementary (health status, contact)", ("V",), ()),
        ("E000-E999 external causes of injury", ("E",), ()),
    ),
)
"""ICD-9-CM: the 17 chapters and the two supplementary classifications (V and E codes)."""

ICD10 = CodeSystem(
    key="icd10",
    system="ICD-10-CM (chapters of the public classification)",
    pattern=r"[A-Z]\d[0-9A-Z](\.?[0-9A-Z]{1,4})?",
    chapters=(
        ("A00-B99 infectious and parasitic", ("A", "B"), ()),
        ("C00-D49 neoplasms", ("C", "D0", "D1", "D2", "D3", "D4"), ()),
        ("D50-D89 blood, blood-forming organs, immune", ("D5", "D6", "D7", "D8"), ()),
        ("E00-E89 endocrine, nutritional, metabolic", ("E",), ()),
        ("F01-F99 mental, behavioural, neurodevelopmental", ("F",), ()),
        ("G00-G99 nervous system", ("G",), ()),
        ("H00-H59 eye and adnexa", ("H0", "H1", "H2", "H3", "H4", "H5"), ()),
        ("H60-H95 ear and mastoid process", ("H6", "H7", "H8", "H9"), ()),
        ("I00-I99 circulatory system", ("I",), ()),
        ("J00-J99 respiratory system", ("J",), ()),
        ("K00-K95 digestive system", ("K",), ()),
        ("L00-L99 skin and subcutaneous tissue", ("L",), ()),
        ("M00-M99 musculoskeletal and connective tissue", ("M",), ()),
        ("N00-N99 genitourinary system", ("N",), ()),
        ("O00-O9A pregnancy, childbirth, puerperium", ("O",), ()),
        ("P00-P96 perinatal conditions", ("P",), ()),
        ("Q00-Q99 congenital malformations", ("Q",), ()),
        ("R00-R99 symptoms, signs, abnormal findings", ("R",), ()),
        ("S00-T88 injury, poisoning", ("S", "T"), ()),
        ("U00-U85 special purposes", ("U",), ()),
        ("V00-Y99 external causes of morbidity", ("V", "W", "X", "Y"), ()),
        ("Z00-Z99 factors influencing health status", ("Z",), ()),
    ),
)
"""ICD-10-CM: its 22 chapters (U codes included), by the codes' leading characters."""

CATEGORY_PATTERN = {"icd9": r"^(V\d{2}|E\d{3}|\d{1,3})", "icd10": r"^([A-Z]\d[0-9A-Z])"}
"""A code's 3-character category (ICD-9: the digits before the point, a V code's two
digits, an E code's three; ICD-10: the first three characters)."""


def form_patterns() -> tuple[str, ...]:
    """The full-match regular expressions of :data:`CODE_FORMS` but ``other``, in order."""
    return (r"^\d{1,3}$", r"^\d{1,3}\.\d{1,2}$", r"^(?:V\d{1,2}(?:\.\d{1,2})?|E\d{3}(?:\.\d{1,2})?)$",
            r"^[A-Z]\d[0-9A-Z](?:\.?[0-9A-Z]{1,4})?$")


def chapter_groups(system: CodeSystem) -> list[dict[str, object]]:
    """The system's chapters as the ``groups`` of a ``code`` column (schema YAML shape)."""
    out: list[dict[str, object]] = []
    for label, prefixes, ranges in system.chapters:
        g: dict[str, object] = {"label": label}
        if prefixes:
            g["prefixes"] = list(prefixes)
        if ranges:
            g["ranges"] = [list(r) for r in ranges]
        out.append(g)
    return out


def category_group(system: CodeSystem, category: str) -> dict[str, object]:
    """A group holding one 3-character category (put before the chapters: first match
    wins), e.g. ICD-9 ``250`` as ``{"label": "250 category", "ranges": [[250, 250]]}``."""
    if system.key == "icd9" and category.isdigit():
        n = int(category)
        return {"label": f"{n:03d} category", "ranges": [[n, n]]}
    return {"label": f"{category} category", "prefixes": [category]}
