"""`grail-sim train`: GRPO, GRAIL (GRPO + online discriminator) and MaxEnt-GRPO with TRL's GRPOTrainer.

    grail-sim train --recipe config/recipes/grail.yaml --dataset results/prompts/gun_control/next_video \
        --model results/models/base --out results/train/grail_gun [--max-steps N] [--set key=value ...]

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

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from grail_sim import answers, io

LOG = logging.getLogger("grail_sim.train")

TRAINERS = ("grpo", "grail", "maxent")
REQUIRED_COLUMNS = ("prompt", "gold_index", "n_options")
GRAIL_COLUMNS = ("slate_items",)
SECRET_KEYS = ("hub_token", "push_to_hub_token")
PROVENANCE_FILE = "grail_sim.json"
METRICS_FILE = "metrics.jsonl"
# Appended to while training; copied to metrics.jsonl at the end. Snakemake deletes a job's declared
# outputs before a rerun, so the log that a resumed run continues must not be one of them.
METRICS_LIVE_FILE = "metrics.live.jsonl"

# This script's own recipe keys and their defaults; everything else must be a GRPOConfig field.
SCRIPT_DEFAULTS: dict[str, Any] = {
    "trainer": None,  # label recorded in outputs: grpo / grail / maxent (default: the recipe's file stem)
    "dtype": "float32",  # policy weights; float32 on CPU, bfloat16 on GPU
    "rewards": ["answer_accuracy", "format"],
    "train_split": "train",
    "max_train_rows": None,  # cap on training rows (after a seeded shuffle)
    "lora": {"enabled": True, "r": 16, "alpha": 32, "dropout": 0.05,
             "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
    "warmup_sft": {"enabled": False, "steps": 40, "batch_size": 8, "learning_rate": 1e-3,
                   "think_template": "Option {index} fits this viewer.", "max_prompt_tokens": 1024,
                   "balance_positions": False},
    "gail": None,  # GRAIL: see grail_sim.discriminator.GailSettings
    "heldout_rows": 0,  # >0: greedy accuracy on this many validation rows before and after training
    # GPU nodes, `use_vllm: true` + `vllm_mode: server`: see grail_sim.vllm_server.
    "accelerate_config": None,  # e.g. config/accelerate/ddp.yaml, zero2.yaml, zero3.yaml
    "vllm_server": {"timeout_s": 900, "gpu_memory_utilization": 0.9, "dtype": "auto", "max_model_len": None,
                    "extra_args": [], "log": None},
}
SCRIPT_KEYS = tuple(SCRIPT_DEFAULTS)
SECTION_KEYS = {
    "lora": {"enabled", "r", "alpha", "dropout", "target_modules"},
    "warmup_sft": {"enabled", "steps", "batch_size", "learning_rate", "think_template", "max_prompt_tokens",
                   "balance_positions"},
    "vllm_server": {"timeout_s", "gpu_memory_utilization", "dtype", "max_model_len", "extra_args", "log"},
}


class RecipeError(ValueError):
    """A recipe key or value that cannot be used; the message names the file and key."""


class DataError(ValueError):
    """A prompt dataset that does not follow Contract 2; the message names the folder and column."""


# ----------------------------------------------------------------------------------------------
# Recipes


def _grpo_fields() -> dict[str, dataclasses.Field]:
    from trl import GRPOConfig

    return {f.name: f for f in dataclasses.fields(GRPOConfig) if f.init}


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` (dotted keys reach nested sections: `gail.weight=0.5`); the value is YAML."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise RecipeError(f"--set {text!r}: empty key")
    return key, yaml.safe_load(raw) if raw.strip() else None


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None,
                max_steps: int | None = None) -> tuple[dict, dict]:
    """Recipe file + overrides -> (script arguments, GRPOConfig keyword arguments).

    Unknown keys fail naming the key and file; nested sections (`lora`, `warmup_sft`, `gail`) are
    merged over the defaults.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {err}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe {path} must be a mapping of keys to values")
    for text in overrides or []:
        key, value = parse_override(text)
        target = recipe
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise RecipeError(f"--set {text!r}: {part!r} is not a section")
        target[parts[-1]] = value
    if max_steps is not None:
        recipe["max_steps"] = int(max_steps)

    grpo_fields = _grpo_fields()
    unknown = sorted(key for key in recipe if key not in SCRIPT_DEFAULTS and key not in grpo_fields)
    if unknown:
        raise RecipeError(
            f"unknown key(s) {unknown} in recipe {path}: a key must be one of this script's "
            f"({', '.join(SCRIPT_KEYS)}) or a TRL GRPOConfig field"
        )
    script = json.loads(json.dumps(SCRIPT_DEFAULTS))
    for key, value in recipe.items():
        if key not in SCRIPT_DEFAULTS:
            continue
        if key in SECTION_KEYS:
            allowed = SECTION_KEYS[key]
            value = value or {}
            if not isinstance(value, dict):
                raise RecipeError(f"recipe {path}: {key!r} must be a mapping")
            extra = sorted(set(value) - allowed)
            if extra:
                raise RecipeError(f"unknown key(s) {extra} in section {key!r} of recipe {path}; valid: {sorted(allowed)}")
            script[key].update(value)
        else:
            script[key] = value
    if script["trainer"] is None:
        script["trainer"] = path.stem
    grpo = {key: value for key, value in recipe.items() if key in grpo_fields}
    if "output_dir" in grpo:
        raise RecipeError(f"recipe {path}: output_dir comes from --out, remove it from the recipe")
    if isinstance(script["rewards"], str):
        script["rewards"] = [script["rewards"]]
    return script, grpo


def redact(mapping: dict) -> dict:
    return {key: ("***" if key in SECRET_KEYS and value else value) for key, value in mapping.items()}


# ----------------------------------------------------------------------------------------------
# Data


def load_training_data(dataset_dir: str | os.PathLike, split: str, *, need_grail: bool, max_rows: int | None,
                       seed: int):
    """The prompts stage's split, checked against Contract 2; rows without a usable gold are dropped and counted."""
    from datasets import load_from_disk

    dataset_dir = Path(dataset_dir)
    try:
        data = load_from_disk(str(dataset_dir))
    except (FileNotFoundError, ValueError) as err:
        raise DataError(f"prompt dataset {dataset_dir} does not load: {err}") from None
    if hasattr(data, "keys"):
        if split not in data:
            raise DataError(f"prompt dataset {dataset_dir} has no split {split!r}; splits: {sorted(data.keys())}")
        data = data[split]
    required = REQUIRED_COLUMNS + (GRAIL_COLUMNS if need_grail else ())
    missing = [column for column in required if column not in data.column_names]
    if missing:
        raise DataError(f"prompt dataset {dataset_dir} split {split!r} lacks column(s) {missing}; "
                       f"has {data.column_names}")
    before = len(data)
    data = data.filter(lambda row: 1 <= int(row["gold_index"]) <= int(row["n_options"]))
    dropped = before - len(data)
    LOG.info("training rows: %d of %d in %s/%s (dropped %d without a gold index in 1..n_options)",
             len(data), before, dataset_dir, split, dropped)
    if len(data) == 0:
        raise DataError(f"prompt dataset {dataset_dir} split {split!r} has no trainable rows")
    data = data.shuffle(seed=seed)
    if max_rows:
        data = data.select(range(min(int(max_rows), len(data))))
    return data


# ----------------------------------------------------------------------------------------------
# Checkpoints and the metric log


def complete_checkpoints(out_dir: Path, need_discriminator: bool) -> list[Path]:
    """Checkpoint folders that finished writing (trainer_state.json last), oldest first."""
    found = []
    for folder in out_dir.glob("checkpoint-*"):
        suffix = folder.name.split("-", 1)[1]
        if not folder.is_dir() or not (suffix.isascii() and suffix.isdigit()) or not (folder / "trainer_state.json").is_file():
            continue
        if need_discriminator and not (folder / "discriminator" / "discriminator_state.json").is_file():
            continue
        found.append(folder)
    return sorted(found, key=lambda folder: int(folder.name.split("-", 1)[1]))


# Keys that may change between an interrupted run and its resumption (a longer run continues training).
RESUMABLE_KEYS = ("max_steps", "num_train_epochs", "save_steps", "save_total_limit", "logging_steps", "report_to",
                  "heldout_rows", "log_completions", "disable_tqdm")
FINGERPRINT_FILE = "run_fingerprint.json"


def run_fingerprint(script: dict, grpo: dict, dataset_dir, model_dir) -> str:
    """Hash of everything that makes checkpoints reusable: recipe (minus RESUMABLE_KEYS), data, model."""
    import hashlib

    settings = {key: value for key, value in {**script, **grpo}.items() if key not in RESUMABLE_KEYS}
    # Contents, not paths: a rebuilt base model or regenerated prompts at the same path must not be
    # resumed from checkpoints trained on the old ones (a few seconds of hashing for a 135M model).
    blob = json.dumps({"settings": settings, "dataset": io.file_sha256(dataset_dir),
                       "model": io.file_sha256(model_dir)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def prepare_output(out: Path, fingerprint: str) -> None:
    """Drop checkpoints, warm-up and live log left by a run with other settings (they cannot be resumed)."""
    record = out / FINGERPRINT_FILE
    if record.is_file():
        previous = json.loads(record.read_text(encoding="utf-8")).get("fingerprint")
        if previous != fingerprint:
            stale = [p for p in out.glob("checkpoint-*")] + [out / "warmup", out / "discriminator"]
            removed = [p.name for p in stale if p.exists()]
            for path in stale:
                shutil.rmtree(path, ignore_errors=True)
            (out / METRICS_LIVE_FILE).unlink(missing_ok=True)
            LOG.warning("recipe, data or model changed since %s was written: starting over (removed %s)",
                        record, removed or "nothing")
    io.write_json(record, {"fingerprint": fingerprint})


def trim_metrics(path: Path, last_step: int) -> int:
    """Keep metric rows up to the resumed step (rows after it, and end-of-run summaries, are redone)."""
    if not path.is_file():
        return 0
    rows = list(io.read_jsonl(path))
    kept = [row for row in rows if int(row.get("step", 0)) <= last_step and "train_runtime" not in row]
    if len(kept) != len(rows):
        io.write_jsonl(path, kept)
    return len(rows) - len(kept)


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


# ----------------------------------------------------------------------------------------------
# Supervised format warm-up


def warmup_target(row: dict, template: str) -> str:
    """`<think>short text</think><answer>gold</answer>` for one training row."""
    slate = row.get("slate_items")
    item = {}
    if slate:
        try:
            items = json.loads(slate) if isinstance(slate, str) else slate
            item = items[int(row["gold_index"]) - 1] if 0 < int(row["gold_index"]) <= len(items) else {}
        except (ValueError, TypeError, json.JSONDecodeError):
            item = {}
    title = str(item.get("title") or "").strip()
    think = template.format(index=int(row["gold_index"]), title=title, short_title=" ".join(title.split()[:5]),
                            channel=str(item.get("channel") or "").strip())
    return f"<think>{think}</think><answer>{int(row['gold_index'])}</answer>"


def assistant_turn(tokenizer, messages: list, prompt_text: str, content: str) -> str:
    """`content` as the chat template renders an assistant reply after `prompt_text`, end of turn
    included, so that the warm-up teaches the token on which generation stops (`<|im_end|>` for
    SmolLM2), whatever the tokenizer calls EOS."""
    full = tokenizer.apply_chat_template(list(messages) + [{"role": "assistant", "content": content}],
                                         tokenize=False)
    if full.startswith(prompt_text) and content in full[len(prompt_text):]:
        return full[len(prompt_text):]
    return content + (tokenizer.eos_token or "")


def balanced_order(data, rng: random.Random) -> list[int]:
    """Row indices interleaved round-robin over gold positions, so that the warm-up does not teach
    the position prior (answering "1" everywhere, the reference's failure) before RL starts."""
    by_position: dict[int, list[int]] = {}
    for index, gold in enumerate(data["gold_index"]):
        by_position.setdefault(int(gold), []).append(index)
    for rows in by_position.values():
        rng.shuffle(rows)
    order, depth = [], max(len(rows) for rows in by_position.values())
    for level in range(depth):
        for position in sorted(by_position):
            rows = by_position[position]
            order.append(rows[level % len(rows)])
    return order


def supervised_warmup(model, tokenizer, data, settings: dict, *, seed: int, device: str) -> list[dict]:
    """A few supervised steps on (prompt, think/answer target) pairs; loss on the target tokens only."""
    import torch

    steps, batch_size = int(settings["steps"]), int(settings["batch_size"])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(settings["learning_rate"]))
    rng = random.Random(seed)
    order = list(range(len(data)))
    rng.shuffle(order)
    if settings.get("balance_positions"):
        order = balanced_order(data, rng)
    model.train()
    history, cursor, started = [], 0, time.perf_counter()
    for step in range(1, steps + 1):
        batch_rows = []
        for _ in range(batch_size):
            if cursor >= len(order):
                rng.shuffle(order)
                cursor = 0
            batch_rows.append(data[order[cursor]])
            cursor += 1
        sequences, labels = [], []
        for row in batch_rows:
            prompt_text = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
            prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
            prompt_ids = prompt_ids[-int(settings["max_prompt_tokens"]):]
            target_ids = tokenizer(assistant_turn(tokenizer, row["prompt"], prompt_text,
                                                  warmup_target(row, settings["think_template"])),
                                   add_special_tokens=False)["input_ids"]
            sequences.append(prompt_ids + target_ids)
            labels.append([-100] * len(prompt_ids) + target_ids)
        width = max(len(s) for s in sequences)
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=device)
        attention = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
        label_ids = torch.tensor([[-100] * (width - len(s)) + s for s in labels], device=device)
        # Left padding puts every target at the end: the vocabulary projection is only needed for the
        # last `keep` positions, which saves most of the memory and a fifth of the compute.
        keep = max(sum(1 for t in row if t != -100) for row in labels) + 1
        logits = model(input_ids=input_ids, attention_mask=attention, logits_to_keep=keep).logits
        targets = label_ids[:, -keep + 1:]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        history.append({"warmup_step": step, "warmup_loss": float(loss.detach())})
        if step == 1 or step % 10 == 0 or step == steps:
            LOG.info("warm-up step %d/%d: loss %.4f (%.1fs)", step, steps, float(loss.detach()),
                     time.perf_counter() - started)
    model.eval()
    return history


# ----------------------------------------------------------------------------------------------
# Quick held-out accuracy (own measurement; the evaluate stage is the real evaluation)


def quick_accuracy(model, tokenizer, data, *, rows: int, max_new_tokens: int, device: str,
                   batch_size: int = 8) -> dict:
    """Greedy accuracy, parse rate and format rate on the first `rows` rows of `data`."""
    import torch

    rows = min(int(rows), len(data))
    if rows <= 0:
        return {"rows": 0}
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    correct = parsed = formatted = 0
    positions: dict[int, int] = {}
    try:
        for start in range(0, rows, batch_size):
            batch = [data[i] for i in range(start, min(rows, start + batch_size))]
            texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
                     for r in batch]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                output = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=tokenizer.pad_token_id)
            for row, ids in zip(batch, output[:, encoded["input_ids"].shape[1]:]):
                text = tokenizer.decode(ids, skip_special_tokens=True)
                choice = answers.parse_choice(text, int(row["n_options"]))
                parsed += choice is not None
                formatted += answers.has_format(text)
                correct += choice is not None and choice == int(row["gold_index"])
                if choice is not None:
                    positions[choice] = positions.get(choice, 0) + 1
    finally:
        tokenizer.padding_side = previous_side
        model.train(was_training)
    return {"rows": rows, "accuracy": correct / rows, "parsed_rate": parsed / rows,
            "format_rate": formatted / rows, "predicted_positions": dict(sorted(positions.items()))}


# ----------------------------------------------------------------------------------------------
# The run


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

    from grail_sim import rewards as reward_lib

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
        from grail_sim.discriminator import GailSettings

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
        raise DataError(f"base model folder {model_dir} does not load: {err}") from None
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
        from grail_sim.discriminator import Discriminator, GailReward

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, help="recipe YAML (config/recipes/{grpo,grail,maxent}.yaml)")
    parser.add_argument("--dataset", required=True, help="prompts folder, e.g. results/prompts/gun_control/next_video")
    parser.add_argument("--model", required=True, help="base model folder, e.g. results/models/base")
    parser.add_argument("--out", required=True, help="output folder, e.g. results/train/grail_gun")
    parser.add_argument("--max-steps", type=int, default=None, help="override the recipe's max_steps")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; the rule passes its `threads`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key (YAML value; dotted keys for sections, e.g. gail.weight=0.5)")


def run(args: argparse.Namespace) -> int:
    from grail_sim import vllm_server

    try:
        script, grpo = load_recipe(args.recipe, args.overrides, args.max_steps)
        if grpo.get("use_vllm") and grpo.get("vllm_mode") == "server" and not os.environ.get(vllm_server.WORKER_ENV):
            argv = ["train", "--recipe", args.recipe, "--dataset", args.dataset, "--model", args.model,
                    "--out", args.out]
            if args.max_steps is not None:
                argv += ["--max-steps", str(args.max_steps)]
            for override in args.overrides:
                argv += ["--set", override]
            return vllm_server.orchestrate(argv, model=args.model, out_dir=args.out, settings=script["vllm_server"],
                                           grpo=grpo, accelerate_config=script["accelerate_config"])
        train(args.recipe, args.dataset, args.model, args.out, overrides=args.overrides, max_steps=args.max_steps,
              threads=args.threads)
    except (RecipeError, DataError, vllm_server.ServerError) as err:
        print(f"grail-sim train: {err}", file=sys.stderr)
        return 2
    return 0
