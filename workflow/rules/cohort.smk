# The run's verdict and the target rule run where Snakemake runs (on SLURM: the submit host).
localrules:
    all,
    check_cohort,


rule cohort:
    """Merge the per-patient tables into the cohort tables (plus clinical columns); a
    patient whose step failed is listed as excluded with the reason."""
    input:
        lesions=expand("results/{patient}/lesions.tsv", patient=PATIENTS),
        patients=expand("results/{patient}/patient.json", patient=PATIENTS),
        outputs=[
            *expand("results/{patient}/registration/qc.png", patient=PATIENTS),
            *expand(
                "results/{patient}/{tracer}/background.png",
                patient=PATIENTS,
                tracer=TRACERS,
            ),
            *expand(
                "results/{patient}/{tracer}/anatomy.png",
                patient=PATIENTS,
                tracer=TRACERS,
            ),
        ],
        clinical=config["clinical"] or [],
    output:
        lesions=report(
            "results/cohort/lesions.tsv",
            caption="../report/lesions.rst",
            category="Cohort tables",
        ),
        patients=report(
            "results/cohort/patients.tsv",
            caption="../report/patients.rst",
            category="Cohort tables",
        ),
        tables=report(
            "results/cohort/tables.html",
            caption="../report/tables.rst",
            category="Cohort tables",
        ),
    log:
        "results/logs/cohort/cohort.log",
    benchmark:
        "results/benchmarks/cohort/cohort.tsv"
    priority: 3
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        reference=REF,
        index=IDX,
        code=code_version("cohort"),
    shell:
        step_shell("cohort")


rule figures:
    """Cohort figures (paired plot, per-patient ratios, Bland-Altman of log uptake,
    detection by region) for the primary endpoint's metric and lesion set."""
    input:
        lesions="results/cohort/lesions.tsv",
        patients="results/cohort/patients.tsv",
    output:
        paired=report(
            "results/cohort/figures/paired.png",
            caption="../report/figure_paired.rst",
            category="Cohort figures",
        ),
        ratios=report(
            "results/cohort/figures/patient_ratios.png",
            caption="../report/figure_patient_ratios.rst",
            category="Cohort figures",
        ),
        bland_altman=report(
            "results/cohort/figures/bland_altman.png",
            caption="../report/figure_bland_altman.rst",
            category="Cohort figures",
        ),
        regions=report(
            "results/cohort/figures/detection_by_region.png",
            caption="../report/figure_detection_by_region.rst",
            category="Cohort figures",
        ),
        svg=expand(
            "results/cohort/figures/{name}.svg",
            name=("paired", "patient_ratios", "bland_altman", "detection_by_region"),
        ),
        regions_tsv="results/cohort/figures/detection_by_region.tsv",
    log:
        "results/logs/figures/figures.log",
    benchmark:
        "results/benchmarks/figures/figures.tsv"
    priority: 2
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        reference=REF,
        index=IDX,
        metric=config["statistics"]["primary"]["metric"],
        lesion_set=config["statistics"]["primary"]["lesion_set"],
        outdir=lambda wildcards, output: os.path.dirname(output.paired),
        ref_name=NAMES[REF],
        idx_name=NAMES[IDX],
        captions=figure_captions(),
        code=code_version("figures"),
    shell:
        step_shell("figures")


rule stats:
    """Cohort statistics: detection, descriptive statistics, paired and clustered tests."""
    input:
        lesions="results/cohort/lesions.tsv",
        patients="results/cohort/patients.tsv",
    output:
        json="results/cohort/summary.json",
        md="results/cohort/summary.md",
        html=report(
            "results/cohort/summary.html",
            caption="../report/summary.rst",
            category="Cohort statistics",
        ),
    log:
        "results/logs/stats/stats.log",
    benchmark:
        "results/benchmarks/stats/stats.tsv"
    priority: 1
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        reference=REF,
        index=IDX,
        metric=config["statistics"]["primary"]["metric"],
        lesion_set=config["statistics"]["primary"]["lesion_set"],
        analysis=config["statistics"]["primary"]["analysis"],
        adjust=config["statistics"]["adjust"],
        ref_name=NAMES[REF],
        idx_name=NAMES[IDX],
        code=code_version("stats"),
    shell:
        step_shell("stats")


rule check_cohort:
    """The run's verdict: fails (naming them) while any patient is excluded, after the
    cohort tables and statistics were written for the others."""
    input:
        patients="results/cohort/patients.tsv",
        summary="results/cohort/summary.json",
    output:
        "results/cohort/complete.json",
    log:
        "results/logs/check_cohort/check_cohort.log",
    benchmark:
        "results/benchmarks/check_cohort/check_cohort.tsv"
    priority: 0
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        code=code_version("check-cohort"),
    shell:
        step_shell("check-cohort")
