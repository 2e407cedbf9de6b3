"""Recovery benchmark (#12): does behaviour cloning recover the demo's planted signal, and how fast?

Trains the sft stage's own pieces (`training.sft.sft_example` pairs, TRL's `SFTTrainer`, LoRA from
peft) on a demo prompt dataset and, every `--eval-every` steps, scores held-out rows with the
evaluate stage's own scorer (`evaluation.likelihood.score_batch`) in both think modes:

- `trained`: each option scored as the whole reply the sft target teaches (`Next: <title>` then the
  answer), the default of `evaluate.score_think`;
- `empty`: the answer digit after an empty think.

Each point is the figures of `evaluation.likelihood.likelihood_metrics` (participant-bootstrap
intervals), beside the position prior and the fitted choice model (fitted on train) and the demo's
oracle (the ceiling), on the same rows. Prints a markdown table and writes the curve as JSON.

    python benchmarks/recovery.py --dataset results/prompts/gun_control/next_video \
        --truth results/demo_capsule/demo_ground_truth.json --steps 120 --eval-every 30 \
        --out benchmarks/recovery_default.json

`--lora-layers K` puts the adapter on the top K transformer layers only: backward then stops at the
lowest adapted layer, so a step costs less (measured in the table's seconds column).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

MODES = ("trained", "empty")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="results/models/base")
    parser.add_argument("--dataset", default="results/prompts/gun_control/next_video")
    parser.add_argument("--truth", default="results/demo_capsule/demo_ground_truth.json",
                        help="the demo's ground truth (the oracle); '' for none")
    parser.add_argument("--split", default="validation", help="split scored during training")
    parser.add_argument("--final-split", default="test", help="split scored once at the end ('' for none)")
    parser.add_argument("--eval-rows", type=int, default=0, help="rows scored per point (0 = all)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--scheduler", default="constant")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-layers", type=int, default=0, help="adapt only the top K layers (0 = all)")
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--think-template", default="Next: {short_title}")
    parser.add_argument("--modes", default="trained,empty", help="think modes scored, comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=None, help="write the curve and settings as JSON here")
    return parser.parse_args()


def load_rows(dataset_dir: str, split: str, limit: int, seed: int) -> list[dict]:
    from datasets import load_from_disk

    data = load_from_disk(dataset_dir)[split]
    if limit and limit < len(data):
        data = data.shuffle(seed=seed).select(range(limit))
    return [data[i] for i in range(len(data))]


def score_point(model, tokenizer, rows, train_rows, oracle, template: str, mode: str) -> dict:
    """One curve point: the likelihood figures of the in-memory policy on `rows`."""
    from grail_sim.evaluation import likelihood
    from grail_sim.evaluation.scorers import HFScorer, ThinkForcing

    scorer = HFScorer(None, loaded=(model, tokenizer), think=ThinkForcing(template if mode == "trained" else ""))
    started = time.perf_counter()
    records = []
    for row in rows:
        records += likelihood.score_batch(scorer, "next_video", [row])
    seconds = time.perf_counter() - started
    point = curve_point(records, rows, train_rows, oracle)
    point["score_seconds"] = seconds
    return point


def curve_point(records: list[dict], rows: list[dict], train_rows: list[dict], oracle) -> dict:
    """The evaluate stage's likelihood figures of scored `records` as one curve point: NLL and
    accuracy@1 (value and 95% participant-bootstrap interval) of the policy and every baseline,
    the policy's recovered share when there is an oracle, its valid mass and the rows scored."""
    from grail_sim.evaluation import likelihood

    figures = likelihood.likelihood_metrics("next_video", records, rows, train_rows,
                                            {"samples": 1000, "seed": 0, "confidence": 0.95}, oracle=oracle)
    overall = figures["overall"]

    def cell(source: str, metric: str) -> dict:
        figure = overall[source][metric]
        return {"value": figure["value"], "ci": [figure.get("ci_low"), figure.get("ci_high")]}

    sources = ["policy", "uniform", "position_prior", "choice_model"] + (["oracle"] if oracle else [])
    point = {source: {metric: cell(source, metric) for metric in ("nll", "accuracy_at_1")} for source in sources}
    if oracle:
        point["policy"]["recovered_share"] = cell("policy", "recovered_share")
    point["valid_mass"] = figures["valid_mass"]["value"]
    point["rows"] = figures["n_eligible"]
    return point


def build_trainer(args, model, tokenizer, train_data, callback):
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    peft_config = None
    if not args.full:
        layers = model.config.num_hidden_layers
        chosen = list(range(layers - args.lora_layers, layers)) if args.lora_layers else None
        peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.05, task_type="CAUSAL_LM",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"], layers_to_transform=chosen)
    config = SFTConfig(output_dir="/tmp/recovery_sft", max_steps=args.steps, learning_rate=args.learning_rate,
                       lr_scheduler_type=args.scheduler, per_device_train_batch_size=args.batch_size,
                       logging_steps=args.eval_every, save_strategy="no", report_to=[], seed=args.seed,
                       use_cpu=True, bf16=False, completion_only_loss=True, max_length=2048,
                       dataloader_num_workers=0, gradient_checkpointing=False)
    return SFTTrainer(model=model, args=config, train_dataset=train_data, processing_class=tokenizer,
                      peft_config=peft_config, callbacks=[callback])


def main() -> None:
    args = parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from grail_sim.data.demo_oracle import Oracle, load_truth
    from grail_sim.training.data import load_training_data
    from grail_sim.training.sft import sft_example

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    oracle = Oracle(load_truth(args.truth)) if args.truth else None
    train = load_training_data(args.dataset, "train", need_grail=False, max_rows=None, seed=args.seed)
    train_rows = [train[i] for i in range(len(train))]
    pairs = train.map(lambda row: sft_example(row, args.think_template), remove_columns=train.column_names,
                      keep_in_memory=True)
    rows = load_rows(args.dataset, args.split, args.eval_rows, args.seed)
    modes = [m for m in args.modes.split(",") if m]
    curve: list[dict] = []
    clock = {"train": 0.0, "since": time.perf_counter()}

    def evaluate(step: int, policy, loss) -> None:
        clock["train"] += time.perf_counter() - clock["since"]
        policy.eval()
        point = {"step": step, "rows_seen": step * args.batch_size, "train_seconds": clock["train"], "loss": loss}
        with torch.inference_mode():
            for mode in modes:
                point[mode] = score_point(policy, tokenizer, rows, train_rows, oracle, args.think_template, mode)
        policy.train()
        curve.append(point)
        print(json.dumps({"step": step, "train_seconds": round(clock["train"]), "loss": loss,
                          **{m: {k: point[m]["policy"][k]["value"] for k in point[m]["policy"]} for m in modes}}),
              flush=True)
        clock["since"] = time.perf_counter()

    losses: list[float] = []

    class ScoreEvery(TrainerCallback):
        def on_log(self, _args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

        def on_step_end(self, _args, state, control, model=None, **kwargs):
            if state.global_step % args.eval_every == 0 or state.global_step == args.steps:
                evaluate(state.global_step, model, losses[-1] if losses else None)

    trainer = build_trainer(args, model, tokenizer, pairs, ScoreEvery())
    evaluate(0, trainer.model, None)
    trainer.train()
    final = {}
    if args.final_split:
        policy = trainer.model.eval()
        final_rows = load_rows(args.dataset, args.final_split, 0, args.seed)
        with torch.inference_mode():
            final = {mode: score_point(policy, tokenizer, final_rows, train_rows, oracle, args.think_template, mode)
                     for mode in modes}
    print_table(args, curve, final, modes)
    if args.out:
        from grail_sim import io

        io.write_json(Path(args.out), {"args": vars(args), "machine": machine(), "curve": curve, "final": final})


def machine() -> str:
    import os

    return f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores".strip()


def _figure(cell: dict) -> str:
    low, high = cell["ci"]
    return f"{cell['value']:.3f} [{low:.3f}, {high:.3f}]" if low is not None else f"{cell['value']:.3f}"


def print_table(args, curve: list[dict], final: dict, modes: list[str]) -> None:
    print(f"\n{machine()}, {args.threads} threads; sft {'full' if args.full else f'LoRA r={args.lora_r}'}"
          f"{f' top {args.lora_layers} layers' if args.lora_layers else ''}, batch {args.batch_size}, "
          f"lr {args.learning_rate} {args.scheduler}, think {args.think_template!r}\n")
    first = curve[0][modes[0]]
    print(f"{args.split}: {first['rows']} rows; position prior NLL {_figure(first['position_prior']['nll'])}, "
          f"choice model {_figure(first['choice_model']['nll'])}"
          + (f", oracle {_figure(first['oracle']['nll'])}" if "oracle" in first else "") + "\n")
    header = " | ".join(f"{m} NLL | {m} acc@1 | {m} recovered" for m in modes)
    print(f"| step | rows seen | train s | loss | {header} |")
    print("|" + "---|" * (4 + 3 * len(modes)))
    for point in curve:
        cells = []
        for mode in modes:
            policy = point[mode]["policy"]
            share = policy.get("recovered_share")
            cells += [_figure(policy["nll"]), f"{policy['accuracy_at_1']['value']:.3f}",
                      _figure(share) if share else "-"]
        loss = "-" if point["loss"] is None else f"{point['loss']:.3f}"
        print(f"| {point['step']} | {point['rows_seen']} | {point['train_seconds']:.0f} | {loss} | " + " | ".join(cells) + " |")
    for mode, figures in final.items():
        print(f"\n{args.final_split}, {mode} think ({figures['rows']} rows): "
              + ", ".join(f"{source} NLL {_figure(figures[source]['nll'])} acc@1 {figures[source]['accuracy_at_1']['value']:.3f}"
                          for source in figures if isinstance(figures[source], dict) and "nll" in figures[source])
              + (f"; recovered {_figure(figures['policy']['recovered_share'])}" if "recovered_share" in figures["policy"] else ""))


if __name__ == "__main__":
    main()
