"""Detection by region: the one cross-table of which tracer found the lesions of each
anatomical region, written by the figures (``detection_by_region.tsv`` and its figure) and
reported by the statistics (``summary.json`` ``lesion_detection.by_region``).

One rule for both: a lesion whose detection flag is empty on either tracer is left out of
every detection count and test (:func:`flags_known`), and counted as left out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dualpet.interchange import NO_REGION, REGIONS
from dualpet.stats.validate import numbers

#: The last row: every lesion.
TOTAL = "total"


def region_of(value) -> str:
    """A ``region`` cell as its table label (an empty cell: :data:`NO_REGION`).

    >>> region_of("liver"), region_of(""), region_of(float("nan"))
    ('liver', '(no region)', '(no region)')
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NO_REGION
    text = str(value).strip()
    return text if text and text.lower() != "nan" else NO_REGION


def detected(lesions: pd.DataFrame, tracer: str) -> np.ndarray:
    """``{tracer}_detected == 1`` as booleans (missing counts as not detected). A table with
    rows must have the column (a misspelt tracer is an error, not "no data")."""
    col = f"{tracer}_detected"
    if col not in lesions.columns:
        if len(lesions):
            raise ValueError(f"lesions table: column {col!r} is missing")
        return np.zeros(0, dtype=bool)
    return numbers(lesions[col]) == 1


def flags_known(lesions: pd.DataFrame, reference: str, index: str) -> np.ndarray:
    """Lesions whose detection flag is given (not empty) on both tracers: the lesions that
    detection is counted and tested on.

    >>> flags_known(pd.DataFrame({"a_detected": [1, None, 0], "b_detected": [0, 1, None]}), "a", "b")
    array([ True, False, False])
    """
    known = np.ones(len(lesions), bool)
    for tracer in (reference, index):
        if f"{tracer}_detected" in lesions.columns:
            known &= ~np.isnan(numbers(lesions[f"{tracer}_detected"]))
    return known


def detection_by_region(lesions: pd.DataFrame, reference: str, index: str) -> pd.DataFrame:
    """Cross-table of detection by region: one row per ``region`` present (in
    :data:`~dualpet.interchange.REGIONS` order, then others alphabetically, then lesions
    without a region), then ``total``; columns ``region``, ``lesions``,
    ``{reference}_detected``, ``{index}_detected``, ``both_detected``, ``{reference}_only``,
    ``{index}_only`` (``{tracer}_detected == 1``), over the lesions whose flags are known on
    both tracers (:func:`flags_known`)."""
    if reference == index:
        raise ValueError(f"reference and index tracer are both {reference!r}")
    lesions = lesions[flags_known(lesions, reference, index)]
    cols = ["region", "lesions", f"{reference}_detected", f"{index}_detected", "both_detected"]
    cols += [f"{reference}_only", f"{index}_only"]
    r, i = detected(lesions, reference), detected(lesions, index)
    labels = [region_of(v) for v in lesions["region"]] if "region" in lesions.columns else [NO_REGION] * len(lesions)
    regions = np.array(labels, dtype=object)
    present = set(regions.tolist())
    order = [g for g in REGIONS if g in present]
    order += sorted(present - set(REGIONS) - {NO_REGION}) + ([NO_REGION] if NO_REGION in present else [])

    def row(name, sel):
        counts = (sel, sel & r, sel & i, sel & r & i, sel & r & ~i, sel & i & ~r)
        return [name, *(int(c.sum()) for c in counts)]

    rows = [row(g, regions == g) for g in order] + [row(TOTAL, np.ones(len(regions), bool))]
    return pd.DataFrame(rows, columns=cols)
