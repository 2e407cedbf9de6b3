# The verifiable math task (#15), beside the viewer DAG and not part of the default target:
#   snakemake --profile profiles/local reports/math_grpo.md
# math_prompts writes the problems (the seeded generator, or `math.dataset` mapped onto the math
# contract); math_train trains each recipe of {RECIPE_DIR}/math/ (sft from the base model, every
# other trainer from `math.start_from`'s final model); evaluate_math scores greedy pass@1 and sampled
# pass@k of the base (zero-shot), the start model and the trained one; report_math sets them side by
# side with the trained model's paired gains (docs/math.md).
MATH_RECIPES = f"{RECIPE_DIR}/math"
MATH_TRAINERS = sorted(Path(path).stem for path in glob.glob(f"{MATH_RECIPES}/*.yaml"))
# evaluate-math reads only these evaluate keys, so editing the others does not rerun it.
MATH_EVALUATE_EXCLUDE = [f"evaluate.{key}" for key in config["evaluate"] if key not in MATH_EVALUATE_KEYS]
# Keys of the math section the problems do not depend on (the DAG's shape, and the evaluation's own).
MATH_PROMPT_EXCLUDE = [f"math.{key}" for key in ("start_from", "split", *MATH_EVALUATION_ONLY_KEYS)]


rule math_prompts:
    output:
        directory("results/prompts/math"),
    params:
        grail=GRAIL,
        config=stage_json("prompts math", exclude=MATH_PROMPT_EXCLUDE),
        code=code_version("prompts"),
    log:
        "results/logs/math_prompts.log",
    resources:
        mem_mb=2000,
        **SLURM_RESOURCES,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} prompts math --out {output:q} --config-json {params.config} > {log:q} 2>&1"


rule math_train:
    input:
        prompts=rules.math_prompts.output,
        model=lambda w: math_start_model(w.trainer),
        recipe=lambda w: f"{MATH_RECIPES}/{w.trainer}.yaml",
        recipe_bases=lambda w: recipe_chain(f"{MATH_RECIPES}/{w.trainer}.yaml")[1:],
    output:
        final=directory("results/train/math_{trainer}/final"),
        state="results/train/math_{trainer}/trainer_state.json",
        metrics="results/train/math_{trainer}/metrics.jsonl",
    wildcard_constraints:
        trainer="|".join(MATH_TRAINERS) or "(?!)",
    params:
        out="results/train/math_{trainer}",
        grail=GRAIL,
        config=lambda w: train_json(f"{MATH_RECIPES}/{w.trainer}.yaml"),
        code=code_version("train"),
    log:
        main="results/logs/train_math_{trainer}.log",
        vllm="results/logs/train_math_{trainer}.vllm.log",
    benchmark:
        "results/benchmarks/train_math_{trainer}.tsv"
    threads: TRAIN["threads"]
    resources:
        **model_env_resources("math_train", mem_mb=TRAIN["mem_mb"]),
    conda:
        MODEL_ENV
    shell:
        "{params.grail} train --config {input.recipe:q} --dataset {input.prompts:q} --model {input.model:q} "
        "--out {params.out:q} --threads {threads} --server-log {log.vllm:q} --config-json {params.config} "
        "> {log.main:q} 2>&1"


rule evaluate_math:
    input:
        model=lambda w: rules.model.output[0] if w.model == "base" else f"results/train/math_{w.model}/final",
        prompts=rules.math_prompts.output,
    output:
        metrics="results/eval/math_{model}/{split}/math_metrics.json",
        predictions="results/eval/math_{model}/{split}/math_predictions.jsonl",
    wildcard_constraints:
        model="|".join(["base", *MATH_TRAINERS]),
        split="validation|test",
    params:
        out="results/eval/math_{model}/{split}",
        grail=GRAIL,
        config=stage_json("evaluate-math", exclude=MATH_EVALUATE_EXCLUDE + ["math.start_from", "math.split"]),
        code=code_version("evaluate-math"),
    log:
        "results/logs/evaluate_math_{model}_{split}.log",
    benchmark:
        "results/benchmarks/evaluate_math_{model}_{split}.tsv"
    threads: EVALUATION_THREADS
    resources:
        **model_env_resources("evaluate_math", mem_mb=EVALUATION_MEM_MB),
    conda:
        MODEL_ENV
    shell:
        "{params.grail} evaluate-math --model {input.model:q} --dataset {input.prompts:q} --split {wildcards.split} "
        "--out {params.out:q} --config-json {params.config} > {log:q} 2>&1"


rule report_math:
    input:
        template=REPORT.get("math_template", f"{PACKAGED_TEMPLATES}/math_report.md.j2"),
        config="config/config.yaml",
        metrics=lambda w: expand(rules.evaluate_math.output.metrics, model=math_models(w.trainer), split=MATH["split"]),
        training=lambda w: f"results/train/math_{w.trainer}/metrics.jsonl",
    output:
        report="reports/math_{trainer}.md",
        figures=directory("reports/figures/math_{trainer}"),
    wildcard_constraints:
        trainer="|".join(MATH_TRAINERS) or "(?!)",
    params:
        grail=GRAIL,
        evals=lambda w, input: " ".join(shlex.quote(os.path.dirname(path)) for path in input.metrics),
        config=stage_json("report"),
        code=code_version("report"),
    log:
        "results/logs/report_math_{trainer}.log",
    resources:
        mem_mb=2000,
        **SLURM_RESOURCES,
    conda:
        "../../envs/grail.yaml"
    shell:
        "{params.grail} report math --model {wildcards.trainer} --eval {params.evals} "
        "--train-dir results/train/math_{wildcards.trainer} --template {input.template:q} "
        "--provenance-config {input.config:q} --figures {output.figures:q} --config-json {params.config} "
        "--out {output.report:q} > {log:q} 2>&1"
