# Shared by every rule: configuration (validated once, defaults from the package's schema),
# environment overrides, the issue map, the JSON each stage's CLI reads, and code versions.
import glob
import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The package is imported from this checkout, so the Snakefile needs no install of its own.
SRC = Path(workflow.basedir) / "src"
sys.path.insert(0, str(SRC))
from grail_sim import __version__ as GRAIL_VERSION  # noqa: E402
from grail_sim import cluster as grail_cluster  # noqa: E402
from grail_sim import config as grail_config  # noqa: E402
from grail_sim.code_version import code_version as stage_code_version  # noqa: E402
from grail_sim.data.demo_capsule import check_leaning_shares  # noqa: E402
from grail_sim.evaluation.math_eval import EVALUATE_KEYS as MATH_EVALUATE_KEYS  # noqa: E402
from grail_sim.evaluation.math_eval import EVALUATION_ONLY_KEYS as MATH_EVALUATION_ONLY_KEYS  # noqa: E402
from grail_sim.issues import SHORT_TO_ISSUE  # noqa: E402
from grail_sim.training.recipe import recipe_chain  # noqa: E402
from grail_sim.simulation.sources import BASELINES as SIMULATION_BASELINES  # noqa: E402
from grail_sim.simulation.sources import EVALUATE_KEYS as SIMULATE_EVALUATE_KEYS  # noqa: E402
from grail_sim.simulation.sources import OBSERVED, ORACLE  # noqa: E402

# Environment variables of the earlier reference become ordinary config values here, before
# validation, so Snakemake sees them (params) and provenance records them.
for message in grail_config.apply_environment(config, os.environ):
    logger.info(f"grail-sim: {message}")

# A nested --config value arrives as text (Snakemake reads it with YAML's BaseLoader): `2` for an
# integer key becomes 2 again before validation.
grail_config.typed_command_line_values(config)
validate(config, str(grail_config.SCHEMA_PATH))
# What the schema cannot say: the demo population's shares sum to 1 (checked before any job runs).
if config["data"]["source"] == "demo":
    try:
        check_leaning_shares(config["data"]["demo"]["leaning_shares"])
    except ValueError as err:
        raise WorkflowError(f"grail-sim: {err}") from None

# Each job runs grail-sim from this checkout's src/ with the job environment's `python`; a conda
# job env (envs/*.yaml) holds the dependencies but not the package itself (conda's pip runs inside
# .snakemake/conda/, where no relative path reaches the repository), and a venv with the package
# installed runs the same code.
GRAIL = f"PYTHONPATH={shlex.quote(str(SRC))}${{PYTHONPATH:+:$PYTHONPATH}} python -m grail_sim.cli"
# The compute profile (`compute`; the slurm profile sets gpu through config/cluster.yaml) picks the
# recipe set and the software env of the rules that train and evaluate; the others stay on CPU.
RECIPE_DIR = {"cpu": "config/recipes", "gpu": "config/recipes/gpu"}[config["compute"]]
MODEL_ENV = {"cpu": "../../envs/grail.yaml", "gpu": "../../envs/grail-gpu.yaml"}[config["compute"]]
# `slurm.account` and `slurm.partition` reach every rule as resources, beside the profile's own
# default-resources (a --default-resources on the command line would replace those); empty locally.
SLURM_RESOURCES = {f"slurm_{key}": config["slurm"][key] for key in ("account", "partition") if config["slurm"][key]}


def model_env_resources(rule_name, **cpu_resources):
    """The resources of the rules that train and evaluate (those on MODEL_ENV). Under `compute: gpu`,
    `slurm.gpu_jobs` by rule name (GPUs, memory, runtime; a key left out keeps its schema default)
    replaces `cpu_resources`; under `compute: cpu` they ask for no GPU. They live in the workflow's
    config, not the profile, so `--configfiles config/config.yaml` (a CPU-only cluster) or one
    `--config` value changes them without replacing the profile's resources."""
    resources = {**cpu_resources, **SLURM_RESOURCES}
    if config["compute"] == "gpu":
        job = grail_cluster.gpu_job(config, rule_name)
        resources.update(mem_mb=job["mem_mb"], runtime=job["runtime"])
        if job["gpus"]:
            resources["gpu"] = job["gpus"]
    return resources


# A job larger than every node of its partition would be accepted by sbatch and stay PENDING forever
# without a message: before a SLURM run submits anything, compare the largest jobs with sinfo's nodes.
onstart:
    if workflow.executor_plugin is not None and workflow.executor_plugin.cli_prefix == "slurm":
        nodes = grail_cluster.partition_nodes(config["slurm"]["partition"])
        try:
            grail_cluster.check_jobs_fit(grail_cluster.largest_requests(config), nodes or [],
                                         config["slurm"]["partition"])
        except grail_config.ConfigError as err:
            raise WorkflowError(f"grail-sim: {err}") from None


ISSUES = SHORT_TO_ISSUE  # short name of targets (gun, wage) -> long name of prompt folders
MATH = config["math"]  # the math task's section (workflow/rules/math.smk)
# What an evaluation job asks for on CPU; the pre-submission check reads the same values.
EVALUATION_THREADS = grail_cluster.EVALUATION_THREADS
EVALUATION_MEM_MB = grail_cluster.EVALUATION_MEM_MB


# Keys of the train section that only shape the DAG (changing them must not rerun a finished job),
# and `train.overrides`, which reaches each training rule as the overrides its recipe reads.
TRAIN_RULE_EXCLUDED_KEYS = ["train.trainers", "train.mem_mb", "train.start_from", "train.overrides"]


def recipe_path(trainer):
    return f"{RECIPE_DIR}/{trainer}.yaml"


def check_trainer_recipes():
    """Every trainer the DAG may run has a recipe in the compute profile's set, or the run stops
    before any job, naming the file (a missing GPU recipe used to fail its job after the others ran)."""
    start = config["train"]["start_from"]
    for trainer in sorted({*config["train"]["trainers"], *([start] if start != "base" else [])}):
        if not os.path.isfile(recipe_path(trainer)):
            raise WorkflowError(f"grail-sim: train.trainers lists {trainer!r} but {recipe_path(trainer)} does not "
                                f"exist (compute: {config['compute']} reads {RECIPE_DIR}/)")


check_trainer_recipes()


def train_json(recipe):
    """The train section of the job training `recipe`, with `train.overrides` cut to those the recipe
    reads, so setting a key (GAIL_WEIGHT, num_generations) reruns exactly the trainers that read it."""
    sections = stage_sections("train", exclude=TRAIN_RULE_EXCLUDED_KEYS)
    overrides = config["train"]["overrides"]
    if overrides:  # reading TRL's fields costs seconds: only when there is something to filter
        from grail_sim.training.parser import overrides_read_by

        overrides = overrides_read_by(recipe, overrides)
    sections["train"]["overrides"] = overrides
    return shlex.quote(json.dumps(sections, sort_keys=True))


def stage_sections(stage, exclude=()):
    """A copy of the config sections `stage` reads, less the dotted keys in `exclude`: those this
    rule does not use, so that changing them does not rerun it."""
    sections = {name: json.loads(json.dumps(config[name])) for name in grail_config.STAGE_SECTIONS[stage]}
    for dotted in exclude:
        *parents, leaf = dotted.split(".")
        node = sections
        for key in parents:
            node = node[key]
        node.pop(leaf, None)
    return sections


def stage_json(stage, exclude=()):
    """`stage_sections` as one shell-quoted JSON argument (`--config-json`)."""
    return shlex.quote(json.dumps(stage_sections(stage, exclude), sort_keys=True))


def code_version(stage):
    """The package version plus a hash of every file the stage's CLI runs (its import closure, the
    schema, report templates): a rule's `code` param, so upgrading grail-sim reruns exactly the
    stages whose code changed and the stages below them (grail_sim.code_version)."""
    return stage_code_version(stage, GRAIL_VERSION)


def start_model(trainer, short):
    """The model a trainer starts from, the input `model` of training: the base model for the start stage itself
    (sft) or when `train.start_from` is `base`, else that stage's final model."""
    start = config["train"]["start_from"]
    if start == "base" or trainer == start:
        return "results/models/base"
    return f"results/train/{start}_{short}/final"


def math_start_model(trainer):
    """The model a math trainer starts from: the base for sft (or `math.start_from: base`), else the
    start trainer's final model."""
    start = MATH["start_from"]
    if start == "base" or trainer == start:
        return "results/models/base"
    return f"results/train/math_{start}/final"


def math_models(trainer):
    """The models a math report compares: the base (zero-shot), the start model and the trainer's."""
    start = MATH["start_from"]
    return list(dict.fromkeys(["base", *([start] if start != "base" else []), trainer]))


def evaluated_model(model, short):
    """`base` is the untrained reference; any other name is a trainer's final model (Contract 3)."""
    return "results/models/base" if model == "base" else f"results/train/{model}_{short}/final"


def final_outputs():
    """The default target: reports of the base model and each trainer (`train.trainers`: sft, grpo,
    grail) on every issue, and the portfolio (`report.models`). The RL trainers start from sft's
    model (`train.start_from`), which is trained even when it is not listed."""
    return [
        "results/models/base_smoke.json",
        *expand("reports/{model}_{short}.md", model=["base", *config["train"]["trainers"]], short=config["issues"]),
        "reports/portfolio.md",
    ]


def evaluated_tasks(model):
    """The tasks an evaluation answers: the untrained base every one of `evaluate.tasks`; a trained
    model those also in `evaluate.trained_model_tasks` (every trainer learns next_video only)."""
    tasks = config["evaluate"]["tasks"]
    if model == "base":
        return list(tasks)
    return [task for task in tasks if task in config["evaluate"]["trained_model_tasks"]]


def simulated_capsule():
    """The capsule whose recommendation trees the simulate stage draws slates from: the demo's, or
    the real one; a pre-cleaned dataset has none, and the simulate rule stops naming it."""
    capsule = {"demo": "results/demo_capsule", "capsule": config["data"].get("capsule_dir")}.get(config["data"]["source"])
    if capsule is None:
        raise WorkflowError("grail-sim: simulate draws slates from a capsule's recommendation trees; "
                            f"data.source: {config['data']['source']} has none (use demo or capsule)")
    return capsule
