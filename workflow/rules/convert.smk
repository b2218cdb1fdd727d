checkpoint inspect:
    """Header-only check of a study folder: ok, or the reason it is excluded."""
    input:
        dicom=study_value("dicom_dir"),
    output:
        "results/{patient}/{tracer}/inspect.json",
    log:
        "results/logs/inspect/{patient}_{tracer}.log",
    benchmark:
        "results/benchmarks/inspect/{patient}_{tracer}.tsv"
    conda:
        "../../envs/convert.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        code=code_version("inspect"),
        pet_series=study_value("pet_series"),
        ct_series=study_value("ct_series"),
    shell:
        "python -m dualpet inspect {input.dicom:q} --patient {wildcards.patient}"
        " --tracer {wildcards.tracer} -o {output}"
        " --pet-series '{params.pet_series}' --ct-series '{params.ct_series}' > {log} 2>&1"


rule convert:
    """DICOM study folder -> CT (HU) and PET (SUVbw) NIfTI plus the SUV sidecar."""
    input:
        dicom=study_value("dicom_dir"),
    output:
        ct="results/{patient}/{tracer}/ct.nii.gz",
        pet="results/{patient}/{tracer}/pet_suv.nii.gz",
        json="results/{patient}/{tracer}/pet.json",
    log:
        "results/logs/convert/{patient}_{tracer}.log",
    benchmark:
        "results/benchmarks/convert/{patient}_{tracer}.tsv"
    conda:
        "../../envs/convert.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        code=code_version("convert"),
        pet_series=study_value("pet_series"),
        ct_series=study_value("ct_series"),
    shell:
        "python -m dualpet convert {input.dicom:q} --patient {wildcards.patient}"
        " --tracer {wildcards.tracer} --ct {output.ct} --pet {output.pet}"
        " --json {output.json} --pet-series '{params.pet_series}'"
        " --ct-series '{params.ct_series}' > {log} 2>&1"
