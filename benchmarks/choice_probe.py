"""Does supervised fine-tuning teach the model the viewer, or only the position prior? A probe.

Trains LoRA as the sft stage does (TRL's SFTTrainer through grail_sim.training.sft: `sft_example`'s
prompt-completion pairs, `build_sft_trainer`) in chunks and, after each chunk, scores held-out
validation rows without sampling: the think prefix of the sft target (`answers.gold_reply`) is
forced, and the next-token probabilities of the option digits give

- accuracy of the most probable option, and the mean negative log-likelihood of the gold option;
- the predicted-position histogram (one bar = the constant answer of the earlier reference);
- on the demo only: the share of predictions whose video matches the viewer's leaning (the channel's
  stance, from the generator's vocabulary), beside that share for a random option in the same slates.
  A model that reads the profile and the titles lifts it above the random share; a position-only model
  does not.

Each chunk is one SFTTrainer run of `--chunk` steps on `--chunk x --batch-size` training rows drawn
with a fresh seed (the removed supervised warm-up's draw, `--balance-positions` its round-robin over
gold positions), at a constant learning rate with a fresh AdamW (weight decay 0.01, gradient norm
clipped at 1), the loss on the completion only. The adapter is the one `--recipe`'s LoRA fields
(use_peft, lora_*) describe; every other SFT setting is `--sft-recipe`'s.

    python benchmarks/choice_probe.py --steps 60 --chunk 20 --learning-rate 5e-4 \
        --think-template "Choosing." --out benchmarks/choice_probe.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path


def _leaning_matcher():
    from grail_sim.data.demo_vocabulary import CHANNELS

    conservative = {channel for (_, stance), names in CHANNELS.items() if stance == "conservative" for channel in names}

    def matches(row: dict, option: int) -> bool:
        item = json.loads(row["slate_items"])[option - 1]
        # Demo indices are stored "higher = more conservative" (README.md, clean stage).
        return (item["channel"] in conservative) == (float(row["opinion_before"]) > 0.5)

    return matches


def probe(model, tokenizer, rows: list[dict], prefix: str, matches) -> dict:
    import torch

    digit_ids = [tokenizer(str(k), add_special_tokens=False)["input_ids"][0] for k in range(1, 10)]
    correct = nll = agree = 0.0
    positions: dict[int, int] = {}
    model.eval()
    for start in range(0, len(rows), 8):
        batch = rows[start:start + 8]
        texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True) + prefix
                 for r in batch]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            logits = model(**encoded, logits_to_keep=1).logits[:, -1]
        for row, row_logits in zip(batch, logits):
            probs = torch.softmax(row_logits[digit_ids[:int(row["n_options"])]].float(), -1)
            choice = int(probs.argmax()) + 1
            correct += choice == int(row["gold_index"])
            nll -= math.log(max(float(probs[int(row["gold_index"]) - 1]), 1e-12))
            agree += matches(row, choice)
            positions[choice] = positions.get(choice, 0) + 1
    model.train()
    n = len(rows)
    return {"accuracy": correct / n, "gold_nll": nll / n, "leaning_match": agree / n,
            "positions": dict(sorted(positions.items()))}


def chunk_order(golds: list[int], rows: int, seed: int, balance: bool) -> list[int]:
    """The training row indices of one chunk (`rows` of them), as the removed supervised warm-up drew
    them: a shuffle seeded by `seed`, or with `balance` the rows interleaved round-robin over gold
    positions (so that the chunk does not teach the position prior), reshuffled when exhausted."""
    import random

    rng = random.Random(seed)
    order = list(range(len(golds)))
    rng.shuffle(order)
    if balance:
        by_position: dict[int, list[int]] = {}
        for index, gold in enumerate(golds):
            by_position.setdefault(int(gold), []).append(index)
        for indices in by_position.values():
            rng.shuffle(indices)
        depth = max(len(indices) for indices in by_position.values())
        order = [by_position[position][level % len(by_position[position])]
                 for level in range(depth) for position in sorted(by_position)]
    chosen, cursor = [], 0
    for _ in range(rows):
        if cursor >= len(order):
            rng.shuffle(order)
            cursor = 0
        chosen.append(order[cursor])
        cursor += 1
    return chosen


def sft_recipe(args: argparse.Namespace, out: Path, seed: int):
    """The sft recipe of one chunk: `--sft-recipe` with the probe's batch, learning rate, think
    template and step count, no checkpoints, and `use_peft: false` (the adapter is already on the
    model: SFTTrainer trains it further instead of adding another)."""
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    argv = ["--config", args.sft_recipe, "--dataset", args.dataset, "--model", args.model, "--out", str(out),
            "--max_steps", str(args.chunk), "--per_device_train_batch_size", str(args.batch_size),
            "--gradient_accumulation_steps", "1", "--learning_rate", str(args.learning_rate),
            "--lr_scheduler_type", "constant", "--weight_decay", "0.01", "--max_grad_norm", "1.0",
            "--think_template", args.think_template, "--seed", str(seed), "--use_peft", "false",
            "--save_strategy", "no", "--report_to", "none"]
    return parse_recipe(argv, defaults=run_defaults)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="results/models/base")
    parser.add_argument("--dataset", default="results/prompts/gun_control/next_video")
    parser.add_argument("--recipe", default="config/recipes/grpo.yaml",
                        help="recipe whose LoRA fields (use_peft, lora_r, lora_alpha, lora_dropout, "
                             "lora_target_modules, lora_top_layers) give the adapter trained")
    parser.add_argument("--sft-recipe", default="config/recipes/sft.yaml",
                        help="the sft recipe whose other settings (max_length, completion_only_loss) apply")
    parser.add_argument("--rows", type=int, default=48, help="validation rows probed")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--chunk", type=int, default=20, help="probe every this many sft steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--think-template", default="Choosing.")
    parser.add_argument("--balance-positions", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=None, help="folder for the sft runs' files (default: a temporary one)")
    parser.add_argument("--out", default=None, help="also write the table's rows as JSON here")
    args = parser.parse_args()

    import dataclasses
    import tempfile

    import torch
    from peft import get_peft_model

    from grail_sim.answers import gold_reply
    from grail_sim.training.data import load_training_data
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.policy import get_model, lora_config
    from grail_sim.training.run import make_run, run_defaults
    from grail_sim.training.sft import build_sft_trainer, sft_example

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work or scratch)
        run = make_run(sft_recipe(args, work / "sft", seed=0), is_main=True)
        tokenizer, model, _ = get_model(run)  # left padding, float32 on CPU
        lora = parse_recipe(["--config", args.recipe, "--dataset", args.dataset, "--model", args.model,
                             "--out", str(work / "lora")], defaults=run_defaults).model
        torch.manual_seed(0)
        adapter = lora_config(lora, model.config.num_hidden_layers)  # the adapter the recipe trains
        if adapter is not None:
            model = get_peft_model(model, adapter)
        train = load_training_data(args.dataset, "train", need_grail=False, max_rows=None, seed=42)
        validation = load_training_data(args.dataset, "validation", need_grail=False, max_rows=None, seed=42)
        golds = [int(gold) for gold in train["gold_index"]]
        rows = [validation[i] for i in range(min(args.rows, len(validation)))]
        matches = _leaning_matcher()
        prefix = gold_reply({"gold_index": 1}, args.think_template).split("<answer>")[0] + "<answer>"

        n = len(rows)
        baselines = {
            "always option 1": sum(int(r["gold_index"]) == 1 for r in rows) / n,
            "first option matching the leaning (demo rule)": sum(
                next((k for k in range(1, int(r["n_options"]) + 1) if matches(r, k)), 1) == int(r["gold_index"])
                for r in rows) / n,
            "leaning match of the gold option": sum(matches(r, int(r["gold_index"])) for r in rows) / n,
            "leaning match of a random option": sum(
                sum(matches(r, k) for k in range(1, int(r["n_options"]) + 1)) / int(r["n_options"])
                for r in rows) / n,
        }
        curve = [{"steps": 0, "train_loss": None, "seconds": 0.0, **probe(model, tokenizer, rows, prefix, matches)}]
        done = 0
        while done < args.steps:
            started = time.perf_counter()
            # A fresh seed per chunk draws new rows; the optimiser restarts per chunk (AdamW moments reset).
            chunk_run = dataclasses.replace(run, recipe=sft_recipe(args, work / "sft", seed=done))
            chosen = chunk_order(golds, args.chunk * args.batch_size, seed=done, balance=args.balance_positions)
            template = chunk_run.config.think_template
            pairs = train.select(chosen, keep_in_memory=True).map(
                lambda row: sft_example(row, template), remove_columns=train.column_names, keep_in_memory=True)
            trainer = build_sft_trainer(chunk_run, model, tokenizer, pairs)
            result = trainer.train()
            model = trainer.model
            done += args.chunk
            seconds = time.perf_counter() - started
            curve.append({"steps": done, "train_loss": float(result.training_loss), "seconds": seconds,
                          **probe(model, tokenizer, rows, prefix, matches)})
            print(f"step {done}: {curve[-1]}", flush=True)

    print(f"\n{n} validation rows, {platform.processor() or platform.machine()}, {args.threads} threads; "
          f"sft batch {args.batch_size}, lr {args.learning_rate}, think {args.think_template!r}, "
          f"balanced positions {args.balance_positions}\n")
    print("| baseline | value |\n|---|---|")
    for name, value in baselines.items():
        print(f"| {name} | {value:.3f} |")
    print("\n| sft steps | train loss | accuracy | gold NLL | leaning match | predicted positions | chunk s |")
    print("|---|---|---|---|---|---|---|")
    for row in curve:
        loss = "-" if row["train_loss"] is None else f"{row['train_loss']:.3f}"
        print(f"| {row['steps']} | {loss} | {row['accuracy']:.3f} | {row['gold_nll']:.3f} | "
              f"{row['leaning_match']:.3f} | {row['positions']} | {row['seconds']:.0f} |")
    if args.out:
        from grail_sim import io

        io.write_json(Path(args.out), {"args": vars(args), "baselines": baselines, "curve": curve})


if __name__ == "__main__":
    main()
