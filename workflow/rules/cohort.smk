rule cohort:
    """Merge the per-patient tables into the cohort tables (plus clinical columns)."""
    input:
        lesions=lambda wc: expand(
            "results/{patient}/lesions.tsv", patient=included_patients()
        ),
        patients=lambda wc: expand(
            "results/{patient}/patient.json", patient=included_patients()
        ),
        inspect=expand(
            "results/{patient}/{tracer}/inspect.json", patient=PATIENTS, tracer=TRACERS
        ),
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
        code=code_version("cohort"),
    shell:
        f"python -m dualpet cohort --reference {REF} --index {IDX}"
        " --lesions {input.lesions} --patients {input.patients}"
        " --inspect {input.inspect} --clinical '{input.clinical}'"
        " --lesions-out {output.lesions} --patients-out {output.patients} > {log} 2>&1"


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
        code=code_version("stats"),
    shell:
        f"python -m dualpet stats --reference {REF} --index {IDX}"
        " --lesions {input.lesions} --patients {input.patients}"
        " --json {output.json} --md {output.md} > {log} 2>&1"
