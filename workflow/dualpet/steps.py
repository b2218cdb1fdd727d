"""The workflow's steps, each step's command line written once.

Every workflow step is a ``dualpet`` subcommand that one Snakemake rule runs. Its options
are listed here once (:data:`STEPS`), each with where the rule takes its value from
(``input.ct``, ``params.tolerance``, ``wildcards.patient``, ...) and how the subcommand
parses it. From that one list come:

- the rule's shell command (:func:`shell`), every value quoted with ``:q``;
- the subcommand's options (:func:`add_arguments`, used by :mod:`dualpet.cli`), a config
  setting's default and help read from the config schema;
- what ``--isolate-failures`` needs to know (:meth:`Step.io`): the files a failed earlier
  step may have left as placeholders, and the files and folders the step writes.

This module is read when Snakemake parses the workflow: standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Opt:
    """One option of a step.

    ``flags``: the option's names (the last one is the rule's); none for the positional
    argument (``dest`` names it). ``source``: the rule's value (``input.ct``,
    ``output.json``, ``params.title``, ``wildcards.patient``, ``threads``; ``input`` or
    ``output`` alone for a rule's only file). ``setting``: the config setting the option
    stands for (default and help from the schema; ``encode``: ``"json"`` for a list).
    ``many``: a list of files (``--metrics a b c``). ``switch``: a yes/no setting the rule
    passes as ``--flag`` or ``--no-flag``. ``folder``: an output that is a folder.
    ``kept``: an output the step writes whatever its data (a verdict): when the step fails
    after writing it, it is kept, not replaced by a placeholder.
    """

    flags: tuple = ()
    source: str = ""
    dest: str = ""
    required: bool = False
    default: object = ""
    help: str | None = None
    type: object = None
    setting: str | None = None
    encode: str | None = None
    many: bool = False
    switch: bool = False
    folder: bool = False
    kept: bool = False

    @property
    def name(self):
        """The parsed argument's attribute name."""
        return self.dest or self.flags[-1].lstrip("-").replace("-", "_")

    def shell(self):
        """The option in the rule's shell command, its value quoted."""
        value = "{" + self.source + ":q}"
        if not self.flags or self.switch:
            return value
        return f"{self.flags[-1]} {value}" if self.many else f"{self.flags[-1]}={value}"


def inp(flag, name=None, **kw):
    """An input file of the rule (``input.<name>``), required unless a default is given."""
    name = name or flag.lstrip("-").replace("-", "_")
    return Opt((flag,), f"input.{name}", required="default" not in kw, **kw)


def out(flag, name=None, **kw):
    """An output file of the rule (``output.<name>``), required unless a default is given."""
    name = name or flag.lstrip("-").replace("-", "_")
    return Opt((flag,), f"output.{name}", required="default" not in kw, **kw)


def par(flag, name=None, **kw):
    """A value of the rule's ``params`` (``params.<name>``)."""
    name = name or flag.lstrip("-").replace("-", "_")
    return Opt((flag,), f"params.{name}", **kw)


PATIENT = Opt(("--patient",), "wildcards.patient", required=True)
TRACER = Opt(("--tracer",), "wildcards.tracer", required=True)
REFERENCE = par("--reference", required=True)
INDEX = par("--index", required=True)
NAMES = (
    par("--reference-name", "ref_name", help="the reference tracer's display name (config tracer_names)"),
    par("--index-name", "idx_name", help="the index tracer's display name (config tracer_names)"),
)


@dataclass(frozen=True)
class Step:
    """A workflow step: its subcommand's help, its options, and whether it runs with
    ``--isolate-failures`` (a failure excludes the patient instead of stopping the run)."""

    help: str
    options: tuple
    isolate: bool = True
    log: str = " > {log:q} 2>&1"

    def io(self):
        """``inputs``, ``outputs``, ``dirs`` and ``kept`` (argument names) for
        ``--isolate-failures``; ``kept`` outputs are among ``outputs``."""
        kind = {o.name: o.source.split(".")[0] for o in self.options}
        folders = [o.name for o in self.options if o.folder]
        return {
            "inputs": [n for n, k in kind.items() if k == "input"],
            "outputs": [n for n, k in kind.items() if k == "output" and n not in folders],
            "dirs": folders,
            "kept": [o.name for o in self.options if o.kept],
        }


def _study(dicom="params.dicom"):
    """A study folder (the positional argument) and its sheet row's series."""
    return (
        Opt((), dicom, dest="dicom_dir"),
        par(
            "--pet-series",
            default="",
            help="SeriesInstanceUID or SeriesNumber of the PET series, when the folder holds several",
        ),
        par(
            "--ct-series",
            default="",
            help="SeriesInstanceUID or SeriesNumber of the CT series, when the folder holds several",
        ),
    )


#: Options renamed, by their new name: the old name, still accepted (the last flag is the rule's).
RENAMED = {"detection": "seg"}


def _sides(*whats, source="input", **help_by_what):
    """``--ref-<what>`` and ``--idx-<what>`` options (the rule's ``<source>.ref_<what>`` ...)."""
    out_ = []
    for side in ("ref", "idx"):
        for what in whats:
            name = f"{side}_{what.replace('-', '_')}"
            maker = inp if source == "input" else out
            kw = {"help": help_by_what[what]} if what in help_by_what else {}
            opt = maker(f"--{side}-{what}", name, **kw)
            if what in RENAMED:
                opt = replace(opt, flags=(f"--{side}-{RENAMED[what]}", *opt.flags))
            out_.append(opt)
    return tuple(out_)


#: Every workflow step, by subcommand, in the order the workflow runs them.
STEPS = {
    "convert": Step(
        "[workflow] study folder -> header check (inspect.json), then ct.nii.gz, pet_suv.nii.gz, pet.json",
        (
            *_study(),
            PATIENT,
            TRACER,
            out(
                "--inspect",
                kept=True,
                help="the header check's verdict (JSON: ok, or why the study is refused), written first",
            ),
            out("--ct"),
            out("--pet"),
            out("--json"),
            par("--fingerprint", default="", help="the folder's content fingerprint (recorded)"),
            par("--other-dicom", default="", help="the patient's other study folder (PatientID and sex must agree)"),
            par("--other-tracer", default=""),
            par("--max-uncovered-fraction", "max_uncovered", setting="inspection.max_uncovered_fraction", type=float),
        ),
    ),
    "register": Step(
        "[workflow] index CT -> reference CT, ITK transform file; the index CT/PET in the reference space + QC picture",
        (
            inp("--fixed", help="reference study CT (NIfTI)"),
            inp("--moving", help="index study CT (NIfTI)"),
            inp("--reference-pet", help="the reference PET, whose grid the index PET is written on"),
            inp("--index-pet"),
            out("--tfm"),
            out("--qc"),
            out("--ct-out", "ct", help="the index CT on the reference CT's grid (viewing only)"),
            out("--pet-out", "pet", help="the index PET on the reference PET's grid (viewing only)"),
            out("--png", help="the registration's QC picture"),
            par("--title", default=""),
            Opt(("--threads",), "threads", type=int, default=1),
            par("--grid-mm", setting="registration.grid_mm", type=float),
            par("--affine", setting="registration.affine", switch=True),
            PATIENT,
        ),
    ),
    "anatomy": Step(
        "[workflow] organ label map of one study's CT",
        (
            inp("--ct"),
            inp("--organ-mask", default="", help="the study's organ map from the studies sheet (replaces the method)"),
            out("--labels", help="organ label map out (NIfTI, CT grid, TotalSegmentator v2 numbers)"),
            out("--json"),
            out("--png", default="", help="the organ map's QC picture to write (PNG)"),
            par("--method", setting="anatomy.method"),
            par(
                "--offset-mm",
                "offset",
                setting="background.offset_mm",
                encode="json",
                help="JSON [x, y]: the descending aorta's expected offset from the vertebral body (mm, LPS x and y)",
            ),
            par(
                "--totalsegmentator-args",
                "ts_args",
                setting="anatomy.totalsegmentator_args",
                encode="json",
                help="JSON list of extra TotalSegmentator arguments",
            ),
            PATIENT,
            TRACER,
        ),
    ),
    "segment": Step(
        "[workflow] background VOI and lesion detection for one study",
        (
            inp("--ct"),
            inp("--pet"),
            inp("--anatomy", help="the study's organ label map (anatomy step)"),
            out("--labels"),
            out("--json"),
            out("--background-png", "png", default="", help="QC picture of the background VOI"),
            par(
                "--detection",
                default="{}",
                help="detection settings as a JSON object (the config's detection section; a setting left out "
                "takes the config's default)",
            ),
            par(
                "--background",
                default="{}",
                help="background settings as a JSON object (the config's background section; a setting left "
                "out takes the config's default)",
            ),
            inp("--exclusion", default="", help="NIfTI label image of physiological uptake (optional)"),
            par("--background-at", default="", help="background VOI centre 'x,y,z' (LPS mm), overriding the search"),
            inp("--background-mask", default="", help="NIfTI mask of the background region, overriding the search"),
            inp(
                "--lesion-mask", default="", help="the reader's lesions (method 'masks'): NIfTI, DICOM-SEG or RTSTRUCT"
            ),
            par("--seeds", default="", help="reader's lesion seeds 'x,y,z;x,y,z' in LPS mm (method 'seeds')"),
            par("--review", default="", help="this study's reader decisions (JSON list; see dualpet.review)"),
            par(
                "--dicom-dir",
                "dicom",
                default="",
                help="the study's DICOM folder: a DICOM lesion mask must be of its PET (frame of reference, patient)",
            ),
            par("--pet-series", default="", help="the PET series named in the studies sheet, if any"),
            Opt(("--patient",), "wildcards.patient", default=""),
            Opt(("--tracer",), "wildcards.tracer", default=""),
        ),
    ),
    "match": Step(
        "[workflow] cross-tracer matching and per-lesion crops",
        (
            PATIENT,
            REFERENCE,
            INDEX,
            *_sides("pet", "labels", "detection"),
            inp("--ref-ct"),
            inp("--ref-anatomy", help="the reference study's organ label map"),
            inp("--transform", "tfm"),
            par("--tolerance-mm", "tolerance", setting="matching.tolerance_mm", type=float),
            par("--fraction", setting="voi.isocontour", type=float),
            par("--neighbourhood-mm", "neighbourhood", setting="voi.neighbourhood_mm", type=float),
            par("--reader-masks", setting="voi.reader_masks"),
            out("--index-out", "index"),
            out("--crops-out", "crops", folder=True),
            out("--ref-voi-out", "ref_voi", default="", help="the reference study's final VOIs (label k = lesion Lk)"),
            out("--idx-voi-out", "idx_voi", default="", help="the index study's final VOIs (label k = lesion Lk)"),
        ),
    ),
    "export-seg": Step(
        "[workflow] a study's final VOIs as a DICOM-SEG over its original PET series",
        (
            Opt((), "params.{side}_dicom", dest="dicom_dir"),
            par("--pet-series", "{side}_series", default="", help="the PET series named in the studies sheet, if any"),
            Opt(("--patient",), "wildcards.patient", required=True),
            Opt(("--tracer",), "params.{side}_tracer", required=True),
            inp("--voi", "{side}_voi", help="the study's voi.nii.gz (label k = lesion Lk)"),
            inp(
                "--inspect",
                "{side}_inspect",
                default="",
                help="the study's inspect.json (an excluded study exports nothing)",
            ),
            Opt(("-o", "--output"), "output.{side}", required=True),
        ),
    ),
    "lesion-metrics": Step(
        "[workflow] metrics of one lesion from its crop",
        (Opt((), "input", dest="crop"), REFERENCE, INDEX, Opt(("-o", "--output"), "output", required=True), PATIENT),
    ),
    "patient-table": Step(
        "[workflow] join one patient's lesion index and metrics",
        (
            PATIENT,
            REFERENCE,
            INDEX,
            inp("--index-tsv", "index"),
            Opt(
                ("--metrics",),
                "input.metrics",
                many=True,
                default=[],
                help="the patient's per-lesion metric files (JSON)",
            ),
            *_sides("detection"),
            inp("--ref-pet-json", default=""),
            inp("--idx-pet-json", default=""),
            inp("--ref-anatomy", default="", help="the reference study's anatomy.json (organs dropped as implausible)"),
            inp("--idx-anatomy", default="", help="the index study's anatomy.json"),
            inp("--registration-qc", "qc"),
            out("--lesions-out", "lesions"),
            out("--patient-out", "patient"),
        ),
    ),
    "review-page": Step(
        "[workflow] a patient's self-contained review page (HTML)",
        (
            PATIENT,
            REFERENCE,
            INDEX,
            *NAMES,
            inp("--lesions", help="the patient's lesions.tsv"),
            *_sides("pet", "ct", "voi", "detection"),
            inp(
                "--transform",
                "tfm",
                default=None,
                help="the registration (reference -> index): rejected candidates shown in the other study too",
            ),
            Opt(("-o", "--output"), "output.page", required=True),
            out("--mip", default=None, help="also write the MIP panel as a PNG here"),
        ),
    ),
    "cohort": Step(
        "[workflow] merge per-patient tables into the cohort tables",
        (
            REFERENCE,
            INDEX,
            Opt(("--lesions",), "input.lesions", many=True, default=[]),
            Opt(("--patients",), "input.patients", many=True, default=[]),
            Opt(
                ("--outputs",),
                "input.outputs",
                many=True,
                default=[],
                help="the patients' other outputs (placeholders name exclusions)",
            ),
            inp("--clinical", default=""),
            out("--lesions-out", "lesions"),
            out("--patients-out", "patients"),
            out("--tables-out", "tables", default=None, help="also write both tables as one HTML page (the report's)"),
        ),
        isolate=False,
    ),
    "stats": Step(
        "[workflow] cohort statistics -> summary.json, summary.md",
        (
            inp("--lesions"),
            inp("--patients"),
            REFERENCE,
            INDEX,
            *NAMES,
            par("--primary-metric", "metric", setting="statistics.primary.metric"),
            par("--primary-set", "lesion_set", setting="statistics.primary.lesion_set"),
            par("--primary-analysis", "analysis", setting="statistics.primary.analysis"),
            par("--adjust", setting="statistics.adjust"),
            out("--json"),
            out("--md"),
            out("--html", default=None, help="also write the report as HTML (the Snakemake report's page)"),
        ),
        isolate=False,
    ),
    "figures": Step(
        "[workflow] cohort figures (PNG, SVG) and the detection table by region",
        (
            inp("--lesions"),
            inp("--patients"),
            REFERENCE,
            INDEX,
            *NAMES,
            par("--metric", setting="statistics.primary.metric", help="the metric drawn"),
            par(
                "--lesion-set",
                setting="statistics.primary.lesion_set",
                help="the lesion set drawn: both, reference or union",
            ),
            par("--outdir", required=True),
        ),
        isolate=False,
    ),
    "check-cohort": Step(
        "[workflow] fail (exit 1) while any patient is excluded; else write a status",
        (
            Opt((), "input.patients", dest="patients", help="the cohort's patients.tsv"),
            Opt(("-o", "--output"), "output", required=True),
        ),
        isolate=False,
        log=" 2>&1 | tee {log:q}",
    ),
}


def shell(command, side=None, log=None):
    """The shell command of the rule that runs ``command``: the subcommand with every option
    from the rule's values, each quoted with ``:q``, then its log (``log``: another
    redirection). ``side``: the study (``ref`` or ``idx``) of a rule that runs the step for
    both studies, filling the ``{side}`` of the sources."""
    step = STEPS[command]
    parts = ['"$DUALPET_PYTHON" -m dualpet', command]
    for opt in step.options:
        text = opt.shell()
        parts.append(text.replace("{side}", side) if side else text)
    if step.isolate:
        parts.append("--isolate-failures")
    return " ".join(parts) + (step.log if log is None else log)
