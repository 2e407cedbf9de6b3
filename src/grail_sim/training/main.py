"""`grail-sim train`: GRPO, GRAIL (GRPO + online discriminator) and MaxEnt-GRPO with TRL's GRPOTrainer;
an `sft` recipe runs the behaviour-cloning stage instead (grail_sim.training.sft).

    grail-sim train --recipe config/recipes/grail.yaml --dataset results/prompts/gun_control/next_video \
        --model results/models/base --out results/train/grail_gun [--max-steps N] [--set key=value ...]

A recipe is YAML whose keys are TRL 1.16 `GRPOConfig` fields plus this script's own keys
(`recipe.ScriptArguments`, listed by `grail-sim train --help`); any other key fails naming it. Output (Contract 3 of docs/DESIGN.md):

    OUT/final/               adapter (or full model) + tokenizer + grail_sim.json (base model, recipe)
    OUT/checkpoint-*/        TRL checkpoints; GRAIL adds checkpoint-*/discriminator/
    OUT/trainer_state.json   TRL's state at the end
    OUT/metrics.jsonl        every logged metric, one JSON object per logging step (written at the end;
                             OUT/metrics.live.jsonl grows during training and survives interruptions)
    OUT/resolved_recipe.yaml the recipe after --set, --max-steps and environment overrides
    OUT/discriminator/       GRAIL's final discriminator
    OUT/warmup/              the LoRA adapter after the supervised format warm-up (reused on rerun)

Rerunning with the same OUT resumes from the last complete checkpoint.

--model may be a peft adapter folder (the sft stage's final/): the run starts from the base that the
adapter records (content-checked by `adapter_base`) with that adapter loaded as the trainable one,
so the RL output is still one adapter on the original base and `load_policy` loads it unchanged
(with `lora.enabled: false` the adapter is merged into the base and every weight trains).

`train` reads as the run's steps in order (as open-r1's grpo.py does): recipe, rewards, run
settings, dataset (and evaluation rows), model, prompt overrides, resume, held-out check, LoRA, warm-up, reward functions, trainer, train,
save; each step is a function below it, in `policy.py` for the model and its LoRA adapter, or in
`run.py` for the steps sft shares (the run's set-up, resume, train, save).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from grail_sim import io
from grail_sim.errors import RecipeError, TrainError
from grail_sim.model.loading import PROMPT_OVERRIDES_KEY, THINK_TEMPLATE_KEY, trained_think_template
from grail_sim.training.callbacks import get_callbacks
from grail_sim.training.data import first_rows, load_training_data, trainable_rows
from grail_sim.rows import with_system_prompt
from grail_sim.training.policy import get_model, get_peft_model
from grail_sim.training.prompting import prompt_overrides
from grail_sim.training.recipe import SftArguments, evaluates_during_training, load_recipe
from grail_sim.training.resume import METRICS_LIVE_FILE
from grail_sim.training.run import Run, configure_common, prepare_resume, train_and_save, trl_config
from grail_sim.training.sft import train_sft
from grail_sim.training.warmup import quick_accuracy, supervised_warmup

LOG = logging.getLogger("grail_sim.train")


def train(recipe_path: str, dataset_dir: str, model_dir: str, out_dir: str, *, overrides: list[str] | None = None,
          max_steps: int | None = None, threads: int | None = None) -> dict:
    """Train one policy; returns a summary (also written to OUT/final/grail_sim.json)."""
    started = time.perf_counter()
    set_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    script, trl_args = load_recipe(recipe_path, overrides, max_steps)
    run = Run(str(recipe_path), str(dataset_dir), str(model_dir), out, script, trl_args,
              is_main=int(os.environ.get("RANK", "0")) == 0)
    if isinstance(script, SftArguments):
        return train_sft(run, started)
    reward_names, weights = get_reward_weights(run)
    configure_run(run, reward_names, weights)
    data = get_dataset(run)
    eval_data = get_eval_dataset(run)
    tokenizer, model = get_model(run)
    overrides = prompt_overrides(script, tokenizer, run.model_dir)
    data, eval_data = (with_system_prompt(rows, overrides["system_prompt"]) for rows in (data, eval_data))
    prepare_resume(run)
    summary: dict[str, Any] = {"trainer": script.trainer, "rewards": reward_names, "reward_weights": weights,
                               THINK_TEMPLATE_KEY: taught_think_template(run), PROMPT_OVERRIDES_KEY: overrides,
                               "train_rows": len(data), "eval_rows": None if eval_data is None else len(eval_data)}
    model = get_peft_model(run, model)
    heldout = with_system_prompt(get_heldout(run), overrides["system_prompt"])
    if heldout is not None:  # after the adapter is on: "before" is the starting policy (sft's, when it starts there)
        summary["heldout_before"] = heldout_accuracy(run, model, tokenizer, heldout, "before")
    summary.update(run_warmup(run, model, tokenizer, data))
    model.train()
    reward_funcs, discriminator, gail_reward = get_reward_funcs(run, reward_names)
    trainer = build_trainer(run, model, tokenizer, data, eval_data, reward_funcs, discriminator, gail_reward)
    if not train_and_save(run, trainer, tokenizer, summary, gail_reward=gail_reward, discriminator=discriminator):
        return summary  # not rank 0: the files are written
    if heldout is not None:
        summary["heldout_after"] = heldout_accuracy(run, trainer.model, tokenizer, heldout, "after")
        io.write_json(out / "heldout.json", {"before": summary["heldout_before"], "after": summary["heldout_after"]})
    summary["total_seconds"] = time.perf_counter() - started
    LOG.info("done: %s steps in %.1fs -> %s", trainer.state.global_step, summary["total_seconds"], out / "final")
    return summary


def set_threads(threads: int | None) -> None:
    # More intra-op threads than free cores makes every op spin-wait: on 2 shared cores a
    # discriminator update measured 2.05 s with 2 threads and 0.09 s with 1 (benchmarks/).
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def get_reward_weights(run: Run) -> tuple[list[str], list[float]]:
    """The reward names (`gail` appended under GRAIL) and their normalised weights, set in the config."""
    from grail_sim.training import rewards as reward_lib

    script, grpo = run.script, run.trl
    if script.gail is not None and not script.gail.use:
        LOG.info("GAIL disabled (gail.use false / GAIL_USE=0): pure GRPO")
    reward_names = list(script.rewards)
    weights = grpo.pop("reward_weights", None) or [1.0] * len(reward_names)
    try:
        weights = reward_lib.normalise_weights(weights, reward_names)
    except ValueError as err:
        raise RecipeError(f"recipe {run.recipe_path}: {err}") from None
    if run.use_gail:
        reward_names.append("gail")
        weights = reward_lib.normalise_weights(weights + [script.gail.weight], reward_names)
    grpo["reward_weights"] = weights
    return reward_names, weights


def configure_run(run: Run, reward_names: list[str], weights: list[float]) -> None:
    """Logging backends, device defaults, step defaults and seed; OUT/resolved_recipe.yaml; the
    validated GRPOConfig."""
    from trl import GRPOConfig

    configure_common(run, "grpo_config")
    run.trl_config = trl_config(run, GRPOConfig)
    LOG.info("recipe %s -> %s: trainer %s, rewards %s, weights %s", run.recipe_path, run.out, run.script.trainer,
             reward_names, [round(w, 3) for w in weights])


def get_dataset(run: Run):
    """The training rows: --dataset's train_split, or the recipe's dataset mixture (whose held-out
    part, with test_split_size, is what evaluation during training then uses)."""
    mixture = run.script.dataset_mixture
    if mixture is None:
        return load_training_data(run.dataset_dir, run.script.train_split, need_grail=run.use_gail,
                                  max_rows=run.script.max_train_rows, seed=run.seed)
    from grail_sim.training.mixture import load_mixture

    train_rows, held_out = load_mixture(mixture)
    run.mixture_eval = None if held_out is None else trainable_rows(held_out, "dataset_mixture's test split",
                                                                    need_grail=run.use_gail)
    return first_rows(trainable_rows(train_rows, "dataset_mixture", need_grail=run.use_gail), run.script.max_train_rows)


def get_eval_dataset(run: Run):
    """The rows evaluated during training, at most `max_eval_samples`: the dataset mixture's held-out
    part when it has one, else --dataset's `eval_split`; None when the recipe does not evaluate while
    it trains."""
    if not evaluates_during_training(run.trl):
        return None
    if run.mixture_eval is not None:
        return first_rows(run.mixture_eval, run.script.max_eval_samples)
    return load_training_data(run.dataset_dir, run.script.eval_split, need_grail=run.use_gail,
                              max_rows=run.script.max_eval_samples, seed=run.seed)


def get_heldout(run: Run):
    """Validation rows for the before/after accuracy check (`heldout_rows` > 0, fresh runs only)."""
    if run.script.heldout_rows > 0 and run.resume_from is None:
        return load_training_data(run.dataset_dir, "validation", need_grail=False, max_rows=None, seed=run.seed)
    return None


def heldout_accuracy(run: Run, model, tokenizer, heldout, when: str) -> dict:
    accuracy = quick_accuracy(model, tokenizer, heldout, rows=run.script.heldout_rows,
                              max_new_tokens=int(run.trl.get("max_completion_length", 32)), device=run.device)
    LOG.info("held-out %s training: %s", when, accuracy)
    return accuracy


def taught_think_template(run: Run) -> str:
    """The think this run's policy learned to write before its answer: the warm-up's when it runs,
    else the start model's (sft's, recorded in its final/grail_sim.json); "" for neither. The
    evaluation scores the policy after it (evaluation/scorers.py)."""
    if run.script.warmup_sft.enabled:
        return run.script.warmup_sft.think_template
    return trained_think_template(run.model_dir)


def run_warmup(run: Run, model, tokenizer, data) -> dict:
    """The supervised format warm-up of a fresh run (logged at step 0); its adapter is kept in OUT/warmup."""
    warm = run.script.warmup_sft
    if not warm.enabled or run.resume_from is not None or (run.warmup_dir / "adapter_config.json").is_file():
        return {}
    started = time.perf_counter()
    history = supervised_warmup(model, tokenizer, data, warm, seed=run.seed, device=run.device)
    summary = {"warmup_seconds": time.perf_counter() - started,
               "warmup_final_loss": history[-1]["warmup_loss"] if history else None}
    if run.is_main:
        with open(run.out / METRICS_LIVE_FILE, "a", encoding="utf-8") as handle:
            for row in history:
                handle.write(json.dumps({"step": 0, **row}) + "\n")
    if run.script.lora.enabled and run.is_main:
        with io.atomic_dir(run.warmup_dir) as tmp:
            model.save_pretrained(str(tmp))
    return summary


def get_reward_funcs(run: Run, reward_names: list[str]):
    """TRL reward functions by name; under GRAIL the discriminator (resumed with the checkpoint) and its reward."""
    from grail_sim.training import rewards as reward_lib

    reward_funcs = [reward_lib.get_reward(name) for name in reward_names if name != "gail"]
    if not run.use_gail:
        return reward_funcs, None, None
    from grail_sim.training.discriminator import Discriminator
    from grail_sim.training.gail_reward import GailReward

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState()  # join the process group now, so that D's copies start from rank 0's weights
    settings = run.script.gail
    # D's backbone is the base model (the policy's start adapter, if any, is the policy's own).
    discriminator = Discriminator(settings, settings.disc_model or run.base_dir or run.model_dir)
    if run.resume_from is not None:
        discriminator.load(run.resume_from / "discriminator")
    gail_reward = GailReward(discriminator)
    return reward_funcs + [gail_reward], discriminator, gail_reward


def build_trainer(run: Run, model, tokenizer, data, eval_data, reward_funcs, discriminator, gail_reward):
    """TRL's GRPOTrainer, as grail-sim's subclass for the recipe's trainer (training/trainers.py):
    MaxEnt-GRPO's objective for `maxent`, GRPO otherwise, with adaptive KL control under `kl_target`."""
    from grail_sim.training.trainers import MaxEntGRPOTrainer, trainer_class

    config = run.trl_config
    kind = trainer_class(run.script.trainer)
    extra = {"maxent": run.script.maxent_settings()} if kind is MaxEntGRPOTrainer else {}
    callbacks = get_callbacks(run.out, discriminator)
    if run.token_map is not None:
        from grail_sim.model.reasoning_vocab import map_in_checkpoints

        callbacks.append(map_in_checkpoints(run.token_map))
    try:
        trainer = kind(model=model, reward_funcs=reward_funcs, args=config, train_dataset=data,
                       eval_dataset=eval_data, processing_class=tokenizer, callbacks=callbacks,
                       kl_controller=run.script.kl_controller(config.beta), token_map=run.token_map, **extra)
    except NotImplementedError as err:  # TRL's server-mode weight sync, set up as the trainer is built
        if config.use_vllm and config.vllm_mode == "server" and "CUDA" in str(err):
            raise TrainError(f"vllm_mode: server needs CUDA on the trainer's side: TRL joins the vLLM server's "
                             f"NCCL weight sync while it builds the trainer, and {run.device} has none (the server "
                             "answered and generates); without a GPU use vllm_mode: colocate") from None
        raise
    if gail_reward is not None:
        # TRL puts the model in eval mode while it evaluates: the discriminator scores then, never learns.
        gail_reward.is_training = lambda: bool(trainer.model.training)
    return trainer


