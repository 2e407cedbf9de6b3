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
TRAIN = config["train"]
# Keys of the train section that only shape the DAG: changing them must not rerun a finished job;
# `train.overrides` reaches each rule as the overrides its recipe reads (train_json below).
TRAIN_DAG_KEYS = ["train.trainers", "train.mem_mb", "train.start_from", "train.overrides"]


def recipe_path(trainer):
    return f"{RECIPE_DIR}/{trainer}.yaml"


# Every trainer the DAG may run has a recipe in the compute profile's set, or the run stops here,
# before any job, naming the file (a missing GPU recipe used to fail its job after hours of queueing).
for _trainer in {*TRAIN["trainers"], *([TRAIN["start_from"]] if TRAIN["start_from"] != "base" else [])}:
    if not os.path.isfile(recipe_path(_trainer)):
        raise WorkflowError(f"grail-sim: train.trainers lists {_trainer!r} but {recipe_path(_trainer)} does not exist "
                            f"(compute: {config['compute']} reads {RECIPE_DIR}/)")


def train_json(recipe):
    """The train section for the rule that trains `recipe`: `train.overrides` cut to those the recipe
    reads, so setting a key (GAIL_WEIGHT, num_generations) reruns exactly the trainers that read it."""
    sections = {"train": json.loads(json.dumps(TRAIN))}
    for dotted in TRAIN_DAG_KEYS:
        sections["train"].pop(dotted.split(".", 1)[1], None)
    overrides = TRAIN["overrides"]
    if overrides:  # reading TRL's fields costs seconds: only when there is something to filter
        read = set(overrides_read_by(recipe, grail_config.recipe_overrides(overrides)))
        overrides = {key: value for (key, value), text in zip(overrides.items(),
                     grail_config.recipe_overrides(overrides)) if text in read}
    sections["train"]["overrides"] = overrides
    return shlex.quote(json.dumps(sections, sort_keys=True))


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
        config=train_json(recipe_path("sft")),
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
        "{params.grail} train --recipe {input.recipe:q} --dataset {input.prompts:q} --model {input.model:q} "
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
        "{params.grail} train --recipe {input.recipe:q} --dataset {input.prompts:q} --model {input.model:q} "
        "--out {params.out:q} --threads {threads} --server-log {log.vllm:q} --config-json {params.config} "
        "> {log.main:q} 2>&1"
