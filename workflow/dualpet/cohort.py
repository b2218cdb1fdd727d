"""Per-patient lesion tables and the cohort tables of the contract (``lesions.tsv``, ``patients.tsv``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from dualpet.failures import read_failures, reasons
from dualpet.interchange import (
    LESION_METRICS,
    dropped_organs,
    lesion_columns,
    read_pet_sidecar,
    read_registration_qc,
    read_segmentation,
    read_table,
    series_note,
)
from dualpet.io import read_json, write_json, write_tsv


def patient_tables(
    patient,
    tracers,
    index_tsv,
    metric_jsons,
    segmentations,
    registration_qc,
    out_lesions,
    out_patient,
    pet_sidecars=None,
    anatomy=None,
):
    """Join the lesion index with the per-lesion metrics; summarise the patient.

    Parameters
    ----------
    segmentations : dict tracer -> path of that study's segmentation JSON.
    registration_qc : path of the registration QC JSON.
    pet_sidecars : dict tracer -> path of that study's pet.json (PET-to-CT registration).
    anatomy : dict tracer -> path of that study's anatomy.json (organs dropped as implausible).
    """
    index = read_table(index_tsv)
    metrics = {Path(p).stem: read_json(p) for p in metric_jsons}
    segs = {t: read_segmentation(segmentations[t]) for t in tracers}
    # where each tracer's lesion came from: automatic, reader-accepted, reader-added, ...
    origin = {
        t: {int(les["label"]): les.get("origin", "automatic") for les in segs[t]["record"]["detection"]["lesions"]}
        for t in tracers
    }
    rows = []
    for rec in index.to_dict("records"):
        m = metrics.get(rec["lesion"])
        if m is None:
            raise ValueError(f"patient {patient}: no metrics for lesion {rec['lesion']}")
        row = dict(rec)
        for t in tracers:
            for key in (*LESION_METRICS, "voi_ml"):
                row[f"{t}_{key}"] = m[t].get(key, np.nan)
            label = rec.get(f"{t}_label")
            row[f"{t}_origin"] = origin[t].get(int(label), "") if pd.notna(label) and label != "" else ""
        rows.append(row)
    cols = lesion_columns(tracers)
    lesions = pd.DataFrame(rows).reindex(columns=cols) if rows else pd.DataFrame(columns=cols)
    lesions["region"] = lesions["region"].fillna("")
    write_tsv(out_lesions, lesions)

    qc = read_registration_qc(registration_qc)
    summary = {"patient": patient}
    for t in tracers:
        seg = segs[t]
        review = seg["record"]["detection"].get("review", [])
        summary[f"{t}_review_decisions"] = len(review)
        summary[f"{t}_review_not_applied"] = sum(str(r.get("applied", "")).startswith("not applied") for r in review)
        detected = int(lesions[f"{t}_detected"].sum()) if len(lesions) else 0
        summary[f"{t}_positive"] = int(detected > 0)
        summary[f"{t}_lesions"] = detected
        summary[f"{t}_background_suvmean"] = seg["background_suvmean"]
        summary[f"{t}_background_source"] = seg["background_source"]
        summary[f"{t}_background_fallback"] = seg["background_fallback"]
        if anatomy and anatomy.get(t):
            summary[f"{t}_organs_dropped"] = dropped_organs(read_json(anatomy[t]))
        summary[f"{t}_threshold_suv"] = seg["threshold_suv"]
        if pet_sidecars and pet_sidecars.get(t):
            sidecar = read_pet_sidecar(pet_sidecars[t])
            # 1: PET and CT did not share a frame of reference and were registered (pet.json)
            summary[f"{t}_pet_ct_registered"] = int(bool(sidecar.get("pet_to_ct_registration")))
            summary[f"{t}_series_note"] = series_note(sidecar.get("series_choice"))
            # the PET's planes the CT leaves uncovered (mm, both ends): no anatomy there
            uncovered = (sidecar.get("ct_coverage") or {}).get("uncovered_mm")
            summary[f"{t}_ct_uncovered_mm"] = round(float(sum(uncovered)), 1) if uncovered else None
    summary["registration_ok"] = int(bool(qc.get("ok", True)))
    summary["registration_body_dice"] = qc.get("dice_body_after")
    summary["registration_warnings"] = "; ".join(qc.get("warnings", []))
    write_json(out_patient, summary)
    return lesions, summary


def read_clinical(path, tracers, patients):
    """The clinical sheet, checked: one row per patient, no column that reads as a tracer
    column in another case (``FDG_suvmax`` beside tracer ``fdg`` would be correlated as a
    clinical variable). Rows of patients not in the sheet are left out, with a note on stderr."""
    import sys

    from dualpet.errors import DualpetInputError

    clinical = pd.read_csv(path, sep="\t", dtype={"patient": str})
    if "patient" not in clinical.columns:
        raise DualpetInputError(f"clinical sheet {Path(path).name}: no 'patient' column")
    clinical["patient"] = clinical["patient"].astype(str).str.strip()
    dup = clinical["patient"][clinical["patient"].duplicated()].unique().tolist()
    if dup:
        raise DualpetInputError(
            f"clinical sheet {Path(path).name}: patient(s) listed more than once: {', '.join(dup[:10])}"
        )
    lower = {t.lower(): t for t in tracers}
    for col in clinical.columns:
        head = str(col).split("_", 1)[0]
        if head.lower() in lower and head not in tracers:
            raise DualpetInputError(
                f"clinical sheet {Path(path).name}: column {col!r} starts with tracer "
                f"{lower[head.lower()]!r} in another case; rename it (tracer names are case-sensitive)"
            )
    unknown = sorted(set(clinical["patient"]) - set(patients))
    if unknown:
        print(
            f"clinical sheet: {len(unknown)} row(s) of patients not in the studies sheet left out: "
            f"{', '.join(unknown[:10])}",
            file=sys.stderr,
        )
    return clinical[clinical["patient"].isin(patients)]


def merge_cohort(
    lesion_tsvs,
    patient_jsons,
    tracers,
    out_lesions,
    out_patients,
    clinical_tsv=None,
    other_outputs=(),
    tables_html=None,
):
    """Concatenate per-patient tables into the cohort tables, adding clinical columns.

    Every patient of the sheet has a ``patient.json``: a real one, or the placeholder of
    a failed step (:mod:`dualpet.failures`). A patient with a placeholder among its
    ``patient.json``, ``lesions.tsv`` or ``other_outputs`` (registration views, background
    pictures) is listed in ``patients.tsv`` with ``status`` excluded and
    ``excluded_reason`` (one line per failed step); its lesions are left out.
    """
    placeholder = {p: read_failures(p) for p in [*patient_jsons, *lesion_tsvs, *other_outputs]}  # read once
    failed = {}
    for rec in {json.dumps(r, sort_keys=True): r for recs in placeholder.values() for r in recs or []}.values():
        failed.setdefault(rec["patient"], []).append(rec)
    rows = []
    for path in patient_jsons:
        if placeholder[path] is None:
            row = read_json(path)
            if row["patient"] not in failed:
                rows.append({**row, "status": "included", "excluded_reason": ""})
    for patient, recs in sorted(failed.items()):
        rows.append({"patient": patient, "status": "excluded", "excluded_reason": reasons(recs)})
    frames = [read_table(p) for p in lesion_tsvs if placeholder[p] is None]
    frames = [f[~f["patient"].isin(failed)] for f in frames if len(f)]
    frames = [f for f in frames if len(f)]
    cols = lesion_columns(tracers)
    lesions = pd.concat(frames, ignore_index=True).reindex(columns=cols) if frames else pd.DataFrame(columns=cols)
    lesions["region"] = lesions["region"].fillna("")
    patients = pd.DataFrame(rows, columns=list(dict.fromkeys(["patient", *(k for r in rows for k in r)])))
    if clinical_tsv:
        clinical = read_clinical(clinical_tsv, tracers, set(patients["patient"]))
        extra = [c for c in clinical.columns if c != "patient" and c not in patients.columns]
        patients = patients.merge(clinical[["patient", *extra]], on="patient", how="left")
    lesions = lesions.sort_values(["patient", "lesion"], kind="stable")
    patients = patients.sort_values("patient", kind="stable")
    write_tsv(out_lesions, lesions)
    write_tsv(out_patients, patients)
    if tables_html:
        write_tables_html(tables_html, lesions, patients)
    return lesions, patients


def write_tables_html(path, lesions, patients):
    """Both cohort tables on one self-contained page (the Snakemake report's view of them)."""
    from dualpet.io import html_page, write_text

    def table(frame):
        frame = frame.copy()
        for col in frame.select_dtypes(include="object").columns:  # None in a text column: empty, not "None"
            frame[col] = frame[col].map(lambda v: "" if v is None or (isinstance(v, float) and v != v) else v)
        return frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=0)

    body = (
        f"<h1>Cohort tables</h1><h2>patients.tsv ({len(patients)} patients)</h2>{table(patients)}"
        f"<h2>lesions.tsv ({len(lesions)} lesions)</h2>{table(lesions)}"
    )
    write_text(path, html_page("dualpet cohort tables", body))


def check_cohort(patients_tsv, out_json):
    """Exit status of the run: 1 (with one line per excluded patient on stderr) while any
    patient is excluded, else 0 and ``out_json`` written. The cohort outputs exist either way."""
    import sys

    patients = pd.read_csv(patients_tsv, sep="\t", dtype=str, keep_default_na=False)
    excluded = patients[patients["status"] == "excluded"]
    if len(excluded):
        print(
            f"{len(excluded)} of {len(patients)} patient(s) excluded; the cohort tables and statistics were written "
            "for the others (results/cohort/). Fix or remove these patients to complete the run:",
            file=sys.stderr,
        )
        for row in excluded.itertuples():
            print(f"  {row.patient}: {row.excluded_reason}", file=sys.stderr)
        return 1
    write_json(out_json, {"patients": len(patients), "included": len(patients), "complete": True})
    return 0
