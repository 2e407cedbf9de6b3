# Train a policy per trainer recipe (config/recipes/{trainer}.yaml: grpo, grail, maxent) and issue
# (gun, wage) into results/train/{trainer}_{short}/ (Contract 3). Checkpoints live beside the declared
# outputs, so a rerun after an interruption resumes from the last one. With a recipe that sets
# `use_vllm: true` and `vllm_mode: server` (config/recipes/grail-gpu.yaml), `grail-sim train` starts
# `vllm serve` on the first allotted GPU, waits for /health and runs `accelerate launch` on the
# others, and always stops the server (grail_sim.vllm_server; README.md).

import shlex

TRAIN = config.get("train", {})
TRAIN_ISSUES = {"gun": "gun_control", "wage": "minimum_wage"}


# Per-run overrides from config: `train.max_steps` and `train.overrides` (recipe key -> value).
TRAIN_FLAGS = " ".join(
    ([f"--max-steps {int(TRAIN['max_steps'])}"] if TRAIN.get("max_steps") else [])
    + ["--set " + shlex.quote(f"{key}={value}") for key, value in (TRAIN.get("overrides") or {}).items()]
)


rule train:
    input:
        prompts=lambda w: f"results/prompts/{TRAIN_ISSUES[w.short]}/next_video",
        model="results/models/base",
        recipe="config/recipes/{trainer}.yaml",
    output:
        final=directory("results/train/{trainer}_{short}/final"),
        state="results/train/{trainer}_{short}/trainer_state.json",
        metrics="results/train/{trainer}_{short}/metrics.jsonl",
    wildcard_constraints:
        trainer="[A-Za-z0-9-]+",
        short="gun|wage",
    params:
        out="results/train/{trainer}_{short}",
        grail=GRAIL,
        flags=TRAIN_FLAGS,
    log:
        "results/logs/train_{trainer}_{short}.log",
    threads: TRAIN.get("threads", 2)
    resources:
        mem_mb=TRAIN.get("mem_mb", 8000),
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} train --recipe {input.recipe} --dataset {input.prompts} --model {input.model} "
        "--out {params.out} --threads {threads} {params.flags} > {log} 2>&1"
