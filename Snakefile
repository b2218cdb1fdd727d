# dualpet: dual-tracer PET/CT cohort analysis.
# DICOM study folders (config/studies.tsv) -> SUV NIfTI -> registration of the index
# study onto the reference study -> lesion detection per tracer -> cross-tracer
# matching (per-patient checkpoint) -> per-lesion metrics (parallel jobs) -> cohort
# tables -> statistics. See README.md.
from snakemake.utils import min_version

min_version("9.0")


# `--configfile FILE` replaces config/config.yaml (Snakemake would merge the two, and a key
# left out of FILE would silently keep the demo's value); `--config KEY=VALUE` still
# overrides single keys of either.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# Each rule's `priority` ranks it by the longest chain of work it starts, in the measured
# seconds of tests/benchmarks/bench_patient.py (tests/test_static.py checks the order): when
# cores are short, the scheduler starts the organ maps before the registration, and the
# registration before the detections, so the chain anatomy -> segment is not left waiting
# behind the registration (docs/hpc.md).


include: "workflow/rules/common.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/lesions.smk"
include: "workflow/rules/cohort.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
