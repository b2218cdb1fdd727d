rule register:
    """Index study CT -> reference study CT (rigid, then affine; fixed = reference, moving = index); then the index CT and PET resampled into the reference space (viewing only: the CT on the reference CT's grid, the PET on the reference PET's) and a QC picture, from the CTs already read."""
    input:
        fixed=f"results/{{patient}}/{REF}/ct.nii.gz",
        moving=f"results/{{patient}}/{IDX}/ct.nii.gz",
        reference_pet=f"results/{{patient}}/{REF}/pet_suv.nii.gz",
        index_pet=f"results/{{patient}}/{IDX}/pet_suv.nii.gz",
    output:
        tfm="results/{patient}/registration/transform.tfm",
        qc="results/{patient}/registration/qc.json",
        ct=f"results/{{patient}}/registration/{IDX}_ct_in_reference.nii.gz",
        pet=f"results/{{patient}}/registration/{IDX}_pet_suv_in_reference.nii.gz",
        png=report(
            "results/{patient}/registration/qc.png",
            caption="../report/registration.rst",
            category="Registration QC",
            labels={"patient": "{patient}"},
        ),
    log:
        "results/logs/register/{patient}.log",
    benchmark:
        "results/benchmarks/register/{patient}.tsv"
    priority: 10
    conda:
        "../../envs/register.yaml"
    threads: 1  # the optimisation runs in one thread (deterministic); patients run in parallel
    resources:
        mem_mb=2600,
        runtime=5,
    params:
        code=code_version("register"),
        grid_mm=config["registration"]["grid_mm"],
        affine="--affine" if config["registration"]["affine"] else "--no-affine",
        title=lambda wc: f"patient {wc.patient}: {IDX} study on the {REF} study",
    shell:
        step_shell("register")
