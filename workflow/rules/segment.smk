rule segment:
    """Background VOI and lesion detection on one study's own PET voxels."""
    input:
        ct="results/{patient}/{tracer}/ct.nii.gz",
        pet="results/{patient}/{tracer}/pet_suv.nii.gz",
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
    conda:
        "../../envs/lesions.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        code=code_version("segment"),
        detection=json.dumps(config["detection"], sort_keys=True),
        background=json.dumps(config["background"], sort_keys=True),
        background_at=study_value("background_lps"),
        seeds=study_seeds,
    shell:
        "python -m dualpet segment --ct {input.ct} --pet {input.pet}"
        " --labels {output.labels} --json {output.json}"
        " --detection {params.detection:q} --background {params.background:q}"
        " --exclusion '{input.exclusion}' --background-at '{params.background_at}'"
        " --background-png {output.png} --background-mask '{input.background_mask}'"
        " --lesion-mask '{input.lesion_mask}' --seeds '{params.seeds}'"
        " --patient {wildcards.patient} --tracer {wildcards.tracer} > {log} 2>&1"
