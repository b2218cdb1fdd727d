checkpoint match:
    """Cross-tracer matching in the reference space; one crop per union lesion."""
    input:
        ref_pet=f"results/{{patient}}/{REF}/pet_suv.nii.gz",
        ref_labels=f"results/{{patient}}/{REF}/lesions.nii.gz",
        ref_seg=f"results/{{patient}}/{REF}/segmentation.json",
        ref_ct=f"results/{{patient}}/{REF}/ct.nii.gz",
        idx_pet=f"results/{{patient}}/{IDX}/pet_suv.nii.gz",
        idx_labels=f"results/{{patient}}/{IDX}/lesions.nii.gz",
        idx_seg=f"results/{{patient}}/{IDX}/segmentation.json",
        tfm="results/{patient}/registration/transform.tfm",
    output:
        index="results/{patient}/lesions/index.tsv",
        crops=directory("results/{patient}/lesions/crops"),
    log:
        "results/logs/match/{patient}.log",
    benchmark:
        "results/benchmarks/match/{patient}.tsv"
    conda:
        "../../envs/lesions.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        code=code_version("match"),
        tolerance=config["matching"]["tolerance_mm"],
        fraction=config["voi"]["isocontour"],
        neighbourhood=config["voi"]["neighbourhood_mm"],
    shell:
        "python -m dualpet match --patient {wildcards.patient}"
        f" --reference {REF} --index {IDX}"
        " --ref-pet {input.ref_pet} --ref-labels {input.ref_labels}"
        " --ref-seg {input.ref_seg} --ref-ct {input.ref_ct}"
        " --idx-pet {input.idx_pet} --idx-labels {input.idx_labels}"
        " --idx-seg {input.idx_seg} --transform {input.tfm}"
        " --tolerance-mm {params.tolerance} --fraction {params.fraction}"
        " --neighbourhood-mm {params.neighbourhood}"
        " --index-out {output.index} --crops-out {output.crops} > {log} 2>&1"


rule lesion_metrics:
    """SUVmax/mean/peak, MTV, TLG, TBR of one lesion on both tracers (reads only its crop)."""
    input:
        "results/{patient}/lesions/crops/{lesion}.npz",
    output:
        "results/{patient}/lesions/metrics/{lesion}.json",
    log:
        "results/logs/lesion_metrics/{patient}_{lesion}.log",
    benchmark:
        "results/benchmarks/lesion_metrics/{patient}_{lesion}.tsv"
    group:
        "lesions"
    conda:
        "../../envs/lesions.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("lesion-metrics"),
    shell:
        f"python -m dualpet lesion-metrics {{input}} --reference {REF} --index {IDX}"
        " -o {output} > {log} 2>&1"


rule patient_table:
    """One patient's lesion table (contract columns) and patient summary."""
    input:
        index="results/{patient}/lesions/index.tsv",
        metrics=lesion_metrics_of,
        ref_seg=f"results/{{patient}}/{REF}/segmentation.json",
        idx_seg=f"results/{{patient}}/{IDX}/segmentation.json",
        ref_pet_json=f"results/{{patient}}/{REF}/pet.json",
        idx_pet_json=f"results/{{patient}}/{IDX}/pet.json",
        qc="results/{patient}/registration/qc.json",
    output:
        lesions="results/{patient}/lesions.tsv",
        patient="results/{patient}/patient.json",
    log:
        "results/logs/patient_table/{patient}.log",
    benchmark:
        "results/benchmarks/patient_table/{patient}.tsv"
    group:
        "lesions"
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        code=code_version("patient-table"),
    shell:
        "python -m dualpet patient-table --patient {wildcards.patient}"
        f" --reference {REF} --index {IDX}"
        " --index-tsv {input.index} --metrics {input.metrics}"
        " --ref-seg {input.ref_seg} --idx-seg {input.idx_seg}"
        " --ref-pet-json {input.ref_pet_json} --idx-pet-json {input.idx_pet_json}"
        " --registration-qc {input.qc}"
        " --lesions-out {output.lesions} --patient-out {output.patient} > {log} 2>&1"
