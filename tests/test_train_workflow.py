"""The real `sft` and `train` rules through snakemake on the tiny model (one sft step, then one GRPO
step and one MaxEnt-GRPO step from sft's adapter), in a scratch workdir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_train import make_prompt_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_snakemake_train_rule_runs_the_cli_on_the_tiny_model(tiny_model_dir, tmp_path):
    work = tmp_path / "work"
    (work / "config" / "recipes").mkdir(parents=True)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    # The trainers whose recipes this copy holds (a listed trainer without one stops the plan).
    config["train"] = {**config.get("train", {}), "max_steps": 1, "threads": 1, "trainers": ["sft", "grpo", "maxent"],
                       "overrides": {"report_to": "none", "save_steps": 1}}
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    recipe = yaml.safe_load((ROOT / "config" / "recipes" / "grpo.yaml").read_text())
    recipe.update(per_device_train_batch_size=2, num_generations=2, max_completion_length=8)
    (work / "config" / "recipes" / "grpo.yaml").write_text(yaml.safe_dump(recipe))
    # MaxEnt-GRPO with the seed launcher's flags, through the same rule, from the same sft adapter.
    maxent = yaml.safe_load((ROOT / "config" / "recipes" / "maxent.yaml").read_text())
    maxent.update(per_device_train_batch_size=2, num_generations=2, max_completion_length=8, maxent_tau=0.5,
                  maxent_q_temperature=0.5, maxent_q_epsilon=1e-4, maxent_length_normalize_ref=True,
                  init_kl_coeff=0.05, kl_target=0.01, kl_horizon=10)
    (work / "config" / "recipes" / "maxent.yaml").write_text(yaml.safe_dump(maxent))
    sft = yaml.safe_load((ROOT / "config" / "recipes" / "sft.yaml").read_text())
    sft.update(per_device_train_batch_size=2)
    (work / "config" / "recipes" / "sft.yaml").write_text(yaml.safe_dump(sft))
    shutil.copytree(tiny_model_dir, work / "results" / "models" / "base")
    make_prompt_dataset(work / "results" / "prompts" / "gun_control" / "next_video", rows=6)

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    target = "results/train/grpo_gun/final"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d", str(work), "--cores", "1",
         target, "results/train/maxent_gun/final", "--rerun-triggers", "mtime"],
        capture_output=True, text=True, env=env, timeout=600)
    log = work / "results" / "logs" / "train_grpo_gun.log"
    assert result.returncode == 0, result.stderr[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
    out = work / "results" / "train" / "grpo_gun"
    assert (out / "final" / "adapter_config.json").is_file()
    sft_state = json.loads((work / "results" / "train" / "sft_gun" / "trainer_state.json").read_text())
    assert sft_state["global_step"] == 1  # the DAG trained sft first
    provenance = json.loads((out / "final" / "grail_sim.json").read_text())
    assert provenance["start_model"] == "results/train/sft_gun/final"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/answer_accuracy/mean" in row for row in rows)
    resolved = yaml.safe_load((out / "resolved_recipe.yaml").read_text())
    assert resolved["trainer"] == "grpo" and resolved["values"]["max_steps"] == 1 and resolved["values"]["report_to"] == []
    maxent_rows = [json.loads(line) for line in (work / "results" / "train" / "maxent_gun" / "metrics.jsonl")
                   .read_text().splitlines()]
    assert any("maxent/weight_entropy" in row and "beta" in row and "kl" in row for row in maxent_rows)
    maxent_provenance = json.loads((work / "results" / "train" / "maxent_gun" / "final" / "grail_sim.json").read_text())
    assert maxent_provenance["trainer"] == "maxent"
    assert maxent_provenance["start_model"] == "results/train/sft_gun/final"
