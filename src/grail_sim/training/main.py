"""`grail-sim train`: GRPO, GRAIL (GRPO + online discriminator) and MaxEnt-GRPO with TRL's GRPOTrainer;
an `sft` recipe runs the behaviour-cloning stage instead (grail_sim.training.sft).

    grail-sim train --config config/recipes/grail.yaml --dataset results/prompts/gun_control/next_video \
        --model results/models/base --out results/train/grail_gun [--per_device_train_batch_size 2 ...]

A recipe is TRL's: YAML whose keys are fields of `ScriptArguments`, `ModelConfig` and `GRPOConfig`
(`SFTConfig` for sft), as grail_sim.training.arguments subclasses them with grail-sim's own fields;
any flag on the command line overrides the file (grail_sim.training.parser says where each value
may be set, and which wins). Output (Contract 3 of docs/DESIGN.md):

    OUT/final/               adapter (or full model) + tokenizer + grail_sim.json (base model, recipe)
    OUT/checkpoint-*/        TRL checkpoints; GRAIL adds checkpoint-*/discriminator/
    OUT/trainer_state.json   TRL's state at the end
    OUT/metrics.jsonl        every logged metric, one JSON object per logging step (written at the end;
                             OUT/metrics.live.jsonl grows during training and survives interruptions)
    OUT/resolved_recipe.yaml every value the recipe, an override or the command line set, as resolved
    OUT/discriminator/       GRAIL's final discriminator

Rerunning with the same OUT resumes from the last complete checkpoint.

--model may be a peft adapter folder (the sft stage's final/): the run starts from the base that the
adapter records (content-checked by `adapter_base`) with that adapter loaded as the trainable one,
so the RL output is still one adapter on the original base and `load_policy` loads it unchanged
(with `use_peft: false` the adapter is merged into the base and every weight trains).

`train` reads as the run's steps in order (as open-r1's grpo.py does): run, datasets, model, prompt
overrides, held-out check, LoRA, reward functions, trainer, train and save; each step is a function
of its inputs below, in `policy.py` for the model and its LoRA adapter, or in `run.py` for the steps
sft shares.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from grail_sim import io
from grail_sim.errors import TrainError
from grail_sim.model.loading import PROMPT_OVERRIDES_KEY, THINK_TEMPLATE_KEY, trained_think_template
from grail_sim.rows import with_system_prompt
from grail_sim.training.arguments import evaluates_during_training
from grail_sim.training.callbacks import get_callbacks
from grail_sim.training.data import first_rows, load_training_data, trainable_rows
from grail_sim.training.heldout import quick_accuracy
from grail_sim.training.parser import Recipe
from grail_sim.training.policy import get_model, get_peft_model
from grail_sim.training.prompting import prompt_overrides
from grail_sim.training.recipe import SFT
from grail_sim.training.run import Run, make_run, train_and_save
from grail_sim.training.sft import train_sft

LOG = logging.getLogger("grail_sim.train")


def train(recipe: Recipe, *, threads: int | None = None) -> dict:
    """Train one policy; returns a summary (also written to OUT/final/grail_sim.json)."""
    started = time.perf_counter()
    set_threads(threads)
    run = make_run(recipe, is_main=int(os.environ.get("RANK", "0")) == 0)
    if recipe.trainer == SFT:
        return train_sft(run, started)
    LOG.info("recipe %s -> %s: trainer %s, rewards %s, weights %s", run.recipe_path, run.out, recipe.trainer,
             run.config.reward_names, [round(w, 3) for w in run.config.reward_weights])
    data, eval_data = get_datasets(run)
    tokenizer, model, token_map = get_model(run)
    overrides = prompt_overrides(run.config, tokenizer, run.model_dir)
    data, eval_data = (with_system_prompt(rows, overrides["system_prompt"]) for rows in (data, eval_data))
    summary: dict[str, Any] = {"trainer": recipe.trainer, "rewards": run.config.reward_names,
                               "reward_weights": list(run.config.reward_weights),
                               THINK_TEMPLATE_KEY: trained_think_template(run.model_dir),
                               PROMPT_OVERRIDES_KEY: overrides, "train_rows": len(data),
                               "eval_rows": None if eval_data is None else len(eval_data)}
    model = get_peft_model(run, model, token_map)
    heldout = with_system_prompt(get_heldout(run), overrides["system_prompt"])
    if heldout is not None:  # after the adapter is on: "before" is the starting policy (sft's, when it starts there)
        summary["heldout_before"] = heldout_accuracy(run, model, tokenizer, heldout, "before")
    model.train()
    reward_funcs, discriminator, gail_reward = get_reward_funcs(run)
    trainer = build_trainer(run, model, tokenizer, data, eval_data, reward_funcs, discriminator, gail_reward,
                            token_map)
    if not train_and_save(run, trainer, tokenizer, summary, gail_reward=gail_reward, discriminator=discriminator,
                          token_map=token_map):
        return summary  # not rank 0: the files are written
    if heldout is not None:
        summary["heldout_after"] = heldout_accuracy(run, trainer.model, tokenizer, heldout, "after")
        io.write_json(run.out / "heldout.json", {"before": summary["heldout_before"], "after": summary["heldout_after"]})
    summary["total_seconds"] = time.perf_counter() - started
    LOG.info("done: %s steps in %.1fs -> %s", trainer.state.global_step, summary["total_seconds"], run.out / "final")
    return summary


def set_threads(threads: int | None) -> None:
    # More intra-op threads than free cores makes every op spin-wait: on 2 shared cores a
    # discriminator update measured 2.05 s with 2 threads and 0.09 s with 1 (benchmarks/).
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def get_datasets(run: Run):
    """(training rows, rows evaluated during training or None): --dataset's dataset_train_split and
    dataset_test_split, or the recipe's dataset mixture, whose held-out part (with test_split_size)
    is then what evaluation during training uses."""
    script, need_grail = run.script, run.use_gail
    held_out = None
    if script.dataset_mixture is None:
        data = load_training_data(run.dataset_dir, script.dataset_train_split, need_grail=need_grail,
                                  max_rows=script.max_train_rows, seed=run.seed)
    else:
        from grail_sim.training.mixture import load_mixture

        train_rows, held_out = load_mixture(script.dataset_mixture)
        data = first_rows(trainable_rows(train_rows, "dataset_mixture", need_grail=need_grail), script.max_train_rows)
    if not evaluates_during_training(run.config):
        return data, None
    if held_out is not None:
        return data, first_rows(trainable_rows(held_out, "dataset_mixture's test split", need_grail=need_grail),
                                script.max_eval_samples)
    return data, load_training_data(run.dataset_dir, script.dataset_test_split, need_grail=need_grail,
                                    max_rows=script.max_eval_samples, seed=run.seed)


def get_heldout(run: Run):
    """Validation rows for the before/after accuracy check (`heldout_rows` > 0, fresh runs only)."""
    if run.config.heldout_rows > 0 and run.resume_from is None:
        return load_training_data(run.dataset_dir, "validation", need_grail=False, max_rows=None, seed=run.seed)
    return None


def heldout_accuracy(run: Run, model, tokenizer, heldout, when: str) -> dict:
    accuracy = quick_accuracy(model, tokenizer, heldout, rows=run.config.heldout_rows,
                              max_new_tokens=int(run.config.max_completion_length or 32), device=run.device)
    LOG.info("held-out %s training: %s", when, accuracy)
    return accuracy


def get_reward_funcs(run: Run):
    """TRL reward functions by name; under GRAIL the discriminator (resumed with the checkpoint) and its reward."""
    from grail_sim.training import rewards as reward_lib

    reward_funcs = [reward_lib.get_reward(name) for name in run.config.reward_funcs]
    if not run.use_gail:
        return reward_funcs, None, None
    from grail_sim.training.discriminator import Discriminator, GailSettings
    from grail_sim.training.gail_reward import GailReward

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState()  # join the process group now, so that D's copies start from rank 0's weights
    settings = GailSettings.from_recipe(run.config)
    # D's backbone is the base model (the policy's start adapter, if any, is the policy's own).
    discriminator = Discriminator(settings, settings.disc_model or run.base_dir)
    if run.resume_from is not None:
        discriminator.load(run.resume_from / "discriminator")
    gail_reward = GailReward(discriminator)
    return reward_funcs + [gail_reward], discriminator, gail_reward


def build_trainer(run: Run, model, tokenizer, data, eval_data, reward_funcs, discriminator, gail_reward,
                  token_map=None):
    """TRL's GRPOTrainer, as grail-sim's subclass for the recipe's trainer (training/trainers.py):
    MaxEnt-GRPO's objective for `maxent`, GRPO otherwise, with adaptive KL control under `kl_target`."""
    from grail_sim.training.trainers import MaxEntGRPOTrainer, trainer_class

    config = run.config
    kind = trainer_class(config.trainer)
    extra = {"maxent": config.maxent_settings()} if kind is MaxEntGRPOTrainer else {}
    callbacks = get_callbacks(run.out, discriminator)
    if token_map is not None:
        from grail_sim.model.reasoning_vocab import map_in_checkpoints

        callbacks.append(map_in_checkpoints(token_map))
    try:
        trainer = kind(model=model, reward_funcs=reward_funcs, args=config, train_dataset=data,
                       eval_dataset=eval_data, processing_class=tokenizer, callbacks=callbacks,
                       kl_controller=config.kl_controller(), token_map=token_map, **extra)
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


