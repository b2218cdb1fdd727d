"""The files passed between workflow steps, defined once: every writer and reader of a
lesion crop and of the per-tracer lesion metrics goes through this module.

- A **lesion crop** (``results/{patient}/lesions/crops/{lesion}.npz``, written by the
  ``match`` step, read by each ``lesion_metrics`` job): the isocontour fraction and, per
  tracer, the SUV box around the lesion, its mask (the detection neighbourhood, or the
  other tracer's VOI carried over), its seed (the lesion's own detection region, whose
  maximum the isocontour is grown from), the box's voxel-to-LPS affine, the VOI mode and
  the study's background SUVmean.
- The **lesion metrics** (``LESION_METRICS``): the per-tracer columns of ``lesions.tsv``
  (contract order), the metrics each lesion job computes and the statistics compare.
- A study's **final VOIs** (``results/{patient}/{tracer}/voi.nii.gz``, written by ``match``,
  read by the DICOM-SEG export and the review page): on the study's PET grid, label k =
  lesion ``Lk`` of ``lesions.tsv`` (its own isocontour VOI, or the other tracer's carried
  over), 0 elsewhere; :func:`lesion_id` and :func:`voi_label` convert between the two.
- A study's **segmentation record** (``results/{patient}/{tracer}/segmentation.json``,
  written by the ``segment`` step, read by ``match`` and ``patient_table``): the patient and
  tracer, the background VOI (``background``: ``suvmean``, ``source``, ...) and the
  detection (``detection``: ``method`` and ``threshold_suv``, lesions, rejected candidates).
"""

from __future__ import annotations

import numpy as np

from dualpet.io import atomic_path, read_json, write_json

#: The ``region`` values of ``lesions.tsv`` (:func:`dualpet.matching.region_label`), in table
#: order; ``unknown``: the lesion lies outside the reference CT (no anatomy there).
REGIONS = ("bone", "lung", "liver", "lymph node", "other", "unknown")
REGION_UNKNOWN = "unknown"
#: How tables name lesions without a region (an empty cell of an older or edited table).
NO_REGION = "(no region)"

#: Per-tracer lesion metrics: the contract's lesions.tsv columns ``{tracer}_{metric}``, in order.
LESION_METRICS = ("suvmax", "suvmean", "suvpeak", "tbr", "tbr_mean", "mtv_ml", "tlg")

#: ``patients.tsv`` columns that are neither per tracer (``{tracer}_...``) nor clinical (the
#: clinical sheet's columns follow them).
PATIENT_COLUMNS = (
    "patient",
    "status",
    "excluded_reason",
    "registration_ok",
    "registration_body_dice",
    "registration_warnings",
)


def index_columns(tracers):
    """The columns of a patient's ``lesions/index.tsv`` (written by ``match``): one row per
    union lesion, its position, region and how each tracer's VOI was found."""
    cols = ["patient", "lesion", "x_mm", "y_mm", "z_mm", "region", "match_distance_mm"]
    return cols + [f"{t}_{k}" for t in tracers for k in ("detected", "voi_source", "label")]


def lesion_columns(tracers):
    """The columns of ``lesions.tsv`` (per patient and cohort), in the contract's order, then
    the additions (the contract allows new columns, never renames)."""
    cols = ["patient", "lesion", "x_mm", "y_mm", "z_mm", "region"]
    for t in tracers:
        cols += [f"{t}_detected"] + [f"{t}_{m}" for m in LESION_METRICS]
    cols += [f"{t}_{k}" for t in tracers for k in ("voi_source", "voi_ml", "origin")] + ["match_distance_mm"]
    return cols


def read_table(path):
    """A table the workflow wrote (``index.tsv``, ``lesions.tsv``, ``patients.tsv``): empty
    cells are missing; patient and lesion IDs and regions stay text (leading zeros kept).
    (The user's sheets are read by :func:`dualpet.sheets.read_tsv`, which checks them.)"""
    import pandas as pd

    return pd.read_csv(
        path, sep="\t", dtype={"patient": str, "lesion": str, "region": str}, keep_default_na=False, na_values=[""]
    )


def read_inspection(path):
    """A study's ``inspect.json`` verdict: ``ok`` and, when refused, ``error``."""
    return read_json(path)


def read_registration_qc(path):
    """A patient's ``registration/qc.json``: ``ok``, ``dice_body_after``, ``warnings``, ..."""
    return read_json(path)


def read_pet_sidecar(path):
    """A study's ``pet.json``: SUV factors, ``series_choice``, ``ct_coverage``,
    ``pet_to_ct_registration``, ..."""
    return read_json(path)


#: Per-tracer fields of a lesion crop (``mode``: isocontour, reader_contour, mapped_from_{tracer} or
#: outside_field_of_view).
CROP_FIELDS = ("suv", "mask", "affine", "mode", "background", "seed")


def write_crop(path, fraction, per_tracer):
    """Write a lesion crop atomically. ``per_tracer``: tracer -> dict with ``mode`` and,
    unless the mode is ``outside_field_of_view``, ``suv``, ``mask``, ``affine`` and
    ``background``."""
    arrays = {"fraction": np.array(float(fraction))}
    for tracer, fields in per_tracer.items():
        unknown = set(fields) - set(CROP_FIELDS)
        if unknown:
            raise ValueError(f"unknown crop fields {sorted(unknown)}")
        arrays[f"{tracer}_mode"] = np.array(str(fields["mode"]))
        if fields["mode"] != "outside_field_of_view":
            arrays[f"{tracer}_suv"] = np.asarray(fields["suv"], dtype=np.float32)
            arrays[f"{tracer}_mask"] = np.asarray(fields["mask"], dtype=bool)
            arrays[f"{tracer}_affine"] = np.asarray(fields["affine"], dtype=float)
            bg = fields["background"]
            arrays[f"{tracer}_background"] = np.array(np.nan if bg is None else float(bg))  # NaN: none (no TBR)
            if fields.get("seed") is not None:  # isocontour: the lesion's own detection region
                arrays[f"{tracer}_seed"] = np.asarray(fields["seed"], dtype=bool)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def read_crop(path, tracers):
    """A lesion crop as (fraction, {tracer: {field: value}}); a tracer whose lesion lies
    outside its PET has only ``mode``."""
    with np.load(path) as data:
        out = {}
        for tracer in tracers:
            mode = str(data[f"{tracer}_mode"])
            fields = {"mode": mode}
            if mode != "outside_field_of_view":
                fields.update(
                    suv=data[f"{tracer}_suv"],
                    mask=data[f"{tracer}_mask"],
                    affine=data[f"{tracer}_affine"],
                    background=float(data[f"{tracer}_background"]),
                    seed=data.get(f"{tracer}_seed"),
                )
            out[tracer] = fields
        return float(data["fraction"]), out


def write_segmentation(path, patient, tracer, background, method, info):
    """Write a study's segmentation record (``info``: what detection returned, with
    ``threshold_suv``; ``method``: the detection settings)."""
    write_json(
        path,
        {"patient": patient, "tracer": tracer, "background": background, "detection": {"method": dict(method), **info}},
    )


def read_segmentation(path):
    """The fields of a segmentation record the later steps use: ``background_suvmean``
    (None when the study has no background), ``background_source``, ``background_fallback``
    (why the configured region was not used, or why there is none; empty otherwise) and
    ``threshold_suv`` (None for reader methods), the detection ``method``, plus the whole
    record as ``record``."""
    rec = read_json(path)
    bg = rec["background"]
    missing = bg.get("missing")
    return {
        "background_suvmean": None if bg.get("suvmean") is None else float(bg["suvmean"]),
        "background_source": bg["source"],
        "background_fallback": f"{missing}: TBR not computed" if missing else bg.get("fallback", ""),
        "threshold_suv": rec["detection"].get("threshold_suv"),
        "method": _method_name(rec["detection"].get("method")),
        "record": rec,
    }


def _method_name(value):
    """The detection method's name: the record's ``method`` is the automatic methods' name
    or, for the reader methods, the detection settings (with their ``method``)."""
    return str(value.get("method", "")) if isinstance(value, dict) else str(value or "")


def dropped_organs(record):
    """One line naming the organs an ``anatomy.json`` record (:func:`dualpet.anatomy.anatomy_study`)
    dropped as implausible (a candidate that failed its volume or another plausibility
    check), each with the checks it failed; empty when none was. An organ with no candidate
    at all (nothing there: outside the field of view) was not dropped and is not named.

    >>> dropped_organs({"organs": {
    ...     "spleen": {"found": False, "volume_ml": 2400.0, "checks": {"volume": False, "left": True}},
    ...     "brain": {"found": False, "volume_ml": 0.0, "checks": {"volume": False}},
    ...     "liver": {"found": True, "volume_ml": 1500.0, "checks": {"volume": True}}}})
    'spleen (volume)'
    """
    out = []
    for name, entry in record.get("organs", {}).items():
        failed = [k for k, ok in (entry.get("checks") or {}).items() if not ok]
        if not entry.get("found") and failed and float(entry.get("volume_ml") or 0.0) > 0.0:
            out.append(f"{name} ({'; '.join(failed)})")
    return "; ".join(out)


def series_note(choice):
    """One line on a study's series choice (``series_choice`` of ``pet.json``, see
    :meth:`dualpet.dicom.Selection.report`) worth a reader's attention: a derived volume
    used for want of an ORIGINAL series, or a series named in the studies sheet; empty
    otherwise.

    >>> series_note({"pet": {"series": "#4", "chosen_because": "named by pet_series"}, "ct": {"series": "#2"}})
    'PET #4: named by pet_series'
    """
    notes = []
    for kind in ("pet", "ct"):
        entry = (choice or {}).get(kind) or {}
        why = str(entry.get("chosen_because", ""))
        if "no ORIGINAL" in why or why.startswith("named by"):
            notes.append(f"{kind.upper()} {entry.get('series', '')}: {why}")
    return "; ".join(notes)


def lesion_id(number, width=2):
    """Lesion number -> its ID in ``lesions.tsv``.

    >>> lesion_id(7), lesion_id(123)
    ('L07', 'L123')
    """
    return f"L{int(number):0{width}d}"


def voi_label(lesion):
    """Lesion ID -> its label in ``voi.nii.gz``.

    >>> voi_label("L07"), voi_label(lesion_id(123))
    (7, 123)
    """
    return int(str(lesion).lstrip("L"))


def write_voi(path, labels, affine):
    """Write a study's final VOI label image (label k = lesion Lk) atomically."""
    from dualpet.nifti import nifti_image, save_nifti

    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    save_nifti(path, nifti_image(labels.astype(dtype), affine))


def read_voi(path):
    """A study's final VOI label image: (int32 labels, voxel->LPS affine)."""
    from dualpet.geometry import lps_affine
    from dualpet.nifti import load_nifti

    img = load_nifti(path)
    return np.rint(np.asarray(img.dataobj)).astype(np.int32), lps_affine(img.affine)
