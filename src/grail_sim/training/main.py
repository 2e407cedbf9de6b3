"""`grail-sim train`: GRPO, GRAIL (GRPO + online discriminator) and MaxEnt-GRPO with TRL's GRPOTrainer.

    grail-sim train --recipe config/recipes/grail.yaml --dataset results/prompts/gun_control/next_video         --model results/models/base --out results/train/grail_gun [--max-steps N] [--set key=value ...]

A recipe is YAML whose keys are TRL 1.16 `GRPOConfig` fields plus this script's own keys
(`SCRIPT_KEYS`); any other key fails naming it. Output (Contract 3 of docs/DESIGN.md):

    OUT/final/               adapter (or full model) + tokenizer + grail_sim.json (base model, recipe)
    OUT/checkpoint-*/        TRL checkpoints; GRAIL adds checkpoint-*/discriminator/
    OUT/trainer_state.json   TRL's state at the end
    OUT/metrics.jsonl        every logged metric, one JSON object per logging step (written at the end;
                             OUT/metrics.live.jsonl grows during training and survives interruptions)
    OUT/resolved_recipe.yaml the recipe after --set, --max-steps and environment overrides
    OUT/discriminator/       GRAIL's final discriminator
    OUT/warmup/              the LoRA adapter after the supervised format warm-up (reused on rerun)

Rerunning with the same OUT resumes from the last complete checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from grail_sim import io
from grail_sim.training.data import load_training_data
from grail_sim.training.recipe import TRAINERS, load_recipe, redact
from grail_sim.training.resume import (
    METRICS_FILE,
    METRICS_LIVE_FILE,
    complete_checkpoints,
    prepare_output,
    run_fingerprint,
    trim_metrics,
)
from grail_sim.training.warmup import quick_accuracy, supervised_warmup

LOG = logging.getLogger("grail_sim.train")


from grail_sim.errors import RecipeError, TrainingDataError
from grail_sim.model.loading import PROVENANCE_FILE


def _make_callbacks(out_dir: Path, discriminator=None):
    from transformers import TrainerCallback

    class JsonlMetrics(TrainerCallback):
        """Appends every `log` call to OUT/metrics.jsonl (flushed per line)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            row = {"step": state.global_step, "epoch": state.epoch}
            for key, value in logs.items():
                if isinstance(value, float) and not math.isfinite(value):
                    value = None
                row[key] = value
            with open(out_dir / METRICS_LIVE_FILE, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, default=str) + "\n")

    class DiscriminatorCheckpoint(TrainerCallback):
        """Saves the discriminator inside each checkpoint folder, so it resumes with the policy."""

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    discriminator.save(folder / "discriminator")

    callbacks = [JsonlMetrics()]
    if discriminator is not None:
        callbacks.append(DiscriminatorCheckpoint())
    return callbacks


def _configure_logging_backends(grpo: dict, out_dir: Path) -> None:
    report_to = grpo.get("report_to", ["wandb"])
    if isinstance(report_to, str):
        report_to = [report_to]
    grpo["report_to"] = report_to
    if "wandb" in report_to:
        # Offline unless the user chose otherwise: no key is needed and nothing leaves the machine.
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(out_dir))
        os.environ.setdefault("WANDB_PROJECT", "grail-sim")
        os.environ.setdefault("WANDB_SILENT", "true")


def _device_defaults(grpo: dict, script: dict) -> str:
    import torch

    has_cuda = torch.cuda.is_available()
    if not has_cuda:
        grpo.setdefault("use_cpu", True)
        for key in ("bf16", "fp16"):
            if grpo.get(key):
                raise RecipeError(f"recipe sets {key}: true but no GPU is available; set it false for CPU runs")
            grpo[key] = False
        grpo.setdefault("gradient_checkpointing", False)
        if grpo.get("use_vllm"):
            raise RecipeError("use_vllm: true needs a GPU (TRL's vLLM weight sync fails on CPU); "
                              "set use_vllm: false")
        if script["dtype"] != "float32":
            LOG.warning("dtype %s on CPU: using float32", script["dtype"])
            script["dtype"] = "float32"
    return "cuda" if has_cuda and not grpo.get("use_cpu") else "cpu"


def train(recipe_path: str, dataset_dir: str, model_dir: str, out_dir: str, *, overrides: list[str] | None = None,
          max_steps: int | None = None, threads: int | None = None) -> dict:
    """Train one policy; returns a summary (also written to OUT/final/grail_sim.json)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from grail_sim.training import rewards as reward_lib

    if threads:
        # More intra-op threads than free cores makes every op spin-wait: on 2 shared cores a
        # discriminator update measured 2.05 s with 2 threads and 0.09 s with 1 (benchmarks/).
        torch.set_num_threads(int(threads))

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Under `accelerate launch` every process runs this function; only rank 0 writes shared files.
    is_main = int(os.environ.get("RANK", "0")) == 0
    script, grpo = load_recipe(recipe_path, overrides, max_steps)
    if script["trainer"] not in TRAINERS:
        LOG.info("trainer label %r (known: %s)", script["trainer"], ", ".join(TRAINERS))

    gail_settings = None
    if script["gail"] is not None:
        from grail_sim.training.discriminator import GailSettings

        try:
            gail_settings = GailSettings.from_recipe(script["gail"])
        except (KeyError, ValueError) as err:
            raise RecipeError(f"recipe {recipe_path}: {err.args[0] if err.args else err}") from None
        script["gail"] = gail_settings.as_dict()
        if not gail_settings.use:
            LOG.info("GAIL disabled (gail.use false / GAIL_USE=0): pure GRPO")
    use_gail = gail_settings is not None and gail_settings.use

    reward_names = list(script["rewards"])
    for name in reward_names:
        if name == "gail":
            raise RecipeError("recipe rewards: 'gail' is added by the gail: section, do not list it")
        try:
            reward_lib.get_reward(name)
        except KeyError as err:
            raise RecipeError(f"recipe {recipe_path}: {err.args[0]}") from None
    weights = grpo.pop("reward_weights", None) or [1.0] * len(reward_names)
    try:
        weights = reward_lib.normalise_weights(weights, reward_names)
    except ValueError as err:
        raise RecipeError(f"recipe {recipe_path}: {err}") from None
    if use_gail:
        reward_names.append("gail")
        weights = reward_lib.normalise_weights(weights + [gail_settings.weight], reward_names)
    grpo["reward_weights"] = weights

    _configure_logging_backends(grpo, out)
    device = _device_defaults(grpo, script)
    grpo.setdefault("logging_steps", 1)
    grpo.setdefault("save_strategy", "steps")
    seed = int(grpo.get("seed", 42))
    grpo["seed"] = seed

    if is_main:
        io.write_text(out / "resolved_recipe.yaml", yaml.safe_dump(
            {"recipe": str(recipe_path), "dataset": str(dataset_dir), "model": str(model_dir),
             "script": script, "grpo_config": redact(grpo)}, sort_keys=True))
    LOG.info("recipe %s -> %s: trainer %s, rewards %s, weights %s", recipe_path, out, script["trainer"],
             reward_names, [round(w, 3) for w in weights])

    data = load_training_data(dataset_dir, script["train_split"], need_grail=use_gail,
                              max_rows=script["max_train_rows"], seed=seed)

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(script["dtype"])
    if dtype is None:
        raise RecipeError(f"recipe dtype {script['dtype']!r}: use float32, bfloat16 or float16")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    except (OSError, ValueError) as err:
        raise TrainingDataError(f"base model folder {model_dir} does not load: {err}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.to(device)

    warmup_dir = out / "warmup"
    if is_main:
        prepare_output(out, run_fingerprint(script, grpo, dataset_dir, model_dir))
    checkpoints = complete_checkpoints(out, need_discriminator=use_gail)
    resume_from = checkpoints[-1] if checkpoints else None
    if resume_from is None and is_main:
        # Steps logged after the warm-up by a run that died before its first checkpoint are redone.
        trim_metrics(out / METRICS_LIVE_FILE, 0)
        if not (warmup_dir / "adapter_config.json").is_file():
            (out / METRICS_LIVE_FILE).unlink(missing_ok=True)
    summary: dict[str, Any] = {"trainer": script["trainer"], "rewards": reward_names, "reward_weights": weights}

    heldout = None
    if int(script["heldout_rows"]) > 0 and resume_from is None:
        heldout = load_training_data(dataset_dir, "validation", need_grail=False, max_rows=None, seed=seed)
        summary["heldout_before"] = quick_accuracy(model, tokenizer, heldout, rows=script["heldout_rows"],
                                                   max_new_tokens=int(grpo.get("max_completion_length", 32)),
                                                   device=device)
        LOG.info("held-out before training: %s", summary["heldout_before"])

    if script["lora"]["enabled"]:
        from peft import LoraConfig, PeftModel, get_peft_model

        lora = script["lora"]
        if (warmup_dir / "adapter_config.json").is_file():
            LOG.info("reusing the warm-up adapter in %s", warmup_dir)
            model = PeftModel.from_pretrained(model, str(warmup_dir), is_trainable=True)
        else:
            model = get_peft_model(model, LoraConfig(
                r=int(lora["r"]), lora_alpha=int(lora["alpha"]), lora_dropout=float(lora["dropout"]),
                target_modules=list(lora["target_modules"]), task_type="CAUSAL_LM"))
    warm = script["warmup_sft"]
    if warm["enabled"] and resume_from is None and not (warmup_dir / "adapter_config.json").is_file():
        warm_started = time.perf_counter()
        history = supervised_warmup(model, tokenizer, data, warm, seed=seed, device=device)
        summary["warmup_seconds"] = time.perf_counter() - warm_started
        summary["warmup_final_loss"] = history[-1]["warmup_loss"] if history else None
        if is_main:
            with open(out / METRICS_LIVE_FILE, "a", encoding="utf-8") as handle:
                for row in history:
                    handle.write(json.dumps({"step": 0, **row}) + "\n")
        if script["lora"]["enabled"] and is_main:
            with io.atomic_dir(warmup_dir) as tmp:
                model.save_pretrained(str(tmp))
    model.train()

    reward_funcs = [reward_lib.get_reward(name) for name in reward_names if name != "gail"]
    discriminator = gail_reward = None
    if use_gail:
        from grail_sim.training.discriminator import Discriminator, GailReward

        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            PartialState()  # join the process group now, so that D's copies start from rank 0's weights
        discriminator = Discriminator(gail_settings, gail_settings.disc_model or model_dir)
        if resume_from is not None:
            discriminator.load(resume_from / "discriminator")
        gail_reward = GailReward(discriminator)
        reward_funcs.append(gail_reward)

    if resume_from is not None and is_main:
        trimmed = trim_metrics(out / METRICS_LIVE_FILE, int(resume_from.name.split("-", 1)[1]))
        LOG.info("resuming from %s (%d later metric rows dropped)", resume_from, trimmed)

    config = GRPOConfig(output_dir=str(out), **grpo)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=data,
                          processing_class=tokenizer, callbacks=_make_callbacks(out, discriminator))
    if gail_reward is not None:
        gail_reward.is_training = lambda: bool(trainer.model.training)
    train_started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.perf_counter() - train_started
    trainer.save_state()

    final_dir = out / "final"
    staging = out / ".final.staging"
    # Every rank calls save_model (ZeRO-3 gathers the weights collectively); rank 0 writes the files.
    trainer.save_model(str(staging))
    if not trainer.accelerator.is_main_process:
        return summary
    with io.atomic_dir(final_dir) as tmp:
        for item in staging.iterdir():
            shutil.move(str(item), tmp / item.name)
        shutil.rmtree(staging, ignore_errors=True)
        tokenizer.save_pretrained(str(tmp))
        summary.update({
            "base_model": str(model_dir), "adapter": bool(script["lora"]["enabled"]), "dataset": str(dataset_dir),
            "recipe": str(recipe_path), "global_step": trainer.state.global_step,
            "resumed_from": str(resume_from) if resume_from else None, "train_seconds": train_seconds,
            "seconds_per_step": train_seconds / max(1, trainer.state.global_step - (
                int(resume_from.name.split("-", 1)[1]) if resume_from else 0)),
            "train_loss": getattr(result, "training_loss", None),
        })
        if gail_reward is not None:
            summary["gail_seconds"] = gail_reward.seconds
        io.write_json(tmp / PROVENANCE_FILE, summary)
    if discriminator is not None:
        discriminator.save(out / "discriminator")
    live = out / METRICS_LIVE_FILE
    rows = io.write_jsonl(out / METRICS_FILE, io.read_jsonl(live) if live.is_file() else [])
    LOG.info("metric log: %d rows -> %s", rows, out / METRICS_FILE)

    if heldout is not None:
        trained = trainer.model
        summary["heldout_after"] = quick_accuracy(trained, tokenizer, heldout, rows=script["heldout_rows"],
                                                  max_new_tokens=int(grpo.get("max_completion_length", 32)),
                                                  device=device)
        LOG.info("held-out after training: %s", summary["heldout_after"])
        io.write_json(out / "heldout.json", {"before": summary["heldout_before"], "after": summary["heldout_after"]})
    summary["total_seconds"] = time.perf_counter() - started
    LOG.info("done: %s steps in %.1fs -> %s", trainer.state.global_step, summary["total_seconds"], final_dir)
    return summary
