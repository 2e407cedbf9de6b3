"""The `sft` trainer: behaviour cloning of the human choice with TRL's `SFTTrainer` (issue #12).

    grail-sim train --config config/recipes/sft.yaml --dataset results/prompts/gun_control/next_video \
        --model results/models/base --out results/train/sft_gun

Every training row becomes one conversational prompt-completion pair: the prompt is the row's chat
messages, the completion one assistant turn `<think>{short think}</think><answer>{gold_index}</answer>`.
TRL renders both with the chat template, so the completion ends on the template's end of turn
(`<|im_end|>` for SmolLM2), the token `generate` and GRPO stop on, and computes the loss on the
completion only (`completion_only_loss: true`, TRL's default for prompt-completion data, set in
`run.run_defaults` so that it cannot silently change with the data's shape).

LoRA (the recipe's `use_peft` and `lora_*` fields, TRL's `get_peft_config`) is handed to
`SFTTrainer` as `peft_config`; `use_peft: false` trains every weight. The outputs are Contract 3's (docs/DESIGN.md), written by the steps it shares
with the RL trainers (`grail_sim.training.run`): OUT/final (adapter or full model + tokenizer +
grail_sim.json recording the base's absolute path and sha256), trainer_state.json, metrics.jsonl,
resolved_recipe.yaml, checkpoint-*/ (a rerun resumes from the last complete one).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from grail_sim.answers import gold_reply
from grail_sim.model.loading import PROMPT_OVERRIDES_KEY, THINK_TEMPLATE_KEY
from grail_sim.rows import with_system_prompt
from grail_sim.training.callbacks import get_callbacks
from grail_sim.training.data import load_training_data
from grail_sim.training.policy import get_model, lora_config
from grail_sim.training.prompting import prompt_overrides
from grail_sim.training.run import Run, train_and_save

LOG = logging.getLogger("grail_sim.train.sft")


def train_sft(run: Run, started: float) -> dict:
    """Train the sft policy of `run` (an sft recipe); returns the summary written to OUT/final/grail_sim.json."""
    config = run.config
    LOG.info("recipe %s -> %s: trainer sft, think template %r, use_peft %s", run.recipe_path, run.out,
             config.think_template, run.model_args.use_peft)
    tokenizer, model, _ = get_model(run)
    overrides = prompt_overrides(config, tokenizer, run.model_dir)
    data = get_sft_dataset(run, overrides["system_prompt"])
    summary: dict[str, Any] = {"trainer": config.trainer, THINK_TEMPLATE_KEY: config.think_template,
                               PROMPT_OVERRIDES_KEY: overrides, "train_rows": len(data)}
    trainer = build_sft_trainer(run, model, tokenizer, data)
    if not train_and_save(run, trainer, tokenizer, summary):
        return summary  # not rank 0: the files are written
    summary["total_seconds"] = time.perf_counter() - started
    LOG.info("done: %s steps in %.1fs -> %s", trainer.state.global_step, summary["total_seconds"],
             run.out / "final")
    return summary


def sft_example(row: dict, template: str) -> dict:
    """One prompt-completion pair in TRL's conversational format.

    On next-video rows the target is `answers.gold_reply`: GRPO's `format` reward and the evaluation
    parse exactly this shape, and the think-forced scoring fills the same think for every option. A math row's target is its worked
    solution in the row's style (`math_task.reference_reply`); `template` does not apply to it.
    """
    if row.get("task") == "math":
        from grail_sim.prompts.math_task import reference_reply

        target = reference_reply(row)
    else:
        target = gold_reply(row, template)
    return {"prompt": list(row["prompt"]), "completion": [{"role": "assistant", "content": target}]}


def get_sft_dataset(run: Run, system_prompt: str | None = None):
    """The training split as prompt-completion pairs (every other column dropped), with the recipe's
    system prompt in place of the prompts stage's when it sets one."""
    data = load_training_data(run.dataset_dir, run.script.dataset_train_split, need_grail=False,
                              max_rows=run.script.max_train_rows, seed=run.seed)
    data = with_system_prompt(data, system_prompt)
    template = run.config.think_template
    # In memory: a map of a dataset loaded from disk writes its cache beside the prompts, which would
    # change their content hash (the resume fingerprint) on every run; TRL's own maps follow suit.
    return data.map(lambda row: sft_example(row, template), remove_columns=data.column_names, keep_in_memory=True)


def build_sft_trainer(run: Run, model, tokenizer, data):
    """TRL's SFTTrainer on the pairs; LoRA through `peft_config`, or the start adapter trained further."""
    from trl import SFTTrainer

    peft_config = None
    if run.model_args.use_peft and run.start_adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(run.start_adapter), is_trainable=True)
    elif run.model_args.use_peft:
        peft_config = lora_config(run.model_args, model.config.num_hidden_layers)
    # TRL's collator pads on the right whatever the tokenizer's padding_side (left, for generation) says.
    config = run.config
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
