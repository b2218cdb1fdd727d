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
        '"$DUALPET_PYTHON" -m dualpet segment --ct={input.ct:q} --pet={input.pet:q}'
        " --labels={output.labels:q} --json={output.json:q}"
        " --detection={params.detection:q} --background={params.background:q}"
        " --exclusion={input.exclusion:q} --background-at={params.background_at:q}"
        " --background-png={output.png:q} --background-mask={input.background_mask:q}"
        " --lesion-mask={input.lesion_mask:q} --seeds={params.seeds:q}"
        " --patient={wildcards.patient:q} --tracer={wildcards.tracer:q}"
        " --isolate-failures > {log:q} 2>&1"
