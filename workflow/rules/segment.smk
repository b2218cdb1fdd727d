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
    conda:
        "../../envs/lesions.yaml"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=30,
    params:
        code=code_version("anatomy"),
        method=config["anatomy"]["method"],
        offset=json.dumps(config["background"]["offset_mm"]),
        ts_args=safe_json(config["anatomy"]["totalsegmentator_args"]),
    shell:
        '"$DUALPET_PYTHON" -m dualpet anatomy --ct={input.ct:q} --organ-mask={input.organ_mask:q}'
        " --labels={output.labels:q} --json={output.json:q} --png={output.png:q}"
        " --method={params.method:q} --offset-mm={params.offset:q} --totalsegmentator-args={params.ts_args:q}"
        " --patient={wildcards.patient:q} --tracer={wildcards.tracer:q}"
        " --isolate-failures > {log:q} 2>&1"


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
    conda:
        "../../envs/lesions.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
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
        '"$DUALPET_PYTHON" -m dualpet segment --ct={input.ct:q} --pet={input.pet:q} --anatomy={input.anatomy:q}'
        " --labels={output.labels:q} --json={output.json:q}"
        " --detection={params.detection:q} --background={params.background:q}"
        " --exclusion={input.exclusion:q} --background-at={params.background_at:q}"
        " --background-png={output.png:q} --background-mask={input.background_mask:q}"
        " --lesion-mask={input.lesion_mask:q} --seeds={params.seeds:q} --review={params.review:q}"
        " --dicom-dir={params.dicom:q} --pet-series={params.pet_series:q}"
        " --patient={wildcards.patient:q} --tracer={wildcards.tracer:q}"
        " --isolate-failures > {log:q} 2>&1"
