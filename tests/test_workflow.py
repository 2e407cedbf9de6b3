"""The Snakemake DAG: both profiles dry-run with no scheduler present, and the lint is clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _snakemake(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Rules call the `grail-sim` entry point of this interpreter's environment.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _dry_run_jobs(output: str) -> dict[str, int]:
    jobs, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                jobs[parts[0]] = int(parts[1])
            elif jobs:
                break
    return jobs


# Every stage from the demo capsule to the portfolio, for the default config (issue gun; sft, then
# grpo and grail from sft's model; base as the zero-shot reference; the laptop run's test split).
DEFAULT_DAG = {"model": 1, "model_smoke": 1, "demo_capsule": 1, "clean": 1, "prompts": 1, "sft": 1, "train": 2,
               "evaluate": 4, "report": 4, "portfolio": 1, "all": 1}


def test_local_profile_dry_run_plans_the_whole_default_dag():
    result = _snakemake("--profile", "profiles/local", "-n", "--forceall")
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = _dry_run_jobs(result.stdout + result.stderr)
    jobs.pop("total", None)
    assert jobs == DEFAULT_DAG


def test_base_answers_every_task_and_a_trained_model_the_choice_only():
    """No trainer learns opinion: by default only base's evaluation asks for the opinion prompts;
    `evaluate.trained_model_tasks` adds them to a trained model's, and reruns only those."""
    planned = _snakemake("--profile", "profiles/local", "-n", "--forceall", "-p",
                         "results/eval/base_gun/test/metrics.json", "results/eval/sft_gun/test/metrics.json")
    assert planned.returncode == 0, planned.stderr + planned.stdout
    commands = [line for line in planned.stdout.splitlines() if " evaluate --model " in line]
    tasks = {("base" if "--model-name base" in line else "sft"): line.split("--tasks ")[1].split(" --")[0]
             for line in commands}
    assert tasks == {"base": "next_video opinion", "sft": "next_video"}
    both = _snakemake("--profile", "profiles/local", "-n", "--forceall", "-p", "results/eval/sft_gun/test/metrics.json",
                      "--config", "evaluate={trained_model_tasks: [next_video, opinion]}")
    assert both.returncode == 0, both.stderr + both.stdout
    assert "--tasks next_video opinion" in both.stdout


def test_rl_trainers_start_from_sft_unless_configured_otherwise():
    """model -> sft -> grpo: the RL rule's starting model is sft's final model (train.start_from)."""
    target = "results/train/grpo_gun/final"
    planned = _snakemake("--profile", "profiles/local", "-n", "--forceall", "-p", target)
    assert planned.returncode == 0, planned.stderr + planned.stdout
    assert {"sft", "train"} <= _planned(planned.stdout + planned.stderr)
    assert "--model results/train/sft_gun/final" in planned.stdout
    from_base = _snakemake("--profile", "profiles/local", "-n", "--forceall", "-p", target,
                           "--config", "train={start_from: base}")
    assert from_base.returncode == 0, from_base.stderr + from_base.stdout
    assert "sft" not in _planned(from_base.stdout + from_base.stderr)
    assert "--model results/models/base" in from_base.stdout


def test_the_math_target_plans_its_own_dag_outside_the_default_one():
    """reports/math_grpo.md: problems, sft from the base model, grpo from sft, the three models
    evaluated (zero-shot base included) and the report; math.start_from: base skips sft."""
    planned = _snakemake("--profile", "profiles/local", "-n", "--forceall", "-p", "reports/math_grpo.md")
    output = planned.stdout + planned.stderr
    assert planned.returncode == 0, output
    jobs = _dry_run_jobs(output)
    jobs.pop("total", None)
    assert jobs == {"model": 1, "math_prompts": 1, "math_train": 2, "evaluate_math": 3, "report_math": 1}
    assert "--config config/recipes/math/grpo.yaml" in planned.stdout
    assert "--model results/train/math_sft/final" in planned.stdout
    from_base = _snakemake("--profile", "profiles/local", "-n", "--forceall", "reports/math_grpo.md",
                           "--config", "math={start_from: base}")
    jobs = _dry_run_jobs(from_base.stdout + from_base.stderr)
    assert from_base.returncode == 0 and jobs["math_train"] == 1 and jobs["evaluate_math"] == 2


def test_slurm_profile_dry_run_without_slurm():
    # `--sdm env-modules` replaces the profile's conda deployment: conda is not installable here
    # and a conda dry run needs the binary (no rule uses env modules, so nothing changes).
    result = _snakemake("--profile", "profiles/slurm", "-n", "--forceall", "--sdm", "env-modules")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "slurm" in result.stdout + result.stderr
    jobs = _dry_run_jobs(result.stdout + result.stderr)
    jobs.pop("total", None)
    # config/cluster.yaml (the profile's overlay) scores both splits; the laptop run test only.
    assert jobs == {**DEFAULT_DAG, "evaluate": 8}


def _parsed(recipe: Path, out: Path):
    """The recipe as `grail-sim train --config RECIPE` parses it on this machine (TRL's TrlParser,
    grail_sim.training.parser): with the run defaults under the file, whose `use_cpu` lets TRL accept a
    GPU recipe's bf16 on a machine without CUDA (the run itself would stop there, naming bf16)."""
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    return parse_recipe(["--config", str(recipe), "--dataset", "prompts", "--model", "model", "--out", str(out)],
                        defaults=run_defaults)


def test_the_used_by_command_plans_gpu_recipes_with_vllm_and_gpu_resources(tmp_path):
    """`snakemake --profile profiles/slurm reports/grail_gun.md`, dry run with commands: the profile's
    config/cluster.yaml switches training to config/recipes/gpu/ (bf16, vLLM server mode) and the
    rules that train and evaluate to envs/grail-gpu.yaml, with GPUs requested per rule."""
    result = _snakemake("--profile", "profiles/slurm", "-n", "--forceall", "-p", "reports/grail_gun.md",
                        "--sdm", "env-modules")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    commands = [line for line in output.splitlines() if "grail_sim.cli train --config " in line]
    recipes = sorted(line.split("--config ")[1].split()[0] for line in commands)
    assert any("--server-log results/logs/train_grail_gun.vllm.log" in line for line in commands)
    assert recipes == ["config/recipes/gpu/grail.yaml", "config/recipes/gpu/sft.yaml"]
    recipe = _parsed(ROOT / "config" / "recipes" / "gpu" / "grail.yaml", tmp_path / "out")
    grpo = recipe.config
    assert grpo.use_vllm is True and grpo.vllm_mode == "server" and grpo.bf16 is True
    assert recipe.model.dtype == "bfloat16" and grpo.trainer == "grail" and grpo.uses_gail
    blocks = output.split("\n\n")
    gpus = {rule: [block for block in blocks if f"rule {rule}:" in block and "gpu=" in block]
            for rule in ("sft", "train", "evaluate")}
    assert all(gpus.values()), gpus
    assert all("gpu=2" in block for block in gpus["train"]) and all("gpu=1" in block for block in gpus["sft"])
    evaluate = [line for line in output.splitlines() if "grail_sim.cli evaluate" in line]
    assert evaluate and all('"generate_rows": 0' in line and '"dtype": "bfloat16"' in line for line in evaluate)


def test_account_and_partition_reach_every_job_beside_the_profile_resources():
    result = _snakemake("--profile", "profiles/slurm", "-n", "--forceall", "reports/grail_gun.md", "--sdm",
                        "env-modules", "--config", "slurm={account: lab42, partition: gpu-a}")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    lines = [line for line in output.splitlines() if line.strip().startswith("resources:")]
    assert lines and all("slurm_account=lab42" in line and "slurm_partition=gpu-a" in line and "runtime=" in line
                         for line in lines)


def _planned_resources(output: str) -> list[tuple[str, str]]:
    """(rule, resources line) of every job a dry run printed."""
    planned, rule = [], None
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith(("rule ", "localrule ")) and stripped.endswith(":"):
            rule = stripped.split()[1].rstrip(":")
        elif stripped.startswith("resources:") and rule:
            planned.append((rule, stripped))
            rule = None
    return planned


def _rules_on_the_model_env() -> set[str]:
    """Rules whose software env is MODEL_ENV: under compute: gpu they run a GPU recipe or evaluate in bf16."""
    import re

    found = set()
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        for name, body in re.findall(r"(?m)^\s*rule (\w+):(.*?)(?=^\s*rule \w+:|\Z)", path.read_text(), flags=re.S):
            if re.search(r"conda:\s*\n\s*MODEL_ENV", body):
                found.add(name)
    return found


def test_every_rule_that_runs_a_gpu_recipe_asks_for_a_gpu(tmp_path):
    """The math rules ran GPU recipes (bf16, vLLM) without a GPU and stopped at once: every rule on the
    GPU env asks for GPUs under compute: gpu, and none does under compute: cpu."""
    gpu_rules = _rules_on_the_model_env()
    assert {"sft", "train", "evaluate", "math_train", "evaluate_math", "evaluate_external", "simulate"} <= gpu_rules
    for name in ("a.jsonl", "b.jsonl"):  # a user's own files
        (tmp_path / name).write_text("")
    external = ["--config", f"evaluate={{external: {{next_video: {tmp_path}/a.jsonl, opinion: {tmp_path}/b.jsonl}}}}"]
    targets = ["reports/grail_gun.md", "reports/math_grpo.md", "results/eval/sft_external/test/metrics.json",
               "reports/simulation_gun.md"]
    for compute in ("gpu", "cpu"):
        result = _snakemake("--profile", "profiles/slurm", "-n", "--forceall", *targets, "--sdm", "env-modules",
                            *external, f"compute={compute}")
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-3000:]
        planned = _planned_resources(output)
        assert {rule for rule, _ in planned} >= gpu_rules, planned
        for rule, resources in planned:
            asks = "gpu=" in resources
            assert asks == (compute == "gpu" and rule in gpu_rules), (compute, rule, resources)
            assert "cpus_per_task" not in resources, "CPUs come from the rule's threads"


def test_every_gpu_recipe_loads_and_the_cpu_set_stays_on_cpu(tmp_path):
    recipes = ROOT / "config" / "recipes"
    for name in ("sft", "grpo", "grail", "maxent", "grpo-entropy"):
        gpu = _parsed(recipes / "gpu" / f"{name}.yaml", tmp_path / "gpu" / name)
        cpu = _parsed(recipes / f"{name}.yaml", tmp_path / "cpu" / name)
        assert gpu.trainer == cpu.trainer == name
        assert gpu.config.bf16 is True and gpu.model.dtype == "bfloat16"
        assert cpu.config.bf16 is False and cpu.model.dtype == "float32"
        if name != "sft":
            assert gpu.config.use_vllm is True and cpu.config.use_vllm is False
    for name in ("sft", "grpo"):
        gpu = _parsed(recipes / "gpu" / "math" / f"{name}.yaml", tmp_path / "gpu" / "math" / name)
        cpu = _parsed(recipes / "math" / f"{name}.yaml", tmp_path / "cpu" / "math" / name)
        assert gpu.trainer == cpu.trainer == name
        assert gpu.config.bf16 is True and cpu.config.bf16 is False


def test_lint_is_clean():
    result = _snakemake("--lint")
    output = result.stdout + result.stderr
    assert "Lints for" not in output, output
    assert result.returncode == 0, output


def _planned(output: str) -> set[str]:
    jobs = _dry_run_jobs(output)
    jobs.pop("total", None)
    return set(jobs)


def test_editing_a_stage_module_reruns_that_stage_and_below_only(tmp_path, tiny_model_dir):
    """Each rule's `code` param hashes its stage's modules: an upgrade reruns exactly what changed."""
    import shutil

    import yaml

    for name in ("Snakefile", "workflow", "config", "envs", "src"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    config = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    config["model"]["name_or_path"] = str(tiny_model_dir)  # copied, not converted: seconds
    config["data"]["demo"] = {"participants": 40, "seed": 3}
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    target = "results/prompts/gun_control/stats.json"
    built = _snakemake("--cores", "1", target, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    assert "Nothing to be done" in _snakemake("--cores", "1", "-n", target, cwd=tmp_path).stdout

    def plan_after_editing(module: str) -> set[str]:
        path = tmp_path / "src" / "grail_sim" / module
        path.write_text(path.read_text() + "\n# an upgrade\n")
        result = _snakemake("--cores", "1", "-n", target, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        path.write_text(path.read_text().removesuffix("\n# an upgrade\n"))
        return _planned(result.stdout + result.stderr)

    assert plan_after_editing("prompts/render.py") == {"prompts"}
    assert plan_after_editing("data/clean.py") == {"clean", "prompts"}
    assert plan_after_editing("model/embedded.py") == {"model", "prompts"}
    assert plan_after_editing("training/rewards.py") == set()  # not upstream of prompts


def test_a_trainer_without_a_recipe_stops_the_plan_naming_the_file():
    """Each trainer needs a recipe in the compute profile's set: a missing one stops the run at
    planning, before any job, instead of failing its job after the others ran."""
    result = _snakemake("--profile", "profiles/local", "-n", "--config", "train={trainers: [sft, nope]}")
    output = result.stderr + result.stdout
    assert result.returncode != 0
    assert "train.trainers lists 'nope' but config/recipes/nope.yaml does not exist (compute: cpu" in output


def test_external_rules_exist_only_when_configured():
    result = _snakemake("--profile", "profiles/local", "-n", "results/eval/base_external/test/metrics.json")
    assert result.returncode != 0
    assert "MissingRuleException" in result.stderr + result.stdout or "No rule to produce" in result.stderr


def _documented_snakemake_commands() -> list[tuple[str, str]]:
    """(file, command) for every `snakemake ...` line of a bash block in the README and docs/."""
    import re
    import shlex

    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", path.read_text(), flags=re.S):
            text = block.replace("\\\n", " ")
            for line in text.splitlines():
                line = line.split(" #")[0].strip()
                if line.startswith("snakemake "):
                    found.append((path.name, line))
    assert found, "no snakemake command found in the docs"
    return [(name, line) for name, line in found if shlex.split(line)]


@pytest.mark.parametrize(("source", "command"), _documented_snakemake_commands())
def test_documented_snakemake_commands_dry_run(source, command, tmp_path):
    """Every snakemake command the docs show plans without error as a dry run (`-n`)."""
    import shlex

    for name in ("next_video_study2.jsonl", "opinion_study2.jsonl"):  # a user's own files
        (tmp_path / name).write_text("")
    args = [arg.replace("/path/to/", f"{tmp_path}/") for arg in shlex.split(command)[1:]]
    if "profiles/slurm" in args and "--sdm" not in args and "--software-deployment-method" not in args:
        # A dry run with conda deployment needs the conda binary, which this machine cannot have;
        # docs/troubleshooting.md gives users without conda this same flag.
        args += ["--sdm", "env-modules"]
    result = _snakemake(*args, "-n")
    assert result.returncode == 0, f"{source}: {command}\n{result.stderr[-2000:]}"


def test_troubleshooting_documents_the_flag_for_a_cluster_without_conda():
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    assert "--sdm env-modules" in text and "cores have to be specified" in text


def test_slurm_profile_reads_job_states_with_squeue():
    """With sacct as the status command and no accounting (slurmdbd), the plugin dropped every job
    and Snakemake waited forever; squeue works with or without accounting."""
    import yaml

    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["slurm-status-command"] == "squeue"
    assert "set-resources" not in profile and "cpus_per_task" not in profile["default-resources"]
