rule convert:
    """DICOM study folder -> the header check's verdict (inspect.json: ok, or why the study
    is excluded), then CT (HU) and PET (SUVbw) NIfTI plus the SUV sidecar, from one reading
    of the folder. The folder is a parameter, not an input: a missing folder excludes its
    patient, not the run; the fingerprint of its files reruns the study when they change.
    """
    output:
        inspect="results/{patient}/{tracer}/inspect.json",
        ct="results/{patient}/{tracer}/ct.nii.gz",
        pet="results/{patient}/{tracer}/pet_suv.nii.gz",
        json="results/{patient}/{tracer}/pet.json",
    log:
        "results/logs/convert/{patient}_{tracer}.log",
    benchmark:
        "results/benchmarks/convert/{patient}_{tracer}.tsv"
    priority: 12
    conda:
        "../../envs/convert.yaml"
    threads: 1
    resources:
        mem_mb=1300,
        runtime=5,
    params:
        code=code_version("convert"),
        dicom=study_value("dicom_dir"),
        fingerprint=study_fingerprint,
        pet_series=study_value("pet_series"),
        ct_series=study_value("ct_series"),
        other_dicom=other_study_folder,
        other_tracer=lambda wc: IDX if wc.tracer == REF else REF,
        max_uncovered=config["inspection"]["max_uncovered_fraction"],
    shell:
        step_shell("convert")
