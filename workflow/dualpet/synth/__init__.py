"""``dualpet synth``: a synthetic dual-tracer PET/CT cohort with known ground truth.

Each patient has one torso phantom (anatomy, physiology, lesions) imaged twice, with a
reference tracer (FDG) and an index tracer (Pentixafor), days apart: different dose,
weight, timing, pose on the table and scanner origin. Every study is a CT (HU) and a PET
(Bq/mL, decay-corrected to the series start, int16 with per-slice RescaleSlope) sharing
one FrameOfReferenceUID, with complete DICOM headers including synthetic identifying
data (so that de-identification can be tested).

Written to ``OUTDIR``:

- ``dicom/{patient}/{tracer}/{CT,PT}_{n}/*.dcm``
- ``studies.tsv`` (``dicom_dir`` relative to OUTDIR) and ``clinical.tsv``
- ``truth/{patient}.json``: lesion centres in both studies' LPS coordinates, radius,
  true SUVs, the SUVmax/SUVmean actually present in each simulated PET, expected
  detectability, background SUVs and the inter-study transform.

Determinism: patient ``n`` depends only on ``(seed, n)`` (and ``size`` for the image
grids and noise), so adding patients leaves earlier ones unchanged; patients already
present with the same seed and size are not rewritten.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from dualpet import __version__
from dualpet.geometry import apply_affine, rotation_matrix
from dualpet.io import read_json, write_json, write_text
from dualpet.synth import dicomwrite as dw
from dualpet.synth.phantom import BLOOD, LIVER, TRACER_NUCLIDE, make_phantom
from dualpet.synth.render import add_pet_noise, grid_affine, render_ct, render_pet_truth

HALF_LIFE_S = {"F-18": 6586.2, "Ga-68": 4062.6}

#: Image grids. demo: a patient in a few seconds; clinical: typical whole-body PET/CT.
SIZES = {
    "demo": {"ct_matrix": 160, "ct_pixel": 3.0, "ct_slice": 3.0,
             "pet_matrix": 112, "pet_pixel": 4.0, "pet_slice": 4.0, "z_extent": 390.0},
    "clinical": {"ct_matrix": 512, "ct_pixel": 0.9765625, "ct_slice": 3.0,
                 "pet_matrix": 200, "pet_pixel": 4.0, "pet_slice": 3.0, "z_extent": 900.0},
}  # fmt: skip
#: PET resolution (FWHM, mm) and noise (coefficient of variation at SUV 2) per nuclide:
#: Ga-68 has a longer positron range and, at lower injected activity, more noise.
PET_PHYSICS = {"F-18": {"fwhm": 6.5, "cov": 0.10}, "Ga-68": {"fwhm": 7.0, "cov": 0.14}}
#: Anatomy z range (mm) that holds the lesions; inside every size's field of view even
#: after the pose translation (up to 30 mm).
LESION_Z_RANGE = (-175.0, 135.0)
FOV_CENTER_Z = -25.0
DEFAULT_POSES = {"max_rotation_deg": 5.0, "max_translation_mm": 30.0}  # anatomy z at the centre of the field of view
BED_LENGTH_MM, BED_DURATION_S = 160.0, 120.0
#: ``--quirks``: recorded slice positions jitter by up to this much (real scanners round
#: positions and overlap beds: e.g. gaps of 3.19-3.29 mm around 3.27 mm).
SLICE_JITTER_MM = 0.05

#: Vendor header variants of ``--quirks`` (one per study, cycling), each a real-world case
#: the reader must handle: Philips counts with private scale factors, dose in MBq,
#: injection before midnight (StartTime only), post-processed SeriesTime after the
#: acquisition, GE private scan datetime, feet-first acquisition numbering.
QUIRKS = (
    "philips_cnts",
    "mbq_dose",
    "midnight_injection",
    "postprocessed_series_time",
    "ge_private_datetime",
    "feet_first",
)

DETECTABILITY_RULE = (
    "detectable on a tracer if the noiseless partial-volume image maximum within the lesion "
    "is at least 1.5 x the local background (noiseless mean in a 10-20 mm shell around the "
    "lesion) and at least 2 x the blood-pool SUV"
)

_FIRST = ["Anna", "Bernd", "Clara", "Dieter", "Eva", "Frank", "Greta", "Hans", "Ines", "Jonas", "Karin", "Lukas"]
_LAST = ["Muster", "Schmidt", "Weber", "Fischer", "Wagner", "Becker", "Hoffmann", "Koch", "Richter", "Klein"]


def patient_id(n):
    """Pseudonymous ID of patient number ``n`` (1-based)."""
    return f"P{n:03d}"


def generate_cohort(
    outdir,
    n_patients=4,
    seed=0,
    size="demo",
    tracers=("fdg", "pentixafor"),
    quirks=False,
    max_rotation_deg=5.0,
    max_translation_mm=30.0,
    log=print,
):
    """Generate (or complete) a cohort in ``outdir``; returns the studies table.

    With ``quirks``, every study carries one vendor header variant of :data:`QUIRKS`
    (cycling over the studies) and extra series (NAC PET, CT localizer, PET MIP) in its
    folder; the pixel truth is the same. ``max_rotation_deg`` and ``max_translation_mm``
    bound the pose difference between a patient's two studies (defaults 5 deg, 30 mm;
    larger values scale the same random draws, for harder registration benchmarks).
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(SIZES)}")
    outdir = Path(outdir)
    rows, clinical = [], []
    for n in range(1, n_patients + 1):
        pid = patient_id(n)
        truth_path = outdir / "truth" / f"{pid}.json"
        truth = read_json(truth_path) if truth_path.exists() else None
        pose_range = {"max_rotation_deg": float(max_rotation_deg), "max_translation_mm": float(max_translation_mm)}
        got = (truth.get("seed"), truth.get("size"), bool(truth.get("quirks_enabled")), truth.get("pose_range", DEFAULT_POSES)) if truth else None
        same = got == (seed, size, quirks, pose_range)
        if same and tuple(truth["tracers"]) == tuple(tracers):
            log(f"{pid}: present, kept")
        else:
            log(f"{pid}: generating ({size})")
            truth = generate_patient(outdir, pid, n, seed, size, tracers, quirks, pose_range)
        for tracer in tracers:
            rows.append({"patient": pid, "tracer": tracer, "dicom_dir": f"dicom/{pid}/{tracer}", "pet_series": "", "ct_series": ""})
        clinical.append({"patient": pid, **truth["clinical"]})
    studies = pd.DataFrame(rows)
    _write_if_changed(outdir / "studies.tsv", studies.to_csv(sep="\t", index=False))
    _write_if_changed(outdir / "clinical.tsv", pd.DataFrame(clinical).to_csv(sep="\t", index=False))
    return studies


def _write_if_changed(path, text):
    if not path.exists() or path.read_text() != text:
        write_text(path, text)


def generate_patient(outdir, pid, n, seed, size, tracers, quirks=False, pose_range=None):
    """Simulate one patient's two studies; writes DICOM and truth, returns the truth dict."""
    grid = SIZES[size]
    rng_anat = np.random.default_rng([seed, n, 0])  # anatomy, physiology, lesions
    rng_study = np.random.default_rng([seed, n, 1])  # doses, times, poses, identifiers
    ref, idx = tracers
    pose_range = pose_range or DEFAULT_POSES
    rot_scale = pose_range["max_rotation_deg"] / DEFAULT_POSES["max_rotation_deg"]
    shift_scale = pose_range["max_translation_mm"] / DEFAULT_POSES["max_translation_mm"]
    # keep lesions inside both fields of view when the studies may move further apart
    margin = max(0.0, pose_range["max_translation_mm"] - DEFAULT_POSES["max_translation_mm"])
    z_range = (LESION_Z_RANGE[0] + margin, LESION_Z_RANGE[1] - margin)
    phantom = make_phantom(rng_anat, tracers, int(rng_anat.integers(4, 11)), z_range)

    sex = str(rng_study.choice(["F", "M"]))
    height = float(rng_study.uniform(1.55, 1.80) + (0.08 if sex == "M" else 0.0))
    weight_ref = float(rng_study.uniform(55.0, 100.0))
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng_study.integers(0, 365 * 35)))
    ident = {
        "PatientName": f"{_LAST[rng_study.integers(len(_LAST))]}^{_FIRST[rng_study.integers(len(_FIRST))]}",
        "PatientID": f"MRN{rng_study.integers(10**6, 10**7)}",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "InstitutionName": "Synthetic University Hospital Nordstadt",
        "ReferringPhysicianName": f"Referrer^{_FIRST[rng_study.integers(len(_FIRST))]}",
        "OperatorsName": f"Operator^{_FIRST[rng_study.integers(len(_FIRST))]}",
        "AccessionNumber": [],
    }
    person = {"sex": sex, "height_m": round(height, 2)}
    day0 = dt.datetime(2024, 1, 8) + dt.timedelta(days=int(rng_study.integers(0, 600)))
    gap_days = int(rng_study.integers(2, 15))
    studies, poses = {}, {}
    for s_i, tracer in enumerate(tracers):
        nuclide = TRACER_NUCLIDE[tracer]
        half_life = HALF_LIFE_S[nuclide]
        weight = weight_ref if s_i == 0 else float(weight_ref + rng_study.uniform(-2.0, 2.0))
        if tracer == "fdg":
            dose = float(3.5e6 * weight * rng_study.uniform(0.9, 1.1))
        else:
            dose = float(rng_study.uniform(90e6, 160e6))
        inj_minute = int(rng_study.integers(8 * 60, 11 * 60))
        quirk = QUIRKS[(2 * (n - 1) + s_i) % len(QUIRKS)] if quirks else None
        if quirk == "midnight_injection":  # injected late evening, scanned after midnight
            inj_minute = 23 * 60 + 5 + inj_minute % 30
        inj = day0 + dt.timedelta(days=gap_days * s_i, minutes=inj_minute, seconds=int(rng_study.integers(60)))
        uptake_s = float(rng_study.uniform(50.0, 75.0) * 60.0)
        series_dt = inj + dt.timedelta(seconds=round(uptake_s))
        uptake_s = (series_dt - inj).total_seconds()
        angles = rng_study.uniform([-3.0, -3.0, -5.0], [3.0, 3.0, 5.0]) * rot_scale
        table_z = float(rng_study.uniform(-1100.0, -700.0))
        offset = np.array([rng_study.uniform(-30, 30), rng_study.uniform(-15, 15), rng_study.uniform(-30, 30)])
        trans = offset * shift_scale + np.array([0.0, 0.0, table_z])
        R = rotation_matrix(angles)
        poses[tracer] = (R, trans)
        accession = f"ACC{rng_study.integers(10**7, 10**8)}"
        ident["AccessionNumber"].append(accession)
        studies[tracer] = {
            "radionuclide": nuclide,
            "half_life_s": half_life,
            "injected_dose_bq": dose,
            "weight_kg": round(weight, 1),
            "injection_datetime": inj.isoformat(),
            "series_datetime": series_dt.isoformat(),
            "uptake_time_s": uptake_s,
            "units": "CNTS" if quirk == "philips_cnts" else "BQML",
            "decay_correction": "START",
            "quirk": quirk,
            "pose": {"angles_deg": angles.tolist(), "rotation": R.tolist(), "translation_mm": trans.tolist()},
            "fov_center_lps": [0.0, 0.0, table_z + FOV_CENTER_Z],
            "_accession": accession,
            "_index": s_i,
            "_table_z": table_z,
        }

    folder = outdir / "dicom" / pid
    tmp = outdir / "dicom" / f".{pid}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    lesion_truth = {les.id: {} for les in phantom.lesions}
    for s_i, tracer in enumerate(tracers):
        rng_noise = np.random.default_rng([seed, n, 2, s_i])
        st = studies[tracer]
        _simulate_study(tmp / tracer, tracer, phantom, poses[tracer], st, grid, ident, person, rng_noise, seed, n, lesion_truth)
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(folder)

    # ITK convention of the contract: maps a point of the reference study to the index study.
    Rr, tr = poses[ref]
    Ri, ti = poses[idx]
    M = np.eye(4)
    M[:3, :3] = Ri @ Rr.T
    M[:3, 3] = ti - Ri @ Rr.T @ tr
    frac_pos = np.mean([les.category != "reference_only" for les in phantom.lesions])
    ihc = int(np.clip(np.round(3 * frac_pos + rng_study.normal(0, 0.5)), 0, 3))
    truth = {
        "generator": f"dualpet synth {__version__}",
        "patient": pid,
        "seed": seed,
        "size": size,
        "tracers": list(tracers),
        "quirks_enabled": bool(quirks),
        "pose_range": pose_range,
        "reference_tracer": ref,
        "index_tracer": idx,
        "identifiers": ident,
        "patient_info": person,
        "clinical": {"cxcr4_ihc": ihc, "histology": "NEC", "ki67_percent": int(rng_study.integers(25, 90))},
        "studies": {t: {k: v for k, v in s.items() if not k.startswith("_")} for t, s in studies.items()},
        "transform_reference_to_index": {
            "matrix_lps": M.tolist(),
            "convention": "x_index = M @ [x_reference, 1] (LPS mm); what the contract's transform.tfm "
            "(fixed = reference CT, moving = index CT) TransformPoint computes",
        },
        "detectability_rule": DETECTABILITY_RULE,
        "lesions": [
            {
                "id": les.id,
                "region": les.region,
                "category": les.category,
                "radius_mm": round(les.radius, 3),
                "volume_ml": 4.0 / 3.0 * np.pi * les.radius**3 / 1000.0,
                "center_anatomy_mm": les.center.tolist(),
                "true_suv": les.suv,
                **_transpose(lesion_truth[les.id]),
            }
            for les in phantom.lesions
        ],
    }
    write_json(outdir / "truth" / f"{pid}.json", truth)
    return truth


def _transpose(per_tracer):
    """{tracer: {key: v}} -> {key: {tracer: v}}."""
    out = {}
    for tracer, values in per_tracer.items():
        for key, v in values.items():
            out.setdefault(key, {})[tracer] = v
    return out


def _simulate_study(folder, tracer, phantom, pose, st, grid, ident, person, rng, seed, n, lesion_truth):
    R, t = pose
    fov_center = np.asarray(st["fov_center_lps"])
    nk_ct = int(round(grid["z_extent"] / grid["ct_slice"]))
    nk_pet = int(round(grid["z_extent"] / grid["pet_slice"]))
    ct_shape = (grid["ct_matrix"], grid["ct_matrix"], nk_ct)
    pet_shape = (grid["pet_matrix"], grid["pet_matrix"], nk_pet)
    ct_aff = grid_affine(ct_shape, (grid["ct_pixel"], grid["ct_pixel"], grid["ct_slice"]), fov_center)
    pet_aff = grid_affine(pet_shape, (grid["pet_pixel"], grid["pet_pixel"], grid["pet_slice"]), fov_center)
    physics = PET_PHYSICS[st["radionuclide"]]

    # Couch top just below the lowest (most posterior) point of the posed body surface.
    bx, by = phantom.body_semi
    th = np.linspace(0, 2 * np.pi, 72)
    ring = np.concatenate([np.stack([bx * np.cos(th), by * np.sin(th), np.full_like(th, z)], 1) for z in (-450, 0, 450)])
    table_top = float((ring @ R.T + t)[:, 1].max() + 1.0)

    hu = render_ct(phantom, ct_shape, ct_aff, pose, rng, table_top)
    ct_stored = np.clip(np.round(hu + 1024.0), -1024, 3071).astype(np.int16)
    del hu

    clean = render_pet_truth(phantom, tracer, pet_shape, pet_aff, pose, physics["fwhm"])
    noisy = add_pet_noise(clean, rng, physics["cov"])
    inj = dt.datetime.fromisoformat(st["injection_datetime"])
    series_dt = dt.datetime.fromisoformat(st["series_datetime"])
    dose_ref = st["injected_dose_bq"] * 2.0 ** (-(series_dt - inj).total_seconds() / st["half_life_s"])
    suv_to_bqml = dose_ref / (st["weight_kg"] * 1000.0)
    quirk = st.get("quirk")
    # Philips stores counts: value x activity scale factor = Bq/mL
    to_bqml = 0.5 + 0.1 * (n % 7) if quirk == "philips_cnts" else 1.0
    values = noisy * (suv_to_bqml / to_bqml)
    pet_stored, slopes = _quantise(values)
    suv_image = pet_stored * slopes * (to_bqml / suv_to_bqml)  # what a correct reader recovers
    st["dose_at_reference_time_bq"] = dose_ref
    st["suv_to_bqml"] = suv_to_bqml
    st["ct"] = {"shape": list(ct_shape), "affine_lps": ct_aff.tolist()}
    st["pet"] = {"shape": list(pet_shape), "affine_lps": pet_aff.tolist(), "psf_fwhm_mm": physics["fwhm"], "noise_cov_at_suv2": physics["cov"]}
    st["background"] = _background_truth(phantom, tracer, pose, clean, pet_aff)
    _lesion_image_truth(phantom, tracer, pose, clean, suv_image, pet_aff, st["background"], lesion_truth)

    # --- DICOM headers -------------------------------------------------------------
    study_uid = dw.uid(seed, n, tracer, "study")
    for_uid = dw.uid(seed, n, tracer, "frame")
    ct_time = series_dt - dt.timedelta(minutes=4)
    common = {
        "PatientName": ident["PatientName"],
        "PatientID": ident["PatientID"],
        "PatientBirthDate": ident["PatientBirthDate"],
        "PatientSex": person["sex"],
        "PatientAge": f"{series_dt.year - int(ident['PatientBirthDate'][:4]):03d}Y",
        "PatientWeight": f"{st['weight_kg']:.1f}",
        "PatientSize": f"{person['height_m']:.2f}",
        "StudyInstanceUID": study_uid,
        "StudyDate": dw.dicom_date(ct_time),
        "StudyTime": dw.dicom_time(ct_time),
        "StudyID": "1",
        "AccessionNumber": st["_accession"],
        "ReferringPhysicianName": ident["ReferringPhysicianName"],
        "OperatorsName": ident["OperatorsName"],
        "StudyDescription": f"PET/CT {tracer.upper()} whole body",
        "InstitutionName": ident["InstitutionName"],
        "Manufacturer": "dualpet synth",
        "ManufacturerModelName": "Phantom PET/CT",
        "StationName": "SYNTH01",
        "FrameOfReferenceUID": for_uid,
        "PositionReferenceIndicator": "",
        "PatientPosition": "FFS" if quirk == "feet_first" else "HFS",
        "BodyPartExamined": "WHOLEBODY",
    }
    ct_header = {
        **common,
        "Modality": "CT",
        "SeriesInstanceUID": dw.uid(seed, n, tracer, "ct"),
        "SeriesNumber": 2,
        "SeriesDescription": "CT WB 3.0 B30f",
        "SeriesDate": dw.dicom_date(ct_time),
        "SeriesTime": dw.dicom_time(ct_time),
        "AcquisitionDate": dw.dicom_date(ct_time),
        "AcquisitionTime": dw.dicom_time(ct_time),
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "KVP": "120",
        "RescaleType": "HU",
    }
    jitter = SLICE_JITTER_MM if quirk is not None else 0.0
    dw.write_series(folder / "CT_2", ct_stored, ct_aff, sop_class=dw.CT_IMAGE_STORAGE, header=ct_header,
                    slopes=np.ones(nk_ct), intercept=-1024.0, uid_seed=(seed, n, tracer, "ct"), file_prefix="CT",
                    jitter_mm=jitter)  # fmt: skip

    lam = np.log(2.0) / st["half_life_s"]
    z_of_k = apply_affine(pet_aff, np.stack([np.zeros(nk_pet), np.zeros(nk_pet), np.arange(nk_pet)], 1))[:, 2]
    bed = np.floor((z_of_k - z_of_k.min()) / BED_LENGTH_MM).astype(int)  # feet first: bed 0 lowest
    # decay-weighted mid-frame time of a bed (s after its start)
    mid = -np.log((1 - np.exp(-lam * BED_DURATION_S)) / (lam * BED_DURATION_S)) / lam

    ge = quirk == "ge_private_datetime"  # GE: FrameReferenceTime is the frame start's offset

    def pet_slice(k):
        start = bed[k] * BED_DURATION_S
        acq = series_dt + dt.timedelta(seconds=float(start))
        return {
            "AcquisitionDate": dw.dicom_date(acq),
            "AcquisitionTime": dw.dicom_time(acq),
            "FrameReferenceTime": f"{(start + (0.0 if ge else mid)) * 1000.0:.1f}",
            "ActualFrameDuration": int(BED_DURATION_S * 1000),
            "DecayFactor": f"{np.exp(lam * (start + mid)):.6f}",
            "ImageIndex": int(nk_pet - k),
        }

    pet_header = {
        **common,
        "Modality": "PT",
        "SeriesInstanceUID": dw.uid(seed, n, tracer, "pet"),
        "SeriesNumber": 3,
        "SeriesDescription": f"PET WB {tracer.upper()} AC",
        "SeriesDate": dw.dicom_date(series_dt),
        "SeriesTime": dw.dicom_time(series_dt),
        "ImageType": ["ORIGINAL", "PRIMARY"],
        "Units": "BQML",
        "DecayCorrection": "START",
        "CorrectedImage": ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"],
        "SeriesType": ["WHOLE BODY", "IMAGE"],
        "CountsSource": "EMISSION",
        "AttenuationCorrectionMethod": "CTAC",
        "ReconstructionMethod": "OSEM 3i21s",
        "NumberOfSlices": nk_pet,
        "RescaleType": "BQML",
        "RadiopharmaceuticalInformationSequence": dw.radiopharmaceutical_sequence(
            tracer, st["radionuclide"], st["injected_dose_bq"], st["half_life_s"], inj
        ),
    }
    hook = _apply_quirk(quirk, pet_header, st, series_dt, to_bqml, suv_to_bqml)
    dw.write_series(folder / "PT_3", pet_stored, pet_aff, sop_class=dw.PET_IMAGE_STORAGE, header=pet_header,
                    slopes=slopes, intercept=0.0, per_slice=pet_slice, uid_seed=(seed, n, tracer, "pet"), file_prefix="PT",
                    instances_from="feet" if quirk == "feet_first" else "head", hook=hook, jitter_mm=jitter)  # fmt: skip
    if quirk is not None:
        ge_nac = (n + st["_index"]) % 2 == 0  # every other study: GE-style NAC
        st["extra_series"] = _write_extra_series(folder, pet_header, ct_header, values, ct_stored, pet_aff, ct_aff,
                                                 pet_slice, (seed, n, tracer), ge_nac=ge_nac, jitter_mm=jitter)  # fmt: skip
        st["extra_series"] += _write_objects(folder, common, pet_stored, (seed, n, tracer))
        st["slice_jitter_mm"] = jitter


def _quantise(values):
    """int16 pixels and per-slice RescaleSlope (slope = slice max / 32000, as scanners do)."""
    slopes = np.maximum(values.reshape(-1, values.shape[2]).max(axis=0), 1e-6) / 32000.0
    return np.round(values / slopes).astype(np.int16), slopes


def _apply_quirk(quirk, header, st, series_dt, to_bqml, suv_to_bqml):
    """Change the PET header for a vendor variant; returns a per-slice hook or None."""
    item = header["RadiopharmaceuticalInformationSequence"][0]
    if quirk == "mbq_dose":
        item.RadionuclideTotalDose = f"{st['injected_dose_bq'] / 1e6:.7g}"
    elif quirk == "midnight_injection":
        del item.RadiopharmaceuticalStartDateTime  # only the time of day: the reader must roll back a day
    elif quirk in ("postprocessed_series_time", "ge_private_datetime"):
        late = series_dt + dt.timedelta(minutes=37)  # series re-saved after reconstruction
        header["SeriesTime"] = dw.dicom_time(late)
        if quirk == "ge_private_datetime":
            header["Manufacturer"] = "GE MEDICAL SYSTEMS"

            def hook(ds, k):
                block = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
                block.add_new(0x0D, "DT", dw.dicom_date(series_dt) + dw.dicom_time(series_dt))

            return hook
    elif quirk == "philips_cnts":
        header["Units"] = "CNTS"
        header["RescaleType"] = "CNTS"
        header["Manufacturer"] = "Philips"

        def hook(ds, k):
            block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
            block.add_new(0x00, "DS", f"{to_bqml / suv_to_bqml:.10g}")  # SUV Scale Factor
            block.add_new(0x09, "DS", f"{to_bqml:.10g}")  # Activity Concentration Scale Factor

        return hook
    return None


def _write_extra_series(folder, pet_header, ct_header, pet_values, ct_stored, pet_aff, ct_aff, pet_slice, key, *,
                        ge_nac=False, jitter_mm=0.0):  # fmt: skip
    """Series a study folder also holds: NAC PET, CT localizer, PET MIP (all to be ignored).

    ``ge_nac``: the NAC series as GE writes it (ATTN listed in CorrectedImage too, Units
    PROPCNTS); otherwise as Siemens does (no ATTN, Units BQML).
    """
    # Non-attenuation-corrected PET: same grid and frame, lower and flatter values.
    nac, nac_slopes = _quantise(pet_values * (0.35 if not ge_nac else 120.0))
    if ge_nac:
        nac_style = {"SeriesDescription": "WB NAC", "Units": "PROPCNTS", "RescaleType": "PROPCNTS",
                     "CorrectedImage": ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"], "AttenuationCorrectionMethod": ""}
    else:
        nac_style = {"SeriesDescription": "PET WB NAC", "CorrectedImage": ["DECY", "RAN", "DTIM", "NORM"],
                     "AttenuationCorrectionMethod": "NONE"}  # fmt: skip
    nac_header = {**pet_header, "SeriesInstanceUID": dw.uid(*key, "nac"), "SeriesNumber": 4, **nac_style}
    dw.write_series(folder / "PT_4", nac, pet_aff, sop_class=dw.PET_IMAGE_STORAGE, header=nac_header,
                    slopes=nac_slopes, intercept=0.0, per_slice=pet_slice, uid_seed=(*key, "nac"), file_prefix="NAC",
                    jitter_mm=jitter_mm)  # fmt: skip
    # CT localizer: one coronal projection image (rows along -z, columns along +x).
    proj = (ct_stored.astype(np.float32).mean(axis=1))[:, ::-1]  # [x, z from top]
    loc_aff = np.eye(4)
    loc_aff[:3, 0] = [ct_aff[0, 0], 0.0, 0.0]
    loc_aff[:3, 1] = [0.0, 0.0, -ct_aff[2, 2]]
    loc_aff[:3, 2] = [0.0, 1.0, 0.0]
    loc_aff[:3, 3] = apply_affine(ct_aff, [0.0, (ct_stored.shape[1] - 1) / 2.0, ct_stored.shape[2] - 1])
    loc_header = {**ct_header, "SeriesInstanceUID": dw.uid(*key, "loc"), "SeriesNumber": 1,
                  "SeriesDescription": "Topogram 0.6 T20f", "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}  # fmt: skip
    dw.write_series(folder / "CT_1", np.round(proj)[:, :, None].astype(np.int16), loc_aff, sop_class=dw.CT_IMAGE_STORAGE,
                    header=loc_header, slopes=[1.0], intercept=-1024.0, uid_seed=(*key, "loc"), file_prefix="LOC")  # fmt: skip
    # PET MIP: a derived coronal image.
    mip, mip_slopes = _quantise(pet_values.max(axis=1)[:, ::-1, None])
    mip_aff = loc_aff.copy()
    mip_aff[:3, 0] = [pet_aff[0, 0], 0.0, 0.0]
    mip_aff[:3, 1] = [0.0, 0.0, -pet_aff[2, 2]]
    mip_aff[:3, 3] = apply_affine(pet_aff, [0.0, (pet_values.shape[1] - 1) / 2.0, pet_values.shape[2] - 1])
    mip_header = {**pet_header, "SeriesInstanceUID": dw.uid(*key, "mip"), "SeriesNumber": 5,
                  "SeriesDescription": "PET MIP", "ImageType": ["DERIVED", "SECONDARY", "MIP"]}  # fmt: skip
    dw.write_series(folder / "PT_5", mip, mip_aff, sop_class=dw.PET_IMAGE_STORAGE, header=mip_header,
                    slopes=mip_slopes, intercept=0.0, uid_seed=(*key, "mip"), file_prefix="MIP")  # fmt: skip
    return ["PET NAC (GE style: ATTN listed, Units PROPCNTS)" if ge_nac else "PET NAC", "CT localizer", "PET MIP"]


def _write_objects(folder, header, pet_stored, key):
    """Non-image objects of a scanner export: three SUV-factor maps (RWV), a segmentation
    of the hottest PET region (SEG) and a structured report (SR), as a GE export holds."""
    written = []
    for i, factor in enumerate(("SUVbw", "SUVlbm", "SUVbsa")):
        dw.write_object(folder / "RWV" / f"RWV{i}.dcm", "RWV", header, series_uid=dw.uid(*key, "rwv", i),
                        sop_uid=dw.uid(*key, "rwv-obj", i), number=100 + i, description=f"{factor} factor")  # fmt: skip
        written.append(f"RWV {factor}")
    hot = pet_stored >= np.percentile(pet_stored, 99.9)
    frames = np.moveaxis(hot[:, :, hot.any(axis=(0, 1))], 2, 0).transpose(0, 2, 1).astype(np.uint8)
    dw.write_object(folder / "SEG" / "SEG0.dcm", "SEG", header, series_uid=dw.uid(*key, "seg"), sop_uid=dw.uid(*key, "seg-obj"),
                    number=200, description="Lesion segmentation", frames=frames)  # fmt: skip
    dw.write_object(folder / "SR" / "SR0.dcm", "SR", header, series_uid=dw.uid(*key, "sr"), sop_uid=dw.uid(*key, "sr-obj"),
                    number=300, description="Dose report")  # fmt: skip
    return written + ["SEG", "SR"]


def _voxel_centres(affine, shape):
    idx = np.indices(shape).reshape(3, -1).T
    return idx, apply_affine(affine, idx)


def _background_truth(phantom, tracer, pose, clean, affine):
    """True background SUVs and what an ideal VOI measures in the noiseless image."""
    R, t = pose
    lm = phantom.landmarks
    idx, world = _voxel_centres(affine, clean.shape)
    a = (world - t) @ R
    ax, ay = lm["aorta_xy"]
    # reference regions keep 15 mm (> 2 PSF FWHM) away from every lesion, so that spill-in
    # from a hot lesion does not inflate the background truth
    far = np.ones(len(a), dtype=bool)
    for les in phantom.lesions:
        far &= np.linalg.norm(a - les.center, axis=1) > les.radius + 15.0
    core = (np.hypot(a[:, 0] - ax, a[:, 1] - ay) <= lm["aorta_radius"] - 5.0) & (a[:, 2] > -120) & (a[:, 2] < 100) & far
    aorta_vals = clean.ravel()[core]
    liv = (np.linalg.norm(a - lm["liver_center"], axis=1) <= 30.0) & far
    liv_ok = phantom.labels_at(a[liv], with_lesions=False) == LIVER
    liver_vals = clean.ravel()[np.flatnonzero(liv)[liv_ok]]
    return {
        "blood_pool_suv_true": phantom.uptake[tracer][BLOOD],
        "blood_pool_suvmean_noiseless": float(aorta_vals.mean()) if aorta_vals.size else None,
        "liver_suv_true": phantom.uptake[tracer][LIVER],
        "liver_suvmean_noiseless": float(liver_vals.mean()) if liver_vals.size else None,
    }


def _lesion_image_truth(phantom, tracer, pose, clean, suv_image, affine, background, out):
    R, t = pose
    inv = np.linalg.inv(affine)
    half_diag = 0.5 * np.linalg.norm(np.linalg.norm(affine[:3, :3], axis=0))
    centres = [les.center @ R.T + t for les in phantom.lesions]
    for les, c in zip(phantom.lesions, centres):
        reach = les.radius + 22.0
        v = apply_affine(inv, c)
        lo = np.maximum(np.floor(v - reach / np.linalg.norm(affine[:3, :3], axis=0)).astype(int), 0)
        hi = np.minimum(np.ceil(v + reach / np.linalg.norm(affine[:3, :3], axis=0)).astype(int) + 1, clean.shape)
        sub = tuple(slice(a, b) for a, b in zip(lo, hi))
        idx = np.indices([b - a for a, b in zip(lo, hi)]).reshape(3, -1).T + lo
        d = np.linalg.norm(apply_affine(affine, idx) - c, axis=1)
        inside = d <= max(les.radius, half_diag)
        others = np.zeros(len(d), bool)
        for o, oc in zip(phantom.lesions, centres):
            if o is not les:
                others |= np.linalg.norm(apply_affine(affine, idx) - oc, axis=1) <= o.radius + 10.0
        shell = (d >= les.radius + 10.0) & (d <= les.radius + 20.0) & ~others
        c_sub, s_sub = clean[sub].ravel(), suv_image[sub].ravel()
        local_bg = float(c_sub[shell].mean())
        peak = float(c_sub[inside].max())
        core = d <= les.radius
        out[les.id][tracer] = {
            "center_lps": c.tolist(),
            "image_suvmax": float(s_sub[inside].max()),
            "image_suvmean": float(s_sub[core].mean()) if core.any() else float(s_sub[inside].mean()),
            "noiseless_suvmax": peak,
            "local_background_suv": local_bg,
            "voxels_in_sphere": int(core.sum()),
            "detectable": bool(peak >= 1.5 * local_bg and peak >= 2.0 * background["blood_pool_suv_true"]),
        }
