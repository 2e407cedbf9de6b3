"""A bare TRL 1.16 GRPO script: the same model, data, LoRA and GRPO settings as our rule, none of
grail-sim's machinery (no recipe resolution, warm-up, JSONL log, checkpoint bookkeeping). Used by
train_benchmark.py to measure our overhead per step.

    python benchmarks/bare_trl_grpo.py --model DIR --dataset results/prompts/gun_control/next_video \
        --out /tmp/bare --max-steps 4 --threads 1
"""

from __future__ import annotations

import argparse
import json
import re
import time


def accuracy(completions, gold_index, **kwargs):
    """1 when the last <answer> holds the gold index (the same rule as grail_sim.answers)."""
    scores = []
    for completion, gold in zip(completions, gold_index):
        found = re.findall(r"<answer>\s*(\d+)\s*</answer>", completion[0]["content"])
        scores.append(1.0 if found and int(found[-1]) == int(gold) else 0.0)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--completion-length", type=int, default=24)
    args = parser.parse_args()

    import torch
    from datasets import load_from_disk
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    data = load_from_disk(args.dataset)["train"].shuffle(seed=42)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    config = GRPOConfig(output_dir=args.out, max_steps=args.max_steps, learning_rate=1e-4,
                        per_device_train_batch_size=args.batch, num_generations=args.generations,
                        max_completion_length=args.completion_length, beta=0.0, logging_steps=1, save_strategy="no",
                        report_to=[], use_cpu=True, bf16=False, gradient_checkpointing=False, seed=42)
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    step_times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)

    trainer = GRPOTrainer(model=model, reward_funcs=[accuracy], args=config, train_dataset=data,
                          processing_class=tokenizer, peft_config=peft, callbacks=[Timer()])
    trainer.train()
    print(json.dumps({"step_seconds": step_times}))


if __name__ == "__main__":
    main()
