"""The numbers and names the statistics use; the Methods text is rendered from these."""

from __future__ import annotations

from dualpet.interchange import LESION_METRICS, PATIENT_COLUMNS
from dualpet.settings import default

#: Uptake metrics analysed, in report order; ``{tracer}_{metric}`` columns of lesions.tsv.
METRICS = LESION_METRICS
#: Metrics correlated with clinical columns and how lesions are aggregated per patient.
CORRELATION_METRICS = {"suvmax": "max", "suvmean": "mean", "tbr": "max"}

#: The lesion sets an uptake comparison can use (the estimand's population).
LESION_SETS = {
    "both": "lesions detected on both tracers",
    "reference": "lesions detected on the reference tracer (the index value measured in the reference "
    "VOI carried over where the index tracer missed it)",
    "union": "every lesion detected on either tracer, each measured on both (carried-over VOIs where one "
    "tracer missed it)",
}
#: The uptake analyses per metric and lesion set.
ANALYSES = {
    "log_ratio": "geometric mean ratio index/reference (random-intercept model of ln(index/reference))",
    "difference": "mean difference index - reference (random-intercept model)",
    "patient_wilcoxon": "Wilcoxon signed-rank test on per-patient mean differences",
    "lesion_wilcoxon": "Wilcoxon signed-rank test over lesions (descriptive: lesions are clustered)",
}
#: The default primary endpoint (config ``statistics.primary``; its defaults are the schema's).
DEFAULT_PRIMARY = default("statistics.primary")
#: Multiplicity adjustment of the exploratory tests (config ``statistics.adjust``).
ADJUSTMENTS = ("holm", "none")

#: The largest value a lesion metric may take (SUV, TBR, mL, g): larger is a unit or export
#: error, and squares of values near 1e308 overflow the statistics into p = 1.
MAX_METRIC_VALUE = 1e6
#: The metrics that may be negative: means over a VOI, which over near-zero uptake (a VOI
#: carried over to the tracer that missed the lesion) can fall below 0 on scanners whose
#: images keep negative voxel values. Every other metric below 0 is refused.
MEAN_METRICS = ("suvmean", "tbr_mean")
#: A paired difference within this fraction of the larger value is zero (floating point).
ZERO_TOLERANCE = 1e-9
#: Wilcoxon: exact distribution up to this many non-zero differences without ties;
#: with ties, the exact permutation distribution up to WILCOXON_PERMUTATION_MAX_N;
#: beyond, the normal approximation (tie-corrected, continuity-corrected).
WILCOXON_EXACT_MAX_N = 50
WILCOXON_PERMUTATION_MAX_N = 20
#: Sign-flip: all 2^n sign patterns up to this n, else PERMUTATIONS random ones.
SIGN_FLIP_EXACT_MAX_N = 20
#: Sign-flip of integer values (lesion counts): exact by convolution for any n up to this
#: sum of |values| (the null distribution's support; memory and time grow with it).
SIGN_FLIP_MAX_INTEGER_SUM = 100_000
PERMUTATIONS = 100_000
#: Permutations evaluated at once (bounds the memory of a 2^20-pattern exact test).
PERMUTATION_BATCH = 65_536
#: Spearman: exact over all n! pairings up to this n, else the t approximation.
SPEARMAN_EXACT_MAX_N = 8

#: Minimum numbers for a test to be attempted.
MIN_WILCOXON_NONZERO = 2
MIN_MIXED_PATIENTS = 3
MIN_SPEARMAN_N = 3
#: Below this many patients the clustered McNemar test is descriptive, outside the family
#: of tests (null simulations, tests/benchmarks/bench_type1.py, at alpha 0.05 on the t
#: reference: 0.045-0.079 with 6 patients, 0.049-0.071 with 11, 0.044-0.064 with 20).
CLUSTERED_MCNEMAR_MIN_PATIENTS = 20

WILCOXON_LESION_TEST = "Wilcoxon signed-rank test (two-sided), paired per lesion"
WILCOXON_PATIENT_TEST = "Wilcoxon signed-rank test (two-sided) on per-patient mean differences"
MIXED_TEST = "Random-intercept model of the difference (REML), t test"
MIXED_LOG_TEST = "Random-intercept model of ln(index/reference) (REML), t test; geometric mean ratio"
MCNEMAR_TEST = "McNemar exact test (two-sided binomial on discordant pairs)"
CLUSTERED_MCNEMAR_TEST = "Clustered McNemar test (Obuchowski 1998), t reference on n_patients - 1 df"
SIGN_FLIP_TEST = "Patient-level sign-flip permutation test (two-sided, exact mid-p)"
SPEARMAN_TEST = "Spearman rank correlation"

DIFFERENCE_DEFINITION = "index - reference"
LESION_CLUSTER_NOTE = (
    "Lesions are clustered within patients (not independent); this per-lesion p-value is descriptive. "
    "See the patient-clustered analyses."
)

#: patients.tsv columns that are neither tracer-specific nor clinical.
NON_CLINICAL_COLUMNS = PATIENT_COLUMNS
#: Status values (case-insensitive) that remove a patient from the analysis.
EXCLUDED_STATUS = frozenset({"excluded", "exclude"})
#: Text cells treated as missing when deciding whether a clinical column is numeric.
NA_TOKENS = frozenset({"", "na", "nan", "n/a", "none", "null", "-"})
