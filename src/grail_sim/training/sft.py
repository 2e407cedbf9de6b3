"""The `sft` trainer: behaviour cloning of the human choice with TRL's `SFTTrainer` (issue #12).

    grail-sim train --recipe config/recipes/sft.yaml --dataset results/prompts/gun_control/next_video \
        --model results/models/base --out results/train/sft_gun

Every training row becomes one conversational prompt-completion pair: the prompt is the row's chat
messages, the completion one assistant turn `<think>{short think}</think><answer>{gold_index}</answer>`.
TRL renders both with the chat template, so the completion ends on the template's end of turn
(`<|im_end|>` for SmolLM2), the token `generate` and GRPO stop on, and computes the loss on the
completion only (`completion_only_loss: true` in the recipe, which is TRL's default for
prompt-completion data; set explicitly so that it cannot silently change with the data's shape).

LoRA (the recipe's `lora` section) is handed to `SFTTrainer` as `peft_config`; `lora.enabled: false`
trains every weight. The outputs are Contract 3's (docs/DESIGN.md), written by the steps it shares
with the RL trainers (`grail_sim.training.run`): OUT/final (adapter or full model + tokenizer +
grail_sim.json recording the base's absolute path and sha256), trainer_state.json, metrics.jsonl,
resolved_recipe.yaml, checkpoint-*/ (a rerun resumes from the last complete one).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from grail_sim.model.loading import PROMPT_OVERRIDES_KEY, THINK_TEMPLATE_KEY
from grail_sim.training.callbacks import get_callbacks
from grail_sim.training.data import load_training_data
from grail_sim.rows import with_system_prompt
from grail_sim.training.policy import get_model
from grail_sim.training.prompting import prompt_overrides
from grail_sim.training.run import Run, configure_common, prepare_resume, train_and_save, trl_config
from grail_sim.training.warmup import warmup_target

LOG = logging.getLogger("grail_sim.train.sft")


def train_sft(run: Run, started: float) -> dict:
    """Train the sft policy of `run` (an sft recipe); returns the summary written to OUT/final/grail_sim.json."""
    configure_sft(run)
    tokenizer, model = get_model(run)
    overrides = prompt_overrides(run.script, tokenizer, run.model_dir)
    data = get_sft_dataset(run, overrides["system_prompt"])
    prepare_resume(run)
    summary: dict[str, Any] = {"trainer": run.script.trainer, THINK_TEMPLATE_KEY: run.script.think_template,
                               PROMPT_OVERRIDES_KEY: overrides, "train_rows": len(data)}
    trainer = build_sft_trainer(run, model, tokenizer, data)
    if not train_and_save(run, trainer, tokenizer, summary):
        return summary  # not rank 0: the files are written
    summary["total_seconds"] = time.perf_counter() - started
    LOG.info("done: %s steps in %.1fs -> %s", trainer.state.global_step, summary["total_seconds"],
             run.out / "final")
    return summary


def configure_sft(run: Run) -> None:
    """The shared run set-up (logging, device, seed, resolved_recipe.yaml) with the SFT defaults, and
    the validated SFTConfig."""
    from trl import SFTConfig

    # Behaviour cloning of the answer, not language modelling of the prompt: the prompt is the
    # viewer's state, which the policy is given, never asked to write.
    run.trl.setdefault("completion_only_loss", True)
    configure_common(run, "sft_config")
    run.trl_config = trl_config(run, SFTConfig)
    LOG.info("recipe %s -> %s: trainer sft, think template %r, lora %s", run.recipe_path, run.out,
             run.script.think_template, run.script.lora.enabled)


def sft_example(row: dict, template: str) -> dict:
    """One prompt-completion pair in TRL's conversational format.

    On next-video rows the think text is the warm-up's (`warmup_target`): sft replaces that warm-up
    as the stage that teaches the answer format, and GRPO's `format` reward and the evaluation parse
    exactly this shape, so both must keep writing the same target. A math row's target is its worked
    solution in the row's style (`math_task.reference_reply`); `template` does not apply to it.
    """
    if row.get("task") == "math":
        from grail_sim.prompts.math_task import reference_reply

        target = reference_reply(row)
    else:
        target = warmup_target(row, template)
    return {"prompt": list(row["prompt"]), "completion": [{"role": "assistant", "content": target}]}


def get_sft_dataset(run: Run, system_prompt: str | None = None):
    """The training split as prompt-completion pairs (every other column dropped), with the recipe's
    system prompt in place of the prompts stage's when it sets one."""
    data = load_training_data(run.dataset_dir, run.script.train_split, need_grail=False,
                              max_rows=run.script.max_train_rows, seed=run.seed)
    data = with_system_prompt(data, system_prompt)
    template = run.script.think_template
    # In memory: a map of a dataset loaded from disk writes its cache beside the prompts, which would
    # change their content hash (the resume fingerprint) on every run; TRL's own maps follow suit.
    return data.map(lambda row: sft_example(row, template), remove_columns=data.column_names, keep_in_memory=True)


def build_sft_trainer(run: Run, model, tokenizer, data):
    """TRL's SFTTrainer on the pairs; LoRA through `peft_config`, or the start adapter trained further."""
    from trl import SFTTrainer

    peft_config = None
    if run.script.lora.enabled and run.start_adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(run.start_adapter), is_trainable=True)
    elif run.script.lora.enabled:
        peft_config = run.script.lora.to_peft(model.config.num_hidden_layers)
    # TRL's collator pads on the right whatever the tokenizer's padding_side (left, for generation) says.
    config = run.trl_config
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=get_callbacks(run.out))
    check_completions_kept(trainer, config)
    return trainer


def check_completions_kept(trainer, config) -> None:
    """Warn when `max_length` cut completions: TRL keeps a sequence's start and drops rows left with no loss."""
    dataset = trainer.train_dataset
    if config.max_length is None or "labels" not in dataset.column_names:
        return
    cut = sum(1 for ids in dataset["input_ids"] if len(ids) >= config.max_length)
    if cut:
        LOG.warning("%d of %d training sequences reach max_length %d and lost (part of) their completion; raise "
                    "max_length", cut, len(dataset), config.max_length)
