rule anatomy:
    """Organ label map of one study's CT (classical rules, TotalSegmentator, or the sheet's organ_mask)."""
    input:
        ct="results/{patient}/{tracer}/ct.nii.gz",
        organ_mask=optional_study_file("organ_mask"),
    output:
        labels="results/{patient}/{tracer}/anatomy.nii.gz",
        json="results/{patient}/{tracer}/anatomy.json",
        png=report(
            "results/{patient}/{tracer}/anatomy.png",
            caption="../report/anatomy.rst",
            category="Anatomy QC",
            labels={"patient": "{patient}", "tracer": "{tracer}"},
        ),
    log:
        "results/logs/anatomy/{patient}_{tracer}.log",
    benchmark:
        "results/benchmarks/anatomy/{patient}_{tracer}.tsv"
    priority: 11
    conda:
        "../../envs/lesions.yaml"
    threads: 1
    resources:
        # the classical organ map as measured (tests/benchmarks/bench_patient.py, margins in
        # docs/hpc.md); TotalSegmentator's model on CPU as its documentation asks
        mem_mb=1600 if config["anatomy"]["method"] == "classical" else 6000,
        runtime=5 if config["anatomy"]["method"] == "classical" else 30,
    params:
        code=code_version("anatomy"),
        method=config["anatomy"]["method"],
        offset=json.dumps(config["background"]["offset_mm"]),
        ts_args=safe_json(config["anatomy"]["totalsegmentator_args"]),
    shell:
        step_shell("anatomy")


rule segment:
    """Background VOI and lesion detection on one study's own PET voxels."""
    input:
        ct="results/{patient}/{tracer}/ct.nii.gz",
        pet="results/{patient}/{tracer}/pet_suv.nii.gz",
        anatomy="results/{patient}/{tracer}/anatomy.nii.gz",
        exclusion=optional_study_file("exclusion_mask"),
        background_mask=optional_study_file("background_mask"),
        lesion_mask=optional_study_file("lesion_mask"),
    output:
        labels="results/{patient}/{tracer}/lesions.nii.gz",
        json="results/{patient}/{tracer}/segmentation.json",
        png=report(
            "results/{patient}/{tracer}/background.png",
            caption="../report/background.rst",
            category="Background QC",
            labels={"patient": "{patient}", "tracer": "{tracer}"},
        ),
    log:
        "results/logs/segment/{patient}_{tracer}.log",
    benchmark:
        "results/benchmarks/segment/{patient}_{tracer}.tsv"
    priority: 9
    conda:
        "../../envs/lesions.yaml"
    threads: 1
    resources:
        mem_mb=2400,
        runtime=5,
    params:
        code=code_version("segment"),
        detection=safe_json(config["detection"], sort_keys=True),
        background=safe_json(config["background"], sort_keys=True),
        background_at=study_value("background_lps"),
        seeds=study_seeds,
        review=study_review,
        dicom=with_lesion_mask("dicom_dir"),
        pet_series=with_lesion_mask("pet_series"),
    shell:
        step_shell("segment")
