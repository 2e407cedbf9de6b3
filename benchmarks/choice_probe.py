"""Does a supervised warm-up teach the model the viewer, or only the position prior? A probe.

Trains the real warm-up (`grail_sim.train.supervised_warmup`, LoRA as in the recipes) in chunks and,
after each chunk, scores held-out validation rows without sampling: the think prefix of the warm-up
target is forced, and the next-token probabilities of the option digits give

- accuracy of the most probable option, and the mean negative log-likelihood of the gold option;
- the predicted-position histogram (one bar = the constant answer of the earlier reference);
- on the demo only: the share of predictions whose video matches the viewer's leaning (the channel's
  stance, from the generator's vocabulary), beside that share for a random option in the same slates.
  A model that reads the profile and the titles lifts it above the random share; a position-only model
  does not.

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
    from grail_sim.data.demo_capsule import _CHANNELS

    conservative = {channel for (_, stance), names in _CHANNELS.items() if stance == "conservative" for channel in names}

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="results/models/base")
    parser.add_argument("--dataset", default="results/prompts/gun_control/next_video")
    parser.add_argument("--recipe", default="config/recipes/grpo.yaml", help="recipe whose `lora` section is used")
    parser.add_argument("--rows", type=int, default=48, help="validation rows probed")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--chunk", type=int, default=20, help="probe every this many warm-up steps")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--think-template", default="Choosing.")
    parser.add_argument("--balance-positions", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="also write the table's rows as JSON here")
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grail_sim.training.recipe import load_recipe
    from grail_sim.training.data import load_training_data
    from grail_sim.training.warmup import supervised_warmup, warmup_target

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    lora = load_recipe(args.recipe, [], None)[0]["lora"]  # the adapter the recipe trains
    model = get_peft_model(model, LoraConfig(r=int(lora["r"]), lora_alpha=int(lora["alpha"]),
                                             lora_dropout=float(lora["dropout"]), task_type="CAUSAL_LM",
                                             target_modules=list(lora["target_modules"])))
    train = load_training_data(args.dataset, "train", need_grail=False, max_rows=None, seed=42)
    validation = load_training_data(args.dataset, "validation", need_grail=False, max_rows=None, seed=42)
    rows = [validation[i] for i in range(min(args.rows, len(validation)))]
    matches = _leaning_matcher()
    prefix = warmup_target({"gold_index": 1}, args.think_template).split("<answer>")[0] + "<answer>"

    n = len(rows)
    baselines = {
        "always option 1": sum(int(r["gold_index"]) == 1 for r in rows) / n,
        "first option matching the leaning (demo rule)": sum(
            next((k for k in range(1, int(r["n_options"]) + 1) if matches(r, k)), 1) == int(r["gold_index"])
            for r in rows) / n,
        "leaning match of the gold option": sum(matches(r, int(r["gold_index"])) for r in rows) / n,
        "leaning match of a random option": sum(
            sum(matches(r, k) for k in range(1, int(r["n_options"]) + 1)) / int(r["n_options"]) for r in rows) / n,
    }
    settings = {"steps": args.chunk, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                "think_template": args.think_template, "max_prompt_tokens": 1024,
                "balance_positions": args.balance_positions}
    curve = [{"steps": 0, "train_loss": None, "seconds": 0.0, **probe(model, tokenizer, rows, prefix, matches)}]
    done = 0
    while done < args.steps:
        started = time.perf_counter()
        # A fresh seed per chunk draws new rows; the optimiser restarts per chunk (AdamW moments reset).
        history = supervised_warmup(model, tokenizer, train, settings, seed=done, device="cpu")
        done += args.chunk
        seconds = time.perf_counter() - started
        loss = sum(h["warmup_loss"] for h in history) / len(history)
        curve.append({"steps": done, "train_loss": loss, "seconds": seconds,
                      **probe(model, tokenizer, rows, prefix, matches)})
        print(f"step {done}: {curve[-1]}", flush=True)

    print(f"\n{n} validation rows, {platform.processor() or platform.machine()}, {args.threads} threads; "
          f"warm-up batch {args.batch_size}, lr {args.learning_rate}, think {args.think_template!r}, "
          f"balanced positions {args.balance_positions}\n")
    print("| baseline | value |\n|---|---|")
    for name, value in baselines.items():
        print(f"| {name} | {value:.3f} |")
    print("\n| warm-up steps | train loss | accuracy | gold NLL | leaning match | predicted positions | chunk s |")
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
