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
    log:
        "results/logs/cohort/cohort.log",
    benchmark:
        "results/benchmarks/cohort/cohort.tsv"
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
        '"$DUALPET_PYTHON" -m dualpet cohort --reference={params.reference:q} --index={params.index:q}'
        " --lesions {input.lesions:q} --patients {input.patients:q}"
        " --outputs {input.outputs:q} --clinical={input.clinical:q}"
        " --lesions-out={output.lesions:q} --patients-out={output.patients:q} > {log:q} 2>&1"


rule stats:
    """Cohort statistics: detection, descriptive statistics, paired and clustered tests."""
    input:
        lesions="results/cohort/lesions.tsv",
        patients="results/cohort/patients.tsv",
    output:
        json="results/cohort/summary.json",
        md=report(
            "results/cohort/summary.md",
            caption="../report/summary.rst",
            category="Cohort statistics",
        ),
    log:
        "results/logs/stats/stats.log",
    benchmark:
        "results/benchmarks/stats/stats.tsv"
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
        code=code_version("stats"),
    shell:
        '"$DUALPET_PYTHON" -m dualpet stats --reference={params.reference:q} --index={params.index:q}'
        " --primary-metric={params.metric:q} --primary-set={params.lesion_set:q}"
        " --primary-analysis={params.analysis:q} --adjust={params.adjust:q}"
        " --lesions={input.lesions:q} --patients={input.patients:q}"
        " --json={output.json:q} --md={output.md:q} > {log:q} 2>&1"


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
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        code=code_version("check-cohort"),
    shell:
        '"$DUALPET_PYTHON" -m dualpet check-cohort {input.patients:q} -o {output:q} 2>&1 | tee {log:q}'
