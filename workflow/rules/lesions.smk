checkpoint match:
    """Cross-tracer matching in the reference space; one crop per union lesion."""
    input:
        ref_pet=f"results/{{patient}}/{REF}/pet_suv.nii.gz",
        ref_labels=f"results/{{patient}}/{REF}/lesions.nii.gz",
        ref_detection=f"results/{{patient}}/{REF}/segmentation.json",
        ref_ct=f"results/{{patient}}/{REF}/ct.nii.gz",
        ref_anatomy=f"results/{{patient}}/{REF}/anatomy.nii.gz",
        idx_pet=f"results/{{patient}}/{IDX}/pet_suv.nii.gz",
        idx_labels=f"results/{{patient}}/{IDX}/lesions.nii.gz",
        idx_detection=f"results/{{patient}}/{IDX}/segmentation.json",
        tfm="results/{patient}/registration/transform.tfm",
    output:
        index="results/{patient}/lesions/index.tsv",
        crops=directory("results/{patient}/lesions/crops"),
        ref_voi=f"results/{{patient}}/{REF}/voi.nii.gz",
        idx_voi=f"results/{{patient}}/{IDX}/voi.nii.gz",
    log:
        "results/logs/match/{patient}.log",
    benchmark:
        "results/benchmarks/match/{patient}.tsv"
    priority: 8
    conda:
        "../../envs/lesions.yaml"
    threads: 1
    resources:
        mem_mb=1700,
        runtime=5,
    params:
        reference=REF,
        index=IDX,
        code=code_version("match"),
        tolerance=config["matching"]["tolerance_mm"],
        fraction=config["voi"]["isocontour"],
        neighbourhood=config["voi"]["neighbourhood_mm"],
        reader_masks=config["voi"]["reader_masks"],
    shell:
        step_shell("match")


rule export_seg:
    """Both studies' final VOIs as DICOM-SEGs over their original PET series (highdicom);
    one job per patient (each study on its own: a failed export excludes the patient).
    """
    input:
        ref_voi=f"results/{{patient}}/{REF}/voi.nii.gz",
        ref_inspect=f"results/{{patient}}/{REF}/inspect.json",
        idx_voi=f"results/{{patient}}/{IDX}/voi.nii.gz",
        idx_inspect=f"results/{{patient}}/{IDX}/inspect.json",
    output:
        ref=f"results/{{patient}}/{REF}/lesions_seg.dcm",
        idx=f"results/{{patient}}/{IDX}/lesions_seg.dcm",
    log:
        "results/logs/export_seg/{patient}.log",
    benchmark:
        "results/benchmarks/export_seg/{patient}.tsv"
    priority: 4
    conda:
        "../../envs/convert.yaml"
    threads: 1
    resources:
        mem_mb=800,
        runtime=5,
    params:
        code=code_version("export-seg"),
        ref_tracer=REF,
        idx_tracer=IDX,
        ref_dicom=study_value("dicom_dir", REF),
        ref_series=study_value("pet_series", REF),
        idx_dicom=study_value("dicom_dir", IDX),
        idx_series=study_value("pet_series", IDX),
    shell:
        step_shell("export-seg", side="ref")
        + " && "
        + step_shell("export-seg", side="idx", log=" >> {log:q} 2>&1")


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
    priority: 7
    conda:
        "../../envs/lesions.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        reference=REF,
        index=IDX,
        code=code_version("lesion-metrics"),
    shell:
        step_shell("lesion-metrics")


rule patient_table:
    """One patient's lesion table (contract columns) and patient summary."""
    input:
        index="results/{patient}/lesions/index.tsv",
        metrics=lesion_metrics_of,
        ref_detection=f"results/{{patient}}/{REF}/segmentation.json",
        idx_detection=f"results/{{patient}}/{IDX}/segmentation.json",
        ref_pet_json=f"results/{{patient}}/{REF}/pet.json",
        idx_pet_json=f"results/{{patient}}/{IDX}/pet.json",
        ref_anatomy=f"results/{{patient}}/{REF}/anatomy.json",
        idx_anatomy=f"results/{{patient}}/{IDX}/anatomy.json",
        qc="results/{patient}/registration/qc.json",
    output:
        lesions="results/{patient}/lesions.tsv",
        patient="results/{patient}/patient.json",
    log:
        "results/logs/patient_table/{patient}.log",
    benchmark:
        "results/benchmarks/patient_table/{patient}.tsv"
    priority: 6
    conda:
        "../../envs/stats.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        reference=REF,
        index=IDX,
        code=code_version("patient-table"),
    shell:
        step_shell("patient-table")


rule review_page:
    """A patient's self-contained review page: MIPs, lesion crops, rejected candidates and
    ready lines for the review sheet."""
    input:
        lesions="results/{patient}/lesions.tsv",
        ref_pet=f"results/{{patient}}/{REF}/pet_suv.nii.gz",
        ref_ct=f"results/{{patient}}/{REF}/ct.nii.gz",
        ref_voi=f"results/{{patient}}/{REF}/voi.nii.gz",
        ref_detection=f"results/{{patient}}/{REF}/segmentation.json",
        idx_pet=f"results/{{patient}}/{IDX}/pet_suv.nii.gz",
        idx_ct=f"results/{{patient}}/{IDX}/ct.nii.gz",
        idx_voi=f"results/{{patient}}/{IDX}/voi.nii.gz",
        idx_detection=f"results/{{patient}}/{IDX}/segmentation.json",
        tfm="results/{patient}/registration/transform.tfm",
    output:
        page=report(
            "results/{patient}/review.html",
            caption="../report/review.rst",
            category="Review pages",
            labels={"patient": "{patient}"},
        ),
        mip=report(
            "results/{patient}/mip.png",
            caption="../report/mip.rst",
            category="Patients",
            labels={"patient": "{patient}"},
        ),
    log:
        "results/logs/review_page/{patient}.log",
    benchmark:
        "results/benchmarks/review_page/{patient}.tsv"
    priority: 5
    conda:
        "../../envs/lesions.yaml"
    threads: 1
    resources:
        mem_mb=1900,
        runtime=5,
    params:
        reference=REF,
        index=IDX,
        ref_name=NAMES[REF],
        idx_name=NAMES[IDX],
        code=code_version("review-page"),
    shell:
        step_shell("review-page")
