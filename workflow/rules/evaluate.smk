# Generate and score predictions (Contract 4) for the untrained base model and each trained model,
# per issue and split, plus an external chat-prompt dataset in the ../shared/real format.
# On CPU `evaluate.max_rows` caps the rows per task and split (a seeded sample); 0 evaluates all.

EVALUATE = config.get("evaluate", {})
EXTERNAL = EVALUATE.get("external", {})
# Short issue names of targets -> the long names of prompt folders (as in grail_sim.issues).
EVAL_ISSUES = {"gun": "gun_control", "wage": "minimum_wage"}


# Flags shared by `evaluate` and `evaluate_external` (which differs only in its row cap).
EVALUATE_FLAGS = (
    f"--tasks {','.join(EVALUATE.get('tasks', ['next_video', 'opinion']))} "
    f"--batch-size {EVALUATE.get('batch_size', 8)} "
    f"--max-new-tokens {EVALUATE.get('max_new_tokens', 64)} --temperature {EVALUATE.get('temperature', 0.0)} "
    f"--seed {EVALUATE.get('seed', 0)} --bootstrap-samples {EVALUATE.get('bootstrap_samples', 1000)} "
    f"--confidence {EVALUATE.get('confidence', 0.95)} "
    f"--direction-tolerance {EVALUATE.get('direction_tolerance', 1e-6)} "
    f"--report-samples {EVALUATE.get('report_samples', 3)} --backend {EVALUATE.get('backend', 'auto')}"
)
# `base` is the untrained reference; any other model name is a trainer's final model (Contract 3).
EVALUATED_MODEL = "results/models/base"
TRAINED_MODEL = "results/train/{model}_{short}/final"


rule evaluate:
    input:
        model=lambda w: EVALUATED_MODEL if w.model == "base" else TRAINED_MODEL.format(**w),
        next_video=lambda w: f"results/prompts/{EVAL_ISSUES[w.short]}/next_video",
        opinion=lambda w: f"results/prompts/{EVAL_ISSUES[w.short]}/opinion",
    output:
        predictions="results/eval/{model}_{short}/{split}/predictions.jsonl",
        metrics="results/eval/{model}_{short}/{split}/metrics.json",
    wildcard_constraints:
        model="[A-Za-z0-9_-]+",
        short="gun|wage",
        split="train|validation|test",
    params:
        prompts=lambda w: f"results/prompts/{EVAL_ISSUES[w.short]}",
        out="results/eval/{model}_{short}/{split}",
        grail=GRAIL,
        flags=f"{EVALUATE_FLAGS} --max-rows {EVALUATE.get('max_rows', 0)}",
    log:
        "results/logs/evaluate_{model}_{short}_{split}.log",
    threads: 2
    resources:
        mem_mb=8000,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} evaluate --model {input.model:q} --model-name {wildcards.model} --prompts {params.prompts:q} "
        "--split {wildcards.split} --out {params.out:q} {params.flags} > {log} 2>&1"


rule external_prompts:
    input:
        lambda w: EXTERNAL.get(w.task, f"../shared/real/{w.task}_study2.jsonl"),
    output:
        directory("results/prompts/external/{task}"),
    params:
        grail=GRAIL,
    wildcard_constraints:
        task="next_video|opinion",
    log:
        "results/logs/external_prompts_{task}.log",
    resources:
        mem_mb=2000,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} prompts import --jsonl {input:q} --out {output:q} > {log} 2>&1"


rule evaluate_external:
    input:
        model=lambda w: (EVALUATED_MODEL if w.model == "base"
                         else TRAINED_MODEL.format(model=w.model, short=EXTERNAL.get("issue", "wage"))),
        next_video="results/prompts/external/next_video",
        opinion="results/prompts/external/opinion",
    output:
        predictions="results/eval/{model}_external/test/predictions.jsonl",
        metrics="results/eval/{model}_external/test/metrics.json",
    wildcard_constraints:
        model="[A-Za-z0-9_-]+",
    params:
        out="results/eval/{model}_external/test",
        # No train split in an external dataset: the position and global-mean baselines are
        # learned on the evaluated rows (metrics.json records this).
        grail=GRAIL,
        flags=f"{EVALUATE_FLAGS} --max-rows {EXTERNAL.get('max_rows', 0)}",
    log:
        "results/logs/evaluate_{model}_external.log",
    threads: 2
    resources:
        mem_mb=8000,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} evaluate --model {input.model:q} --model-name {wildcards.model} --prompts results/prompts/external "
        "--split test --out {params.out:q} {params.flags} > {log} 2>&1"
