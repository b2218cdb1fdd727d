"""Reader decisions fed back into a study's lesions (``review.tsv``, config ``review``).

A decision names a position in that tracer's study (LPS mm), never a lesion number:
numbers change when lesions are added or removed, positions do not, so a decision keeps
meaning the same spot after any rerun. ``dualpet review-pin`` turns rows written with a
lesion ID (``L03`` of the current ``lesions.tsv``) into rows with its position.

- ``reject``: the lesion whose region holds the position, else whose peak lies within
  REVIEW_TOLERANCE_MM of it, is removed and listed among the rejected candidates with the
  reader's name and note.
- ``accept``: that lesion is kept and marked ``reader-accepted``; if no lesion is there
  (a rejected candidate, or a spot the detector missed) it is added as below, marked
  ``reader-accepted``.
- ``add``: a lesion at the position (its hottest voxel within ``seed_radius_mm`` and the
  connected voxels at >= 50 % of it, as for reader seeds), marked ``reader-added``; if a
  lesion is already there it is marked ``reader-accepted`` instead.

Every lesion carries its ``origin``: ``automatic``, ``reader-accepted``, ``reader-added``
(or ``reader-mask`` / ``reader-seed`` for the reader methods). Each decision's outcome is
recorded; one that finds nothing to act on is recorded as not applied, never an error
(the lesion may have gone with a change of method).
"""

from __future__ import annotations

import numpy as np

from dualpet.geometry import world_to_voxel
from dualpet.settings import default

#: A decision's position belongs to a lesion whose region holds it or whose peak is
#: within this distance (mm): a click on a lesion's rim, or on its maximum in another
#: viewer's resampled grid.
REVIEW_TOLERANCE_MM = 10.0
#: The review sheet's columns, in the order the README documents them and the review page
#: writes its ready lines (the schema, workflow/schemas/review.schema.yaml, lists them in
#: this order too: tests/test_review.py checks both).
REVIEW_COLUMNS = ("patient", "tracer", "x", "y", "z", "decision", "reader", "note", "lesion")


def _which(lesions, affine, point):
    """The lesion (dict with its full-grid ``_region``) at ``point``: its region holds it,
    else the nearest peak within REVIEW_TOLERANCE_MM; None if none."""
    v = tuple(np.rint(world_to_voxel(affine, np.asarray(point, float))).astype(int))
    for les in lesions:
        if all(0 <= c < n for c, n in zip(v, les["_region"].shape)) and les["_region"][v]:
            return les
    best = None
    for les in lesions:
        d = float(np.linalg.norm(np.subtract(les["peak_lps"], point)))
        if d <= REVIEW_TOLERANCE_MM and (best is None or d < best[0]):
            best = (d, les)
    return best[1] if best else None


def apply_decisions(
    suv, affine, labels, lesions, rejected, decisions, *, seed_radius_mm=default("detection.seed_radius_mm"), where=""
):
    """Apply a study's decisions. ``lesions`` carry ``label`` (their value in ``labels``).

    Returns ``(labels, lesions, rejected, record)``: the renumbered label image, the
    lesions (with ``origin``), the rejected candidates (reader rejections added) and one
    record per decision (``applied``: what was done, or why nothing was).
    """
    from dualpet.detection.reader import lesions_from_seeds
    from dualpet.detection.regions import number_lesions
    from dualpet.errors import DualpetInputError

    for les in lesions:
        les.setdefault("origin", "automatic")
        les["_region"] = labels == les["label"]
    conflicts = _conflicts(lesions, affine, decisions)
    record = []
    for n, d in enumerate(decisions):
        point = [float(d["x"]), float(d["y"]), float(d["z"])]
        who = f"reader {d['reader']}" if d.get("reader") else "the reader"
        note = f" ({d['note']})" if d.get("note") else ""
        entry = {k: d.get(k, "") for k in ("decision", "reader", "note")} | {"position_lps": point}
        if not np.all(np.isfinite(point)):
            record.append(
                entry
                | {"position_lps": [str(v) for v in point], "applied": "not applied: the position is not a number"}
            )
            continue
        if n in conflicts:
            record.append(entry | {"applied": f"not applied: {conflicts[n]}"})
            continue
        hit = _which(lesions, affine, point)
        if d["decision"] == "reject":
            if hit is None:
                entry["applied"] = f"not applied: no lesion within {REVIEW_TOLERANCE_MM:g} mm"
            else:
                lesions.remove(hit)
                hit.pop("_region")
                rejected.append(
                    {**{k: v for k, v in hit.items() if k != "label"}, "reason": f"reader: rejected by {who}{note}"}
                )
                entry["applied"] = f"rejected the lesion with its peak at {np.round(hit['peak_lps'], 1).tolist()}"
        elif hit is not None:
            hit["origin"] = "reader-accepted"
            hit["reviewed_by"] = d.get("reader", "")
            entry["applied"] = f"accepted the lesion with its peak at {np.round(hit['peak_lps'], 1).tolist()}"
        else:
            try:
                added = lesions_from_seeds(suv, affine, [point], radius_mm=seed_radius_mm, where=where)[0]
            except DualpetInputError:  # the position lies outside this study's PET
                record.append(entry | {"applied": "not applied: the position lies outside this study's PET"})
                continue
            taken = np.zeros(labels.shape, bool)
            for les in lesions:
                taken |= les["_region"]
            added["_region"] = added["_region"] & ~taken
            if not added["_region"].any():
                entry["applied"] = "not applied: the spot lies inside another lesion"
            else:
                added["origin"] = "reader-added" if d["decision"] == "add" else "reader-accepted"
                added["reviewed_by"] = d.get("reader", "")
                added["label"] = -1
                lesions.append(added)
                entry["applied"] = f"added a lesion with its peak at {np.round(added['peak_lps'], 1).tolist()}"
        record.append(entry)
    labels = number_lesions(lesions, labels.shape)
    return labels, lesions, rejected, record


def _conflicts(lesions, affine, decisions):
    """Decisions that contradict another one on the same lesion (a reject and an accept or
    add): index -> why. Neither is applied: the reader has to settle it in the sheet."""
    targets = {}
    for n, d in enumerate(decisions):
        point = np.array([float(d["x"]), float(d["y"]), float(d["z"])])
        if not np.all(np.isfinite(point)):
            continue
        hit = _which(lesions, affine, point)
        if hit is not None:
            targets.setdefault(id(hit), []).append(n)
    out = {}
    for rows in targets.values():
        kinds = {decisions[n]["decision"] == "reject" for n in rows}
        if len(kinds) == 2:
            names = ", ".join(f"row {n + 1} ({decisions[n]['decision']})" for n in rows)
            for n in rows:
                out[n] = f"contradicting decisions on one lesion ({names} of this study's decisions)"
    return out


def position_of(lesion_row, tracer, reference, tfm=None):
    """A lesions.tsv row's position in ``tracer``'s study (LPS mm): its centroid (given in
    the reference study) mapped through the registration for the index tracer."""
    point = np.array([lesion_row["x_mm"], lesion_row["y_mm"], lesion_row["z_mm"]], float)
    if tracer == reference or tfm is None:
        return point
    from dualpet.registration import transform_points

    return transform_points(tfm, point[None])[0]


def pin(review_tsv, results, reference, out=None):
    """Rows written with a lesion ID only get the position of that lesion in the current
    ``results/{patient}/lesions.tsv`` (its centroid, in that tracer's study). Returns the
    number of rows pinned; writes ``out`` (default: the sheet itself)."""
    from pathlib import Path

    import pandas as pd

    from dualpet.errors import DualpetInputError
    from dualpet.io import write_tsv

    sheet = pd.read_csv(review_tsv, sep="\t", dtype=str, keep_default_na=False)
    for col in ("x", "y", "z", "lesion"):
        if col not in sheet.columns:
            sheet[col] = ""
    n = 0
    for i, row in sheet.iterrows():
        if row["lesion"] and not (row["x"] and row["y"] and row["z"]):
            table = Path(results) / row["patient"] / "lesions.tsv"
            if not table.is_file():
                raise DualpetInputError(
                    f"review sheet line {i + 2}: no results for patient {row['patient']} to pin "
                    f"lesion {row['lesion']} with"
                )
            lesions = pd.read_csv(table, sep="\t", dtype={"lesion": str})
            match = lesions[lesions["lesion"] == row["lesion"]]
            if match.empty:
                raise DualpetInputError(
                    f"review sheet line {i + 2}: patient {row['patient']} has no lesion {row['lesion']}"
                )
            tfm = None
            if row["tracer"] != reference:
                from dualpet.registration import load_transform

                tfm = load_transform(Path(results) / row["patient"] / "registration" / "transform.tfm")
            p = position_of(match.iloc[0], row["tracer"], reference, tfm)
            sheet.loc[i, ["x", "y", "z"]] = [f"{v:.2f}" for v in p]
            n += 1
    write_tsv(out or review_tsv, sheet)
    return n
