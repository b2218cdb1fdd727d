"""Command-line interface: ``dualpet COMMAND ...`` (also ``python -m dualpet``).

User commands: ``synth`` (reference cohort) and ``suv`` (one PET series -> SUVbw).
The other commands are the workflow's steps, one per Snakemake rule, so that the same
code runs from the shell, the tests and the workflow.

Bad input (a :class:`~dualpet.errors.DualpetInputError`) ends with exit status 2 and
one line on stderr naming the patient/folder, the series and the DICOM attribute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from dualpet.steps import STEPS


def _cmd_synth(a):
    from dualpet.synth import generate_cohort

    generate_cohort(
        a.outdir,
        a.patients,
        a.seed,
        a.size,
        quirks=a.quirks,
        contrast=a.contrast,
        fov=a.fov,
        max_rotation_deg=a.max_rotation_deg,
        max_translation_mm=a.max_translation_mm,
        log=lambda m: print(m, file=sys.stderr),
        preset=a.preset,
    )


def _cmd_suv(a):
    from dualpet.convert import convert_pet
    from dualpet.dicom import choose_pet, scan_folder

    pet, why = choose_pet(scan_folder(a.dicom_dir), a.series, option="--series")
    side = convert_pet(
        pet,
        a.output,
        a.json,
        where="PET",
        extra={"series_choice": {"pet": {"series": pet.label, "chosen_because": why}}},
    )
    print(
        f"SUVbw factor {side['factor']:.6g} ({side['factor_source']}; decay correction "
        f"{side['decay_correction']}; reference time: {side['reference_time_source']})",
        file=sys.stderr,
    )


def _cmd_convert(a):
    from dualpet.convert import convert_study, inspect_study
    from dualpet.failures import UpstreamFailure, record

    # the header check first, its verdict written whatever it is; the conversion then uses
    # the headers it read (the folder is scanned once)
    verdict, choice = inspect_study(
        a.dicom_dir,
        patient=a.patient,
        tracer=a.tracer,
        out_json=a.inspect,
        pet_series=a.pet_series,
        ct_series=a.ct_series,
        fingerprint=a.fingerprint,
        other_study=(a.other_dicom, a.other_tracer) if a.other_dicom else None,
        max_uncovered_fraction=a.max_uncovered_fraction,
        keep_choice=True,
    )
    if not verdict["ok"]:  # refused from its headers: nothing to convert, the patient is excluded
        raise UpstreamFailure([record("inspect", a.patient, a.tracer, verdict["error"])])
    side = convert_study(
        a.dicom_dir,
        patient=a.patient,
        tracer=a.tracer,
        ct_out=a.ct,
        pet_out=a.pet,
        json_out=a.json,
        choice=choice,
    )
    print(
        f"{a.patient} {a.tracer}: header check ok; PET {side['pet_series']['shape']}, "
        f"SUV factor {side['factor']:.6g} g/Bq",
        file=sys.stderr,
    )


def _cmd_register(a):
    from dualpet.registration import read_ct, register_ct, write_views

    # each CT is read once, for the registration and the views
    images = [read_ct(a.fixed), read_ct(a.moving)]
    qc = register_ct(
        a.fixed, a.moving, a.tfm, a.qc, threads=a.threads, grid_mm=a.grid_mm, affine=a.affine, images=images
    )
    print(f"registration: ok={qc.get('ok')} dice_after={qc.get('dice_after')}", file=sys.stderr)
    write_views(
        a.fixed, a.moving, a.tfm, a.reference_pet, a.index_pet, a.ct_out, a.pet_out, a.png, title=a.title, images=images
    )


def _cmd_anatomy(a):
    from dualpet.anatomy import anatomy_study

    _, report = anatomy_study(
        a.ct,
        a.labels,
        a.json,
        method=a.method,
        organ_mask=a.organ_mask or None,
        png=a.png or None,
        patient=a.patient,
        tracer=a.tracer,
        offset_mm=json.loads(a.offset_mm),
        totalsegmentator_args=json.loads(a.totalsegmentator_args),
        where=f"patient {a.patient}, {a.tracer}",
    )
    found = sorted(n for n, r in report.items() if r["found"] and n != "body")
    print(f"{a.patient} {a.tracer}: organs found: {', '.join(found) or 'none'}", file=sys.stderr)


def _detection_rule(info):
    """How the study's lesions were told from background, for the step's log line."""
    if info["threshold_suv"] is not None:
        return f"threshold {info['threshold_suv']:.3f}"
    if info["method"] == "local":
        return f"local contrast >= {info['contrast']:g} x surroundings, CNR >= {info['cnr']:g}"
    return f"reader-defined ({info['method']})"


def _cmd_segment(a):
    from dualpet.detection.study import segment_study

    bg, info = segment_study(
        a.ct,
        a.pet,
        a.labels,
        a.json,
        detection=json.loads(a.detection),
        background=json.loads(a.background),
        patient=a.patient,
        tracer=a.tracer,
        exclusion_mask=a.exclusion or None,
        background_at=[float(v) for v in a.background_at.split(",")] if a.background_at.strip() else None,
        background_mask=a.background_mask or None,
        background_png=a.background_png or None,
        lesion_mask=a.lesion_mask or None,
        seeds=_parse_seeds(a.seeds),
        anatomy=a.anatomy,
        review=json.loads(a.review) if a.review.strip() else None,
        pet_dicom=(a.dicom_dir, a.pet_series or None) if a.dicom_dir else None,
    )
    background = "none" if bg["suvmean"] is None else f"{bg['suvmean']:.3f}"
    print(
        f"{a.patient} {a.tracer}: background {background}, {_detection_rule(info)}, {len(info['lesions'])} lesion(s)",
        file=sys.stderr,
    )


def _cmd_review_page(a):
    from dualpet.reviewpage import write_review_page

    paths = {
        t: {
            "pet": getattr(a, f"{side}_pet"),
            "ct": getattr(a, f"{side}_ct"),
            "voi": getattr(a, f"{side}_voi"),
            "segmentation": getattr(a, f"{side}_detection"),
        }
        for t, side in ((a.reference, "ref"), (a.index, "idx"))
    }
    write_review_page(
        a.output,
        a.patient,
        (a.reference, a.index),
        a.lesions,
        paths,
        mip_png=a.mip,
        transform=a.transform,
        names=_names(a),
    )


def _studies_sheet(a):
    """The studies sheet of ``status`` and ``progress``: ``--studies``, else the config's."""
    from dualpet.sheets import read_tsv

    config = {}
    if Path(a.config).is_file():
        import yaml

        config = yaml.safe_load(Path(a.config).read_text()) or {}
    return read_tsv(
        a.studies or config.get("studies") or "config/studies.tsv", what="studies sheet", required=("patient", "tracer")
    )


def _cmd_status(a):
    from dualpet.status import cohort_status, format_table

    print(format_table(cohort_status(_studies_sheet(a), a.results, a.workdir)))


def _cmd_progress(a):
    from dualpet.status import follow

    follow(sys.stdin, a.log, _studies_sheet(a), results=a.results, workdir=a.workdir)


def _cmd_config_doc(a):
    from dualpet.configdoc import render
    from dualpet.io import write_text

    write_text(a.output, render())


def _cmd_review_pin(a):
    from dualpet.review import pin

    n = pin(a.review_tsv, a.results, a.reference, a.output)
    print(f"{n} row(s) pinned to their lesion's position", file=sys.stderr)


def _parse_seeds(text):
    """'x,y,z;x,y,z' (LPS mm) -> list of (x, y, z)."""
    from dualpet.errors import DualpetInputError

    seeds = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        try:
            x, y, z = (float(v) for v in part.split(","))
        except ValueError:
            raise DualpetInputError(f"seed {part!r}: expected 'x,y,z' in LPS mm") from None
        seeds.append((x, y, z))
    return seeds


def _load_study(pet, labels, seg):
    import numpy as np

    from dualpet.geometry import lps_affine
    from dualpet.interchange import read_segmentation
    from dualpet.nifti import load_nifti

    img = load_nifti(pet)
    record = read_segmentation(seg)
    return {
        "suv": np.asarray(img.dataobj, dtype=np.float32),
        "affine": lps_affine(img.affine),
        "labels": np.asarray(load_nifti(labels).dataobj).astype(np.int32),
        "background": record["background_suvmean"],
        "reader_masks": record["method"] == "masks",  # its lesions are the reader's contours
    }


def _cmd_match(a):
    import numpy as np

    from dualpet.geometry import lps_affine
    from dualpet.matching import build_lesions
    from dualpet.registration import load_transform

    studies = {
        a.reference: _load_study(a.ref_pet, a.ref_labels, a.ref_detection),
        a.index: _load_study(a.idx_pet, a.idx_labels, a.idx_detection),
    }
    from dualpet.nifti import as_stored, load_nifti, read_label_image

    ct = load_nifti(a.ref_ct)
    index = build_lesions(
        a.patient,
        (a.reference, a.index),
        studies,
        load_transform(a.transform),
        a.index_out,
        a.crops_out,
        tolerance_mm=a.tolerance_mm,
        fraction=a.fraction,
        neighbourhood_mm=a.neighbourhood_mm,
        reader_masks=a.reader_masks,
        ref_ct=(as_stored(ct), lps_affine(ct.affine)),
        ref_anatomy=read_label_image(a.ref_anatomy, "organ map", dtype=np.uint8),
        out_vois={t: path for t, path in ((a.reference, a.ref_voi_out), (a.index, a.idx_voi_out)) if path},
    )
    print(f"{a.patient}: {len(index)} union lesion(s)", file=sys.stderr)


def _cmd_export_seg(a):
    from dualpet import __version__
    from dualpet.dicomseg import export_seg

    out = export_seg(
        a.voi,
        a.dicom_dir,
        a.output,
        patient=a.patient,
        tracer=a.tracer,
        pet_series=a.pet_series or None,
        software_version=__version__,
    )
    print(
        f"{a.patient}, {a.tracer}: DICOM-SEG with {len(out['segments'])} lesion segment(s) over {out['frames']} PET images",
        file=sys.stderr,
    )


def _cmd_lesion_metrics(a):
    from dualpet.io import write_json
    from dualpet.metrics import lesion_crop_metrics

    write_json(a.output, lesion_crop_metrics(a.crop, (a.reference, a.index)))


def _cmd_patient_table(a):
    from dualpet.cohort import patient_tables

    patient_tables(
        a.patient,
        (a.reference, a.index),
        a.index_tsv,
        a.metrics,
        {a.reference: a.ref_detection, a.index: a.idx_detection},
        a.registration_qc,
        a.lesions_out,
        a.patient_out,
        pet_sidecars={a.reference: a.ref_pet_json, a.index: a.idx_pet_json},
        anatomy={a.reference: a.ref_anatomy, a.index: a.idx_anatomy},
    )


def _cmd_cohort(a):
    from dualpet.cohort import merge_cohort

    merge_cohort(
        a.lesions,
        a.patients,
        (a.reference, a.index),
        a.lesions_out,
        a.patients_out,
        a.clinical or None,
        other_outputs=a.outputs,
        tables_html=a.tables_out,
    )


def _cmd_check_cohort(a):
    from dualpet.cohort import check_cohort

    return check_cohort(a.patients, a.output)


def _cmd_stats(a):
    from dualpet.stats import run

    primary = {"metric": a.primary_metric, "lesion_set": a.primary_set, "analysis": a.primary_analysis}
    run(
        a.lesions,
        a.patients,
        a.reference,
        a.index,
        a.json,
        a.md,
        primary=primary,
        adjust=a.adjust,
        out_html=a.html,
        names=_names(a),
    )


def _cmd_figures(a):
    from dualpet.figures import FIGURES, write_figures
    from dualpet.interchange import read_table

    written = write_figures(
        read_table(a.lesions),
        read_table(a.patients),
        a.reference,
        a.index,
        a.outdir,
        metric=a.metric,
        lesion_set=a.lesion_set,
        names=_names(a),
    )
    for entry in written:
        left = "; ".join(f"{x['lesions']} {x['reason']}" for x in entry["left_out"])
        print(f"{entry['name']}: {entry['n_lesions']} lesion(s) drawn" + (f" (left out: {left})" if left else ""))
    assert [e["name"] for e in written] == list(FIGURES)


def _names(a):
    """Tracer -> display name from ``--reference-name``/``--index-name`` (empty: the tracer's name)."""
    return {a.reference: a.reference_name or a.reference, a.index: a.index_name or a.index}


class _Setting(argparse.Action):
    """An option standing for a config setting (``setting``: its dotted name): its default,
    allowed values and help come from the config schema (:mod:`dualpet.settings`), read only when this
    subcommand runs or prints its help. ``encode`` turns the default into the option's text
    (JSON for a list)."""

    def __init__(self, option_strings, dest, setting, encode=None, help=None, **kwargs):
        self.setting, self.encode, self.extra = setting, encode, help
        super().__init__(option_strings, dest, **kwargs)

    @property
    def default(self):
        from dualpet.settings import default

        value = default(self.setting)
        return self.encode(value) if self.encode else value

    @default.setter
    def default(self, value):  # argparse assigns it; the schema's stands
        pass

    @property
    def help(self):
        from dualpet.settings import describe, spec

        allowed = spec(self.setting).get("enum")
        one_of = f"one of {', '.join(map(str, allowed))}; " if allowed else ""
        text = f"{self.extra or describe(self.setting)} ({one_of}config {self.setting}; default {self.default})"
        return text.replace("%", "%%")  # argparse formats help with %

    @help.setter
    def help(self, value):
        pass

    def __call__(self, parser, namespace, values, option_string=None):
        from dualpet.settings import spec

        allowed = spec(self.setting).get("enum")
        if allowed and values not in allowed:
            parser.error(f"argument {option_string}: {values!r} is not one of {', '.join(map(str, allowed))}")
        setattr(namespace, self.dest, values)


class _SettingSwitch(argparse.BooleanOptionalAction):
    """A yes/no config setting (``--affine`` / ``--no-affine``); default from the schema."""

    def __init__(self, option_strings, dest, setting, help=None, **kwargs):
        self.setting, self.encode, self.extra = setting, None, help
        super().__init__(option_strings, dest, **kwargs)

    default = _Setting.default
    help = _Setting.help


def _add_step(sub, command):
    """The subcommand of a workflow step, its options from :data:`dualpet.steps.STEPS`."""
    step = STEPS[command]
    s = sub.add_parser(command, help=step.help)
    for opt in step.options:
        if not opt.flags:
            s.add_argument(opt.dest, help=opt.help)
            continue
        kwargs = {"dest": opt.name, "help": opt.help}
        if opt.setting:
            kwargs.update(action=_SettingSwitch if opt.switch else _Setting, setting=opt.setting)
            if opt.encode == "json":
                kwargs["encode"] = json.dumps
        elif opt.many:
            kwargs.update(nargs="*", default=[])
        elif opt.required:
            kwargs["required"] = True
        else:
            kwargs["default"] = opt.default
        if opt.type is not None:
            kwargs["type"] = opt.type
        s.add_argument(*opt.flags, **kwargs)
    s.set_defaults(func=globals()[f"_cmd_{command.replace('-', '_')}"])
    if step.isolate:
        isolation(s, **step.io())


def _run_folder_arguments(s):
    """Where a run's sheet and outputs are (``status``, ``progress``)."""
    s.add_argument("--config", default="config/config.yaml", help="the workflow's config (its studies sheet is read)")
    s.add_argument("--studies", default="", help="the studies sheet (default: the config's)")
    s.add_argument("--results", default="results", help="the results folder")
    s.add_argument(
        "--workdir", default=".", help="the working directory Snakemake runs in (its .snakemake/ tells what runs)"
    )


def isolation(s, *, inputs=(), outputs=(), dirs=(), kept=()):
    """Make a workflow step runnable with ``--isolate-failures`` (see :mod:`dualpet.failures`):
    ``inputs`` are the argument names whose files may be placeholders of a failed earlier
    step, ``outputs``/``dirs`` those the step writes, ``kept`` the outputs it writes even
    when it refuses the data (kept when written)."""
    s.add_argument(
        "--isolate-failures",
        action="store_true",
        help="on failure, write placeholders carrying the reason (the patient is excluded) and exit 0",
    )
    for name in ("--patient", "--tracer"):
        with contextlib.suppress(argparse.ArgumentError):  # most steps have them already
            s.add_argument(name, default="")
    s.set_defaults(_io={"inputs": list(inputs), "outputs": list(outputs), "dirs": list(dirs), "kept": list(kept)})


#: Help of the options shared by several subcommands, by option (one name, one meaning
#: everywhere); ``(command, option)`` where a subcommand's option means something of its own.
OPTION_HELP = {
    "--patient": "the patient's ID from the studies sheet (pseudonymous; named in messages)",
    "--tracer": "the study's tracer as in the studies sheet",
    "--reference": "the reference tracer (config reference_tracer)",
    "--index": "the index tracer (config index_tracer)",
    "--pet-series": "SeriesInstanceUID or SeriesNumber of the PET series, when the folder holds several",
    "--ct-series": "SeriesInstanceUID or SeriesNumber of the CT series, when the folder holds several",
    "--output": "the file to write (written atomically)",
    "--json": "the JSON record to write",
    "--ct": "the study's CT (NIfTI, HU)",
    "--pet": "the study's PET (NIfTI, SUVbw)",
    "--labels": "the lesion label image to write (NIfTI, label k = lesion k)",
    "--tfm": "the registration transform (ITK .tfm; reference -> index)",
    "--transform": "the registration transform (ITK .tfm; reference -> index)",
    "--qc": "the registration's quality record to write (JSON)",
    "--threads": "threads for the registration (1 keeps it deterministic)",
    "--lesions": "the cohort's (or patient's) lesions.tsv",
    "--patients": "the cohort's patients.tsv",
    "--clinical": "the clinical sheet (TSV; '' for none)",
    "--outdir": "the folder to write into",
    "--md": "the Markdown report to write",
    "--title": "the picture's title",
    "--png": "the QC picture to write (PNG)",
    "--index-tsv": "the patient's lesions/index.tsv (matching)",
    "--metrics": "the patient's per-lesion metric files (JSON)",
    "--registration-qc": "the patient's registration/qc.json",
    "--lesions-out": "the lesions table to write (TSV)",
    "--patients-out": "the patients table to write (TSV)",
    "--patient-out": "the patient's summary to write (JSON)",
    "--index-out": "the patient's lesions/index.tsv to write",
    "--crops-out": "the folder of per-lesion crops to write",
    "--reference-ct": "the reference study's CT (NIfTI)",
    "--index-ct": "the index study's CT (NIfTI)",
    "--index-pet": "the index study's PET (NIfTI, SUVbw)",
    "--ct-out": "the index CT resampled onto the reference CT (NIfTI) to write",
    "--pet-out": "the index PET resampled onto the reference CT (NIfTI) to write",
    "--other-tracer": "the tracer of the patient's other study",
    **{
        f"--{side}-{what}": f"the {name} study's {text}"
        for side, name in (("ref", "reference"), ("idx", "index"))
        for what, text in (
            ("pet", "PET (NIfTI, SUVbw)"),
            ("ct", "CT (NIfTI, HU)"),
            ("voi", "VOI labels (voi.nii.gz)"),
            ("detection", "detection record (segmentation.json: background, lesions, rejected candidates)"),
            ("labels", "lesion labels (lesions.nii.gz)"),
            ("pet-json", "pet.json sidecar"),
            ("anatomy", "organ map"),
        )
    },
    ("convert", "--ct"): "the CT to write (NIfTI, HU)",
    ("convert", "--pet"): "the PET to write (NIfTI, SUVbw)",
    ("convert", "--json"): "the PET's sidecar to write (JSON: SUV factors, series, geometry)",
    ("anatomy", "--json"): "the organ map's record to write (JSON: organs found, volumes, checks)",
    ("segment", "--json"): "the study's segmentation record to write (JSON: background, lesions, rejected candidates)",
    ("stats", "--json"): "the statistics to write (summary.json)",
}


def _fill_help(parser):
    """Every option of every subcommand gets a help text (OPTION_HELP where it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sub in action.choices.items():
                for opt in sub._actions:
                    if isinstance(opt, (_Setting, _SettingSwitch)):  # from the schema, when used
                        continue
                    if opt.help is None and opt.option_strings:
                        key = opt.option_strings[-1]
                        opt.help = OPTION_HELP.get((command, key)) or OPTION_HELP.get(key)


def build_parser():
    """The ``dualpet`` command line: the user's commands and one subcommand per workflow step."""
    p = argparse.ArgumentParser(prog="dualpet", description="Dual-tracer PET/CT cohort analysis.")
    from dualpet import __version__

    p.add_argument("--version", action="version", version=f"dualpet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_synth(sub)
    _add_suv(sub)
    _add_run_tools(sub)
    for command in STEPS:
        _add_step(sub, command)
    _fill_help(p)
    return p


def _add_synth(sub):
    """``dualpet synth``: the generator of synthetic cohorts with ground truth."""
    s = sub.add_parser("synth", help="generate a synthetic dual-tracer cohort with ground truth")
    s.add_argument("outdir")
    s.add_argument("--patients", type=int, default=None, help="number of patients (default 4, or the preset's)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--size", choices=["demo", "clinical"], default="demo", help="image grids (default demo)")
    s.add_argument(
        "--quirks",
        action="store_true",
        help="vendor header variants (Philips CNTS, MBq dose, midnight injection, post-processed SeriesTime, "
        "GE private datetime, feet-first), one per study, plus NAC, localizer and MIP series in each folder",
    )
    s.add_argument(
        "--contrast",
        choices=["none", "mixed", "all"],
        default="mixed",
        help="contrast-enhanced CTs: none, each study with probability 1/2 (mixed, default), all",
    )
    s.add_argument(
        "--fov",
        choices=["torso", "thorax", "abdomen", "wholebody"],
        default="torso",
        help="axial field of view: torso (default), thorax (neck to upper abdomen), abdomen (diaphragm to "
        "pelvis), wholebody (head to thighs)",
    )
    s.add_argument(
        "--max-rotation-deg",
        type=float,
        default=5.0,
        help="largest rotation between a patient's two studies (degrees, default 5)",
    )
    s.add_argument(
        "--max-translation-mm",
        type=float,
        default=30.0,
        help="largest translation between a patient's two studies (mm, default 30)",
    )
    # the names of dualpet.synth.phantom.PRESETS (not imported here: the synth package takes ~1 s
    # to import, and this parser is built for every workflow step; a test keeps them equal)
    s.add_argument(
        "--preset",
        choices=["weich2021"],
        default=None,
        help="lesion population of a published cohort instead of the default mix, e.g. weich2021 (11 "
        "patients unless --patients: 102 FDG- and 42 Pentixafor-positive lesions, 37 on both; SUVmax "
        "FDG 12.8 +- 9.8, Pentixafor 5.2 +- 3.7)",
    )
    s.set_defaults(func=_cmd_synth)


def _add_suv(sub):
    """``dualpet suv``: one PET series to an SUV NIfTI."""
    s = sub.add_parser("suv", help="convert one PET series to an SUVbw NIfTI with a JSON sidecar")
    s.add_argument("dicom_dir", metavar="PET_DICOM_DIR")
    s.add_argument("-o", "--output", required=True, metavar="OUT.nii.gz")
    s.add_argument("--json", metavar="SIDE.json", help="write the SUV sidecar here")
    s.add_argument(
        "--series",
        metavar="UID|NUMBER",
        help="SeriesInstanceUID or SeriesNumber of the PET series, when the folder holds several candidates",
    )
    s.set_defaults(func=_cmd_suv)


def _add_run_tools(sub):
    """The commands that follow, document and annotate a run: status, progress, config-doc, review-pin."""
    s = sub.add_parser(
        "status", help="where every patient of the studies sheet stands (stage, state, reason, file to open)"
    )
    _run_folder_arguments(s)
    s.set_defaults(func=_cmd_status)

    s = sub.add_parser(
        "progress", help="follow a run: Snakemake's output (stdin) to a log, one console line per patient"
    )
    _run_folder_arguments(s)
    s.add_argument(
        "--log",
        default=".snakemake/run.log",
        help="where Snakemake's full output goes (appended; beside its own logs, not in results/: it shows "
        "job commands with folder paths)",
    )
    s.set_defaults(func=_cmd_progress)

    s = sub.add_parser("config-doc", help="write the configuration reference (docs/config.md) from the config schema")
    s.add_argument(
        "-o", "--output", default="docs/config.md", help="the Markdown file to write (default docs/config.md)"
    )
    s.set_defaults(func=_cmd_config_doc)

    s = sub.add_parser("review-pin", help="give review-sheet rows written with a lesion ID that lesion's position")
    s.add_argument("review_tsv", help="the review sheet (rewritten in place unless -o)")
    s.add_argument("--results", default="results", help="the results folder whose lesions.tsv the IDs refer to")
    s.add_argument("--reference", required=True, help="the config's reference_tracer")
    s.add_argument("-o", "--output", default=None)
    s.set_defaults(func=_cmd_review_pin)


def _record_rusage(path, args):
    """At exit, append this command's wall and CPU seconds and peak resident memory (the
    kernel's counts, not a sampler's) to ``path``, one JSON line: for
    tests/benchmarks/bench_patient.py (environment DUALPET_RUSAGE)."""
    import atexit
    import resource
    import time

    start = time.perf_counter()

    def record():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        line = {
            "command": args.command,
            "patient": getattr(args, "patient", None),
            "tracer": getattr(args, "tracer", None),
            "wall_s": round(time.perf_counter() - start, 3),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "max_rss_mb": round(usage.ru_maxrss / 1024.0, 1),
        }
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    atexit.register(record)


def main(argv=None):
    """The command line (``argv``: its arguments; None: this process's, when dualpet runs
    as a program, the console script or ``python -m dualpet``, whose freed memory is then
    kept for reuse: :mod:`dualpet.allocator`)."""
    import os

    from dualpet.errors import DualpetInputError, redact_paths

    if argv is None:  # a program of its own, not a caller's function (a test, a notebook)
        from dualpet.allocator import keep_freed_memory

        keep_freed_memory()
    args = build_parser().parse_args(argv)
    if os.environ.get("DUALPET_RUSAGE"):
        _record_rusage(os.environ["DUALPET_RUSAGE"], args)
    from dualpet import privacy

    privacy.install()  # third-party warnings and log records lose the header values read
    if getattr(args, "isolate_failures", False):
        from dualpet.failures import run_isolated

        return run_isolated(args)
    try:
        status = args.func(args)
    except DualpetInputError as exc:
        print(f"dualpet {args.command}: error: {redact_paths(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # last resort: one line, the traceback only on request
        if os.environ.get("DUALPET_DEBUG"):
            raise
        print(
            f"dualpet {args.command}: unexpected error ({type(exc).__name__}): {redact_paths(exc)} "
            "[set DUALPET_DEBUG=1 for the traceback]",
            file=sys.stderr,
        )
        return 1
    return status or 0
