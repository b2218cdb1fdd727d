rule register:
    """Index study CT -> reference study CT (rigid; fixed = reference, moving = index)."""
    input:
        fixed=f"results/{{patient}}/{REF}/ct.nii.gz",
        moving=f"results/{{patient}}/{IDX}/ct.nii.gz",
    output:
        tfm="results/{patient}/registration/transform.tfm",
        qc="results/{patient}/registration/qc.json",
    log:
        "results/logs/register/{patient}.log",
    benchmark:
        "results/benchmarks/register/{patient}.tsv"
    conda:
        "../../envs/register.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        grid_mm=config["registration"]["grid_mm"],
        affine="--affine" if config["registration"]["affine"] else "",
    shell:
        "python -m dualpet register --fixed {input.fixed} --moving {input.moving}"
        " --tfm {output.tfm} --qc {output.qc} --threads {threads}"
        " --grid-mm {params.grid_mm} {params.affine} > {log} 2>&1"
