# Train a policy per trainer recipe ({RECIPE_DIR}/{trainer}.yaml: config/recipes/, or config/recipes/gpu/
# under `compute: gpu`) and issue (gun, wage) into
# results/train/{trainer}_{short}/ (Contract 3). The DAG reads model -> sft -> grpo / grail / maxent:
# rule `sft` clones the human choices with TRL's SFTTrainer from the base model, and rule `train`
# starts every RL trainer from sft's final model (`train.start_from`; `base` = the untrained model),
# whose LoRA adapter it trains further (docs/train.md). Checkpoints live beside the declared
# outputs, so a rerun after an interruption resumes from the last one. With a recipe that sets
# `use_vllm: true` and `vllm_mode: server` (config/recipes/gpu/*.yaml), `grail-sim train` starts
# `vllm serve` on the first allotted GPU, waits for /health and runs `accelerate launch` on the
# others, and always stops the server (grail_sim.training.vllm_server; docs/train.md).
# `train.overrides` reaches each rule as the overrides its recipe reads (common.smk's train_json), and
# the keys that only shape the DAG reach none, so changing them reruns no finished job.
TRAIN = config["train"]


rule sft:
    input:
        prompts=lambda w: f"results/prompts/{ISSUES[w.short]}/next_video",
        model=rules.model.output,
        recipe=recipe_path("sft"),
        # The files it inherits from (base:), so that editing one reruns the trainers built on it.
        recipe_bases=recipe_chain(recipe_path("sft"))[1:],
    output:
        final=directory("results/train/sft_{short}/final"),
        state="results/train/sft_{short}/trainer_state.json",
        metrics="results/train/sft_{short}/metrics.jsonl",
    wildcard_constraints:
        short="|".join(ISSUES),
    params:
        out="results/train/sft_{short}",
        grail=GRAIL,
        config=lambda w: train_json(recipe_path("sft")),  # a function: only a training job reads TRL's fields
        code=code_version("train"),
    log:
        "results/logs/train_sft_{short}.log",
    benchmark:
        "results/benchmarks/train_sft_{short}.tsv"
    threads: TRAIN["threads"]
    resources:
        **model_env_resources("sft", mem_mb=TRAIN["mem_mb"]),
    conda:
        MODEL_ENV
    shell:
        "{params.grail} train --config {input.recipe:q} --dataset {input.prompts:q} --model {input.model:q} "
        "--out {params.out:q} --threads {threads} --config-json {params.config} > {log:q} 2>&1"


rule train:
    input:
        prompts=lambda w: f"results/prompts/{ISSUES[w.short]}/next_video",
        model=lambda w: start_model(w.trainer, w.short),
        recipe=lambda w: recipe_path(w.trainer),
        recipe_bases=lambda w: recipe_chain(recipe_path(w.trainer))[1:],
    output:
        final=directory("results/train/{trainer}_{short}/final"),
        state="results/train/{trainer}_{short}/trainer_state.json",
        metrics="results/train/{trainer}_{short}/metrics.jsonl",
    wildcard_constraints:
        # sft_{short} belongs to rule sft (the lookahead keeps the two rules' outputs apart).
        trainer="(?!sft_)[A-Za-z0-9-]+",
        short="|".join(ISSUES),
    params:
        out="results/train/{trainer}_{short}",
        grail=GRAIL,
        config=lambda w: train_json(recipe_path(w.trainer)),
        code=code_version("train"),
    log:
        main="results/logs/train_{trainer}_{short}.log",
        # vllm_mode: server recipes (GPU) write the server's log here; CPU runs leave it empty.
        vllm="results/logs/train_{trainer}_{short}.vllm.log",
    benchmark:
        "results/benchmarks/train_{trainer}_{short}.tsv"
    threads: TRAIN["threads"]
    resources:
        **model_env_resources("train", mem_mb=TRAIN["mem_mb"]),
    conda:
        MODEL_ENV
    shell:
        "{params.grail} train --config {input.recipe:q} --dataset {input.prompts:q} --model {input.model:q} "
        "--out {params.out:q} --threads {threads} --server-log {log.vllm:q} --config-json {params.config} "
        "> {log.main:q} 2>&1"
