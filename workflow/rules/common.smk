# Sheet loading and validation, wildcard constraints and the small input functions.
# Nothing else computes at parse time.
import json
import os
import shlex
import sys
from pathlib import Path

import pandas as pd
import yaml
from snakemake.utils import validate

# The package's source, for code_version (a stdlib-only module) at parse time.
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))
from dualpet.provenance import code_version  # noqa: E402
from dualpet.files import folder_fingerprint  # noqa: E402
from dualpet.steps import shell as step_shell  # noqa: E402
from dualpet.settings import schema as config_schema  # noqa: E402
from dualpet.sheets import (  # noqa: E402
    SheetError,
    check_columns,
    check_config,
    check_paths,
    lines,
    load_yaml_strict,
    read_tsv,
    safe_json,
    validate_rows,
)  # noqa: E402


def checked(load, *args, **kwargs):
    """Run a parse-time check; a sheet or config mistake prints its lines (each naming the
    file, line and fix) and ends the run with status 1, before any job and without a
    traceback."""
    try:
        return load(*args, **kwargs)
    except SheetError as exc:
        print(f"dualpet: {exc}".replace("\n", "\ndualpet: "), file=sys.stderr)
        sys.exit(1)


# a key given twice in a config file is refused (YAML would keep the last silently)
for _configfile in workflow.configfiles:
    checked(load_yaml_strict, _configfile)
checked(
    check_config,
    config,
    config_schema(),
    files=[Path(f).name for f in workflow.configfiles],
)
validate(config, "../schemas/config.schema.yaml")

REF = config["reference_tracer"]
IDX = config["index_tracer"]
TRACERS = [REF, IDX]


def check_tracers():
    if REF == IDX:
        raise SheetError(f"config: reference_tracer and index_tracer are both '{REF}'")


checked(check_tracers)
# Display names in figures, the summary and the review pages (config tracer_names).
NAMES = {t: config["tracer_names"].get(t, t) for t in TRACERS}

# Jobs run "$DUALPET_PYTHON" -m dualpet from this checkout: the interpreter this workflow
# was started with, so that `.venv/bin/snakemake` works without activating the venv; with
# a software deployment method (conda, apptainer, env modules), the `python` of the
# rule's environment. (An environment variable, not a parameter: moving the venv must not
# rerun the cohort.)
PYTHON = "python" if workflow.deployment_settings.deployment_method else sys.executable
shell.prefix(
    "set -euo pipefail; "  # Snakemake's own default, which a prefix replaces
    f"export DUALPET_PYTHON={shlex.quote(PYTHON)}"
    f" PYTHONPATH={shlex.quote(str(Path(workflow.basedir) / 'workflow'))}"
    "${{PYTHONPATH:+:$PYTHONPATH}}; "
)


STUDY_COLUMNS = ("pet_series", "ct_series", "exclusion_mask", "background_lps")
STUDY_COLUMNS += ("background_mask", "lesion_mask", "organ_mask")


def load_studies(path):
    """Read and validate the studies sheet (errors name the file and line); resolve
    dicom_dir and mask paths against the sheet's folder."""
    what = "studies sheet"
    sheet = read_tsv(path, what=what, required=("patient", "tracer", "dicom_dir"))
    schema = yaml.safe_load(
        (
            Path(workflow.basedir) / "workflow" / "schemas" / "studies.schema.yaml"
        ).read_text()
    )
    check_columns(sheet, list(schema["properties"]), what=what, path=path)
    for column in STUDY_COLUMNS:
        if column not in sheet.columns:
            sheet[column] = ""
    validate_rows(sheet, schema, what=what, path=path)
    bad = ~sheet["tracer"].isin(TRACERS)
    if bad.any():
        raise SheetError(
            f"{what} {path}, line(s) {lines(sheet, bad)}: tracer(s) {sorted(set(sheet.tracer[bad]))} "
            f"not configured (reference_tracer={REF}, index_tracer={IDX}): write one of {TRACERS}, "
            "or change the config's tracers"
        )
    dup = sheet.duplicated(["patient", "tracer"], keep=False)
    if dup.any():
        raise SheetError(
            f"{what} {path}, lines {lines(sheet, dup)}: several rows for one patient and tracer; "
            "keep one row per patient and tracer"
        )
    incomplete = {
        p: sorted(set(TRACERS) - set(g["tracer"]))
        for p, g in sheet.groupby("patient")
        if set(g["tracer"]) != set(TRACERS)
    }
    if incomplete:
        where = sheet["patient"].isin(list(incomplete))
        missing = "; ".join(
            f"{p} has no {', '.join(t)} row" for p, t in sorted(incomplete.items())
        )
        raise SheetError(
            f"{what} {path}, line(s) {lines(sheet, where)}: patient(s) lack a study of both tracers {TRACERS} "
            f"({missing}): add the missing row, or remove the patient"
        )
    base = Path(path).resolve().parent
    for column in (
        "dicom_dir",
        "exclusion_mask",
        "background_mask",
        "lesion_mask",
        "organ_mask",
    ):
        sheet[column] = [
            os.path.normpath(base / d) if d and not os.path.isabs(d) else d
            for d in sheet[column]
        ]
    # folders and files that are not there: refused now, one line per row and column
    check_paths(
        sheet,
        ("dicom_dir", "exclusion_mask", "background_mask", "lesion_mask", "organ_mask"),
        what=what,
        path=path,
    )
    return sheet.set_index(["patient", "tracer"], drop=False)


def load_seeds(path, studies):
    """Reader seeds per study: {(patient, tracer): 'x,y,z;x,y,z'} (LPS mm)."""
    if not path:
        return {}
    what = "seed sheet"
    seeds = read_tsv(path, what=what, required=("patient", "tracer", "x", "y", "z"))
    check_columns(
        seeds, ["patient", "tracer", "x", "y", "z", "note"], what=what, path=path
    )
    for col in ("x", "y", "z"):
        bad = pd.to_numeric(seeds[col], errors="coerce").isna()
        if bad.any():
            raise SheetError(
                f"{what} {path}, line(s) {lines(seeds, bad)}: column {col} is not a number"
            )
    known = pd.Series(
        [(p, t) in studies.index for p, t in zip(seeds.patient, seeds.tracer)]
    )
    if not known.all():
        raise SheetError(
            f"{what} {path}, line(s) {lines(seeds, ~known)}: seeds for studies not in the studies sheet"
        )
    return {
        key: ";".join(
            f"{float(r.x):g},{float(r.y):g},{float(r.z):g}" for r in g.itertuples()
        )
        for key, g in seeds.groupby(["patient", "tracer"])
    }


studies = checked(load_studies, config["studies"])
PATIENTS = sorted(studies["patient"].unique())
# (patient, tracer) -> that study's sheet row: the per-job lookups below are dict lookups
# (pandas .loc on the index cost 0.15 ms each, seconds for a 1000-patient dry run)
STUDY = studies.to_dict("index")


def check_methods():
    """Config methods that need sheet columns or files."""
    if config["detection"]["method"] == "seeds" and not config["detection"].get(
        "seeds"
    ):
        raise SheetError(
            "config: detection method 'seeds' needs detection.seeds (a TSV)"
        )
    if config["detection"]["method"] == "masks":
        unmasked = studies[studies["lesion_mask"] == ""]
        if len(unmasked):
            raise SheetError(
                "config: detection method 'masks' needs a lesion_mask for every study; missing for "
                f"{sorted(zip(unmasked.patient, unmasked.tracer))}"
            )


checked(check_methods)
SEEDS = checked(load_seeds, config["detection"].get("seeds", ""), studies)
if config["clinical"]:  # read by the cohort job; refused here with the file and line
    checked(read_tsv, config["clinical"], what="clinical sheet", required=("patient",))


# A patient ID as the sheet's schema allows it, never a results/ folder of the cohort (the
# schema refuses those IDs). Not the alternation of the sheet's IDs: with 1000 patients
# every file-to-rule match ran a 1000-way regex (most of a 30 s dry run).
wildcard_constraints:
    patient=r"(?!(?:cohort|logs|benchmarks|audit|report_check)(?![\w-]))[A-Za-z0-9][A-Za-z0-9_-]{0,63}",
    tracer="|".join(TRACERS),
    lesion=r"L\d+",


def study_value(column, tracer=None):
    """Input/params function: this study's value of a sheet column (per-study only); with
    ``tracer``, that tracer's study of the patient (for per-patient rules)."""

    def get(wildcards):
        return STUDY[(wildcards.patient, tracer or wildcards.tracer)][column]

    return get


def study_fingerprint(wildcards):
    """Params function: a hash of the study folder's files (paths, sizes, modification
    times), so that adding, removing or editing a DICOM file reruns the study's inspection
    and everything downstream of it ('missing' for a missing folder)."""
    return folder_fingerprint(STUDY[(wildcards.patient, wildcards.tracer)]["dicom_dir"])


def other_study_folder(wildcards):
    """Params function: the folder of the patient's other study (its PatientID and sex are
    compared), or '' when config inspection.check_patient_identity is false."""
    if not config["inspection"]["check_patient_identity"]:
        return ""
    other = IDX if wildcards.tracer == REF else REF
    return STUDY[(wildcards.patient, other)]["dicom_dir"]


def load_review(path, studies):
    """Reader decisions per study: {(patient, tracer): JSON list} (position in that
    study's LPS mm; only that study's rows, so a decision reruns its patient only)."""
    if not path:
        return {}
    what = "review sheet"
    sheet = read_tsv(path, what=what, required=("patient", "tracer", "decision"))
    check_columns(
        sheet,
        ["patient", "tracer", "x", "y", "z", "decision", "reader", "note", "lesion"],
        what=what,
        path=path,
    )
    for col in ("lesion", "x", "y", "z", "reader", "note"):
        if col not in sheet.columns:
            sheet[col] = ""
    validate_rows(
        sheet[
            [
                "patient",
                "tracer",
                "lesion",
                "x",
                "y",
                "z",
                "decision",
                "reader",
                "note",
                "_line",
            ]
        ],
        yaml.safe_load(
            (Path(workflow.basedir) / "workflow/schemas/review.schema.yaml").read_text()
        ),
        what=what,
        path=path,
    )
    unknown = pd.Series(
        [(p, t) not in studies.index for p, t in zip(sheet.patient, sheet.tracer)]
    )
    if unknown.any():
        raise SheetError(
            f"{what} {path}, line(s) {lines(sheet, unknown.to_numpy())}: patient and tracer not in the studies sheet"
        )
    unplaced = ((sheet.x == "") | (sheet.y == "") | (sheet.z == "")).to_numpy()
    if unplaced.any():
        raise SheetError(
            f"{what} {path}, line(s) {lines(sheet, unplaced)}: no position (x, y, z). Decisions are kept "
            "by position, which survives renumbering; for rows that name a lesion ID, run "
            f"`dualpet review-pin {path} --reference {REF}` to add that lesion's position"
        )
    return {
        key: safe_json(
            [
                {
                    "decision": r.decision,
                    "x": float(r.x),
                    "y": float(r.y),
                    "z": float(r.z),
                    "reader": r.reader,
                    "note": r.note,
                    "lesion": r.lesion,
                }
                for r in g.itertuples()
            ]
        )
        for key, g in sheet.groupby(["patient", "tracer"])
    }


REVIEW = checked(load_review, config["review"], studies)


def study_review(wildcards):
    """Params function: this study's reader decisions (JSON; '' for none)."""
    return REVIEW.get((wildcards.patient, wildcards.tracer), "")


def study_seeds(wildcards):
    """Params function: this study's reader seeds (only its own, so other rows never rerun it)."""
    return SEEDS.get((wildcards.patient, wildcards.tracer), "")


def with_lesion_mask(column):
    """Params function: this study's value in ``column`` when it has a lesion_mask (its PET's
    headers check a DICOM mask), else '' (other studies' jobs do not depend on it)."""

    def get(wildcards):
        row = STUDY[(wildcards.patient, wildcards.tracer)]
        return row[column] if row["lesion_mask"] else ""

    return get


def optional_study_file(column):
    """Input function: this study's file in an optional sheet column, or none."""

    def get(wildcards):
        value = STUDY[(wildcards.patient, wildcards.tracer)][column]
        return [value] if value else []

    return get


def lesion_metrics_of(wildcards):
    """The per-lesion metric files of one patient, known once its checkpoint ran."""
    crops = checkpoints.match.get(patient=wildcards.patient).output.crops
    lesions = glob_wildcards(os.path.join(crops, "{lesion}.npz")).lesion
    return expand(
        "results/{patient}/lesions/metrics/{lesion}.json",
        patient=wildcards.patient,
        lesion=sorted(lesions),
    )


def figure_captions():
    """The cohort figures' report captions, for the config's primary metric and lesion set."""
    from dualpet.figures import FIGURES, caption

    primary = config["statistics"]["primary"]
    return {
        name: caption(
            name, NAMES[REF], NAMES[IDX], primary["metric"], primary["lesion_set"]
        )
        for name in FIGURES
    }


def final_outputs():
    # Every patient's outputs feed the cohort tables; a patient whose step failed has
    # placeholders naming the reason and is listed as excluded (dualpet.failures). The
    # last job fails, naming them, while any patient is excluded.
    return [
        *expand("results/{patient}/registration/qc.png", patient=PATIENTS),
        *expand("results/{patient}/review.html", patient=PATIENTS),
        *expand("results/{patient}/mip.png", patient=PATIENTS),
        *expand(
            "results/{patient}/{tracer}/lesions_seg.dcm",
            patient=PATIENTS,
            tracer=TRACERS,
        ),
        "results/cohort/lesions.tsv",
        "results/cohort/patients.tsv",
        "results/cohort/summary.json",
        "results/cohort/summary.md",
        "results/cohort/summary.html",
        "results/cohort/tables.html",
        "results/cohort/figures/paired.png",
        "results/cohort/figures/patient_ratios.png",
        "results/cohort/figures/bland_altman.png",
        "results/cohort/figures/detection_by_region.png",
        "results/cohort/complete.json",
    ]
