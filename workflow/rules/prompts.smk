# Chat-prompt datasets per issue (long names): next-video choice and opinion shift, plus stats.json
# with drops, gold-position baselines, token lengths and the leak guards' results. The system
# prompts and the profile phrase table are inputs, so editing them re-renders the prompts.
PROMPTS = config["prompts"]


rule prompts:
    input:
        interactions=rules.clean.output.interactions,
        tokenizer=rules.model.output,
        system_prompts=list(PROMPTS["system_prompts"].values()),
        profile_fields=PROMPTS["profile_fields"],
    output:
        next_video=directory("results/prompts/{issue}/next_video"),
        opinion=directory("results/prompts/{issue}/opinion"),
        stats="results/prompts/{issue}/stats.json",
    wildcard_constraints:
        issue="|".join(ISSUES.values()),
    params:
        grail=GRAIL,
        out_dir="results/prompts/{issue}",
        config=stage_json("prompts"),
        code=code_version("prompts"),
    log:
        "results/logs/prompts_{issue}.log",
    benchmark:
        "results/benchmarks/prompts_{issue}.tsv"
    resources:
        mem_mb=4000,
        **SLURM_RESOURCES,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} prompts build --interactions {input.interactions:q} --issue {wildcards.issue} "
        "--tokenizer {input.tokenizer:q} --out-dir {params.out_dir:q} --config-json {params.config} > {log:q} 2>&1"
