# Score and generate (Contract 4) for the untrained base model (every task) and each trained model
# (next_video by default: `evaluate.trained_model_tasks`, common.smk's evaluated_tasks), per issue and
# split, plus an external chat-prompt dataset when `evaluate.external` names one. Scoring covers every
# row by default (`evaluate.score_rows: 0`); generation a seeded sample (`evaluate.generate_rows`).
EVALUATE = config["evaluate"]
EXTERNAL = EVALUATE["external"]
# On the demo the generator's ground truth gives each row's Bayes-optimal choice probabilities:
# the oracle, the ceiling the reports measure every model's recovered share against.
DEMO_TRUTH = "results/demo_capsule/demo_ground_truth.json" if config["data"]["source"] == "demo" else None


rule evaluate:
    input:
        model=lambda w: evaluated_model(w.model, w.short),
        tasks=lambda w: [f"results/prompts/{ISSUES[w.short]}/{task}" for task in evaluated_tasks(w.model)],
        demo_capsule=rules.demo_capsule.output if DEMO_TRUTH else [],
    output:
        scores="results/eval/{model}_{short}/{split}/scores.jsonl",
        predictions="results/eval/{model}_{short}/{split}/predictions.jsonl",
        metrics="results/eval/{model}_{short}/{split}/metrics.json",
    wildcard_constraints:
        model="[A-Za-z0-9_-]+",
        short="|".join(ISSUES),
        split="train|validation|test",
    params:
        prompts=lambda w: f"results/prompts/{ISSUES[w.short]}",
        out="results/eval/{model}_{short}/{split}",
        grail=GRAIL,
        demo_truth=f"--demo-truth {DEMO_TRUTH}" if DEMO_TRUTH else "",
        # The tasks this model answers: a param, so that adding opinion for trained models reruns
        # their evaluations and not base's.
        tasks=lambda w: " ".join(evaluated_tasks(w.model)),
        # `splits` (which splits reports show), `external` and the task lists (the param above) do
        # not change these predictions.
        config=stage_json("evaluate", exclude=["evaluate.splits", "evaluate.external", "evaluate.tasks",
                                               "evaluate.trained_model_tasks"]),
        code=code_version("evaluate"),
    log:
        "results/logs/evaluate_{model}_{short}_{split}.log",
    benchmark:
        "results/benchmarks/evaluate_{model}_{short}_{split}.tsv"
    threads: EVALUATION_THREADS
    resources:
        **model_env_resources("evaluate", mem_mb=EVALUATION_MEM_MB),
    conda:
        MODEL_ENV
    shell:
        "{params.grail} evaluate --model {input.model:q} --model-name {wildcards.model} --prompts {params.prompts:q} "
        "--split {wildcards.split} --tasks {params.tasks} --out {params.out:q} {params.demo_truth} "
        "--config-json {params.config} "
        "> {log:q} 2>&1"


# An external dataset is the user's own file; its rules exist only when both tasks are configured.
if EXTERNAL["next_video"] and EXTERNAL["opinion"]:

    rule external_prompts:
        input:
            lambda w: EXTERNAL[w.task],
        output:
            directory("results/prompts/external/{task}"),
        params:
            grail=GRAIL,
            config=stage_json("prompts"),
            code=code_version("prompts"),
        wildcard_constraints:
            task="next_video|opinion",
        log:
            "results/logs/external_prompts_{task}.log",
        resources:
            mem_mb=2000,
            **SLURM_RESOURCES,
        conda:
            "../../envs/grail.yaml"
        shell:
            "{params.grail} prompts import --jsonl {input:q} --out {output:q} --config-json {params.config} "
            "> {log:q} 2>&1"

    rule evaluate_external:
        input:
            model=lambda w: evaluated_model(w.model, EXTERNAL["issue"]),
            next_video="results/prompts/external/next_video",
            opinion="results/prompts/external/opinion",
        output:
            scores="results/eval/{model}_external/test/scores.jsonl",
            predictions="results/eval/{model}_external/test/predictions.jsonl",
            metrics="results/eval/{model}_external/test/metrics.json",
        wildcard_constraints:
            model="[A-Za-z0-9_-]+",
        params:
            out="results/eval/{model}_external/test",
            # No train split in an external dataset: the likelihood baselines are cross-fitted on
            # the evaluated rows, the generation baselines learned on them (metrics.json records both).
            grail=GRAIL,
            config=stage_json("evaluate", exclude=["evaluate.splits"]),
            code=code_version("evaluate"),
        log:
            "results/logs/evaluate_{model}_external.log",
        threads: EVALUATION_THREADS
        resources:
            **model_env_resources("evaluate_external", mem_mb=EVALUATION_MEM_MB),
        conda:
            MODEL_ENV
        shell:
            "{params.grail} evaluate --model {input.model:q} --model-name {wildcards.model} "
            "--prompts results/prompts/external --split test --external --out {params.out:q} "
            "--config-json {params.config} > {log:q} 2>&1"
