"""Is the demo's planted signal learnable by the embedded model at all, and at what prompt length? (#12)

The recovery benchmark (recovery.md) found no held-out gain over the position prior after 960 rows
of sft on ~314-token prompts. This probe separates the learning problem from the trainer: a plain
torch loop fits the answer digit of each training row (cross-entropy over the whole vocabulary at the
answer position, as sft's completion loss does for that token) and, every `--eval-every` steps,
scores held-out rows by the digit logits renormalised over the row's options, with the evaluate
stage's own figures (`likelihood.likelihood_metrics`): NLL, accuracy@1 and the recovered share of
the oracle's gain, with participant-bootstrap intervals, beside the position prior, the fitted
choice model and the oracle, on the same rows.

Prompt formulations (`--format`):

- `full`: the prompts stage's own chat messages, then `<think></think><answer>` and the digit;
- `tiny`: a two-line system prompt, the PROFILE paragraph and the options as `k. <channel>` only,
  then the same answer prefix. It keeps what the behaviour model uses (the leaning and each option's
  stance-bearing channel) and drops everything else.
- `inline`: the `tiny` text, but every option line ends in "Clicked?", and the option's score is
  the model's " yes" minus " no" logit right there. The choice distribution is
  softmax(score + log position prior), the prior fitted on `train`, and training minimises its
  cross-entropy. No option number has to be bound to its channel: the score is read where the
  channel was just read, as the discriminator scores options one by one, in one forward pass a row.
- `inline-local`: `inline`, with the viewer's party and ideology (from the PROFILE) restated in every
  option line, so that what the choice depends on, leaning and stance, sits next to the point where
  it is scored rather than a paragraph away.

    python benchmarks/formulation_probe.py --dataset DIR/results/prompts/gun_control/next_video \
        --truth DIR/results/demo_capsule --format tiny --steps 150 --eval-every 50
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import time
from pathlib import Path

ANSWER_PREFIX = "<think></think><answer>"
TINY_SYSTEM = ("Predict which option this YouTube viewer clicks next, from their PROFILE and the OPTIONS.\n"
               "Reply as <think></think><answer>N</answer>, N the option's number.")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="results/models/base")
    parser.add_argument("--dataset", default="results/prompts/gun_control/next_video")
    parser.add_argument("--truth", default="results/demo_capsule")
    parser.add_argument("--format", choices=("full", "tiny", "inline", "inline-local"), default="tiny")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--eval-rows", type=int, default=0, help="rows scored per point (0 = all)")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--lora-r", type=int, default=0, help="LoRA rank on every projection (0 = full fine-tuning)")
    parser.add_argument("--leaning", choices=("", "liberal", "conservative"), default="",
                        help="keep only the viewers of this leaning (the generator's truth), in training and "
                             "scoring: the choice then depends on each option's stance alone, not on an "
                             "interaction of stance and leaning")
    parser.add_argument("--first-leaning", choices=("", "liberal", "conservative"), default="",
                        help="a curriculum: the first --first-steps steps train on this leaning's viewers only "
                             "(a first-order signal), the rest on every kept viewer")
    parser.add_argument("--first-steps", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the curve and settings as JSON here")
    return parser.parse_args()


def tiny_messages(row: dict) -> list[dict]:
    options = json.loads(row["slate_items"])
    lines = [f"{k}. {item['channel']}" for k, item in enumerate(options, start=1)]
    return [{"role": "system", "content": TINY_SYSTEM},
            {"role": "user", "content": f"PROFILE: {row['viewer_profile']}\nOPTIONS:\n" + "\n".join(lines)}]


INLINE_SYSTEM = "For each OPTION, say whether this YouTube viewer clicks it next, from their PROFILE."


def stated_politics(profile: str) -> str:
    """"Republican, very conservative" from a PROFILE paragraph's party and ideology phrases."""
    found = [m.group(1) for m in (re.search(r"party: ([^,.]+)", profile), re.search(r"ideology: ([^,.]+)", profile)) if m]
    return ", ".join(found) or "unknown"


def inline_segments(row: dict, local: bool = False) -> tuple[str, list[str]]:
    """The inline format's text before the options, and each option's line (ending where it is scored)."""
    options = json.loads(row["slate_items"])
    head = (f"<|im_start|>system\n{INLINE_SYSTEM}<|im_end|>\n<|im_start|>user\n"
            f"PROFILE: {row['viewer_profile']}\nOPTIONS:")
    viewer = f" Viewer: {stated_politics(row['viewer_profile'])}." if local else ""
    return head, [f"\n{k}. {item['channel']}.{viewer} Clicked?" for k, item in enumerate(options, start=1)]


def inline_text(row: dict, local: bool) -> list[str]:
    head, lines = inline_segments(row, local)
    return [head, *lines]


def inline_scores(model, tokenizer, rows: list[dict], prior, local: bool = False) -> list:
    """Per row, the log-probabilities softmax(yes-no logit + log prior) over its options."""
    import torch

    yes, no = (tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in (" yes", " no"))
    sequences, marks = [], []
    for row in rows:
        head, lines = inline_segments(row, local)
        ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        row_marks = []
        for line in lines:
            ids = ids + tokenizer(line, add_special_tokens=False)["input_ids"]
            row_marks.append(len(ids) - 1)
        sequences.append(ids)
        marks.append(row_marks)
    width = max(len(ids) for ids in sequences)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in sequences])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in sequences])
    hidden = model.get_base_model().model if hasattr(model, "get_base_model") else model.model
    states = hidden(input_ids=input_ids, attention_mask=mask).last_hidden_state
    head_weight = model.get_output_embeddings().weight
    direction = head_weight[yes] - head_weight[no]
    out = []
    for b, (row, row_marks) in enumerate(zip(rows, marks)):
        scores = states[b, row_marks].float() @ direction.float()
        log_prior = torch.log(torch.tensor(prior.distribution(int(row["n_options"])), dtype=torch.float32))
        out.append(torch.log_softmax(scores + log_prior, -1))
    return out


def prompt_text(tokenizer, row: dict, fmt: str) -> str:
    messages = row["prompt"] if fmt == "full" else tiny_messages(row)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + ANSWER_PREFIX


def digit_ids(tokenizer) -> list[int]:
    ids = [tokenizer(str(k), add_special_tokens=False)["input_ids"] for k in range(1, 10)]
    if any(len(i) != 1 for i in ids):
        raise SystemExit(f"the tokenizer splits a digit into several tokens: {ids}")
    return [i[0] for i in ids]


def answer_logits(model, tokenizer, texts: list[str]):
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return model(**encoded, logits_to_keep=1).logits[:, -1].float()


def score(model, tokenizer, rows, train_rows, oracle, fmt: str, digits: list[int], prior) -> dict:
    import torch

    from recovery import curve_point

    from grail_sim.evaluation import decisions, likelihood
    from grail_sim.evaluation.scorers import ScoredAnswers
    from grail_sim.rows import viewer_leaning

    records = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(rows), 8):
            batch = rows[start:start + 8]
            if fmt.startswith("inline"):
                per_row = inline_scores(model, tokenizer, batch, prior, local=fmt == "inline-local")
            else:
                logits = answer_logits(model, tokenizer, [prompt_text(tokenizer, r, fmt) for r in batch])
                per_row = [torch.log_softmax(row_logits, -1)[digits[:int(r["n_options"])]]
                           for r, row_logits in zip(batch, logits)]
            for row, log_probs in zip(batch, per_row):
                n = int(row["n_options"])
                answers = ScoredAnswers(tuple(log_probs.tolist()))
                records.append({
                    "id": str(row["id"]), "task": "next_video", "n_options": n,
                    "gold": likelihood.gold_position("next_video", row), "candidates": [str(k) for k in range(1, n + 1)],
                    "log_likelihoods": list(answers.log_likelihoods), "probabilities": answers.probabilities,
                    "valid_mass": answers.valid_mass,
                    "issue": row.get("issue"), "participant_study": row.get("participant_study"),
                    "participant_id": row.get("participant_id"), "treatment_arm": row.get("treatment_arm"),
                    "viewer_leaning": viewer_leaning(decisions.viewer_text(row)),
                })
    model.train()
    point = curve_point(records, rows, train_rows, oracle)
    point["nll_by_leaning"] = nll_by_leaning(records, oracle)
    return point


def nll_by_leaning(records: list[dict], oracle) -> dict:
    """Mean NLL of the policy and the position prior per viewer leaning (the generator's truth), over
    every scored row (the oracle-resolved ones and the others), no intervals: does a policy that
    clears the prior serve both leanings, or only one?"""
    import math

    sums: dict = {}
    for record in records:
        if record["gold"] is None or "baseline_probabilities" not in record:
            continue
        leaning = oracle.leanings.get(str(record["participant_id"]), "unknown")
        entry = sums.setdefault(leaning, {"rows": 0, "policy": 0.0, "position_prior": 0.0})
        entry["rows"] += 1
        gold = record["gold"] - 1
        entry["policy"] -= math.log(max(record["probabilities"][gold], 1e-12))
        entry["position_prior"] -= math.log(max(record["baseline_probabilities"]["position_prior"][gold], 1e-12))
    return {leaning: {"rows": e["rows"], "policy": e["policy"] / e["rows"], "position_prior": e["position_prior"] / e["rows"]}
            for leaning, e in sums.items()}


def main() -> None:
    args = parse_args()
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grail_sim.data.demo_oracle import Oracle, load_truth
    from grail_sim.evaluation.baselines import PositionPrior

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    if args.lora_r:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(
            r=args.lora_r, lora_alpha=2 * args.lora_r, task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    data = load_from_disk(args.dataset)
    oracle = Oracle(load_truth(args.truth))

    def kept(split: str) -> list[dict]:
        rows = [data[split][i] for i in range(len(data[split]))]
        if args.leaning:
            rows = [r for r in rows if oracle.leanings.get(str(r["participant_id"])) == args.leaning]
        return rows

    train_rows, rows = kept("train"), kept(args.split)
    first_rows = [r for r in train_rows if oracle.leanings.get(str(r["participant_id"])) == args.first_leaning] \
        if args.first_leaning else train_rows
    if args.eval_rows and args.eval_rows < len(rows):
        rows = random.Random(args.seed).sample(rows, args.eval_rows)
    digits = digit_ids(tokenizer)
    prior = PositionPrior.fit(train_rows)  # the evaluate stage's baseline: inline scores are read against it
    tokens = [len(tokenizer(prompt_text(tokenizer, r, args.format) if not args.format.startswith("inline")
                            else "".join(inline_text(r, args.format == "inline-local")),
                            add_special_tokens=False)["input_ids"]) for r in train_rows[:200]]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate)
    order: list[int] = []
    curve, train_seconds, losses = [], 0.0, []

    def evaluate(step: int) -> None:
        started = time.perf_counter()
        point = {"step": step, "rows_seen": step * args.batch_size, "train_seconds": round(train_seconds, 1),
                 "loss": (sum(losses) / len(losses)) if losses else None,
                 **score(model, tokenizer, rows, train_rows, oracle, args.format, digits, prior)}
        point["score_seconds"] = round(time.perf_counter() - started, 1)
        losses.clear()
        curve.append(point)
        print(json.dumps({"step": step, "train_s": point["train_seconds"], "loss": point["loss"],
                          "nll": point["policy"]["nll"], "acc": point["policy"]["accuracy_at_1"]["value"],
                          "share": point["policy"]["recovered_share"], "by_leaning": point["nll_by_leaning"]}),
              flush=True)

    evaluate(0)
    model.train()
    for step in range(1, args.steps + 1):
        started = time.perf_counter()
        pool = first_rows if step <= args.first_steps else train_rows
        if step == args.first_steps + 1 or len(order) < args.batch_size:
            order = random.sample(range(len(pool)), len(pool))
        batch = [pool[order.pop()] for _ in range(args.batch_size)]
        if args.format.startswith("inline"):
            per_row = inline_scores(model, tokenizer, batch, prior, local=args.format == "inline-local")
            loss = -torch.stack([lp[int(r["gold_index"]) - 1] for r, lp in zip(batch, per_row)]).mean()
        else:
            logits = answer_logits(model, tokenizer, [prompt_text(tokenizer, r, args.format) for r in batch])
            targets = torch.tensor([digits[int(r["gold_index"]) - 1] for r in batch])
            loss = torch.nn.functional.cross_entropy(logits, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
        train_seconds += time.perf_counter() - started
        if step % args.eval_every == 0 or step == args.steps:
            evaluate(step)
    print_table(args, curve, sum(tokens) / len(tokens))
    if args.out:
        from grail_sim import io

        io.write_json(Path(args.out), {"args": vars(args), "machine": f"{platform.machine()}, {args.threads} torch threads",
                                       "mean_prompt_tokens": sum(tokens) / len(tokens), "curve": curve})


def print_table(args, curve: list[dict], mean_tokens: float) -> None:
    from recovery import _figure

    first = curve[0]
    print(f"\nformat {args.format}{', ' + args.leaning + ' viewers only' if args.leaning else ''}, "
          f"{mean_tokens:.0f} prompt tokens on average, "
          f"{'LoRA r=' + str(args.lora_r) if args.lora_r else 'full fine-tuning'}, lr {args.learning_rate}, "
          f"batch {args.batch_size}; {args.split}, {first['rows']} rows the oracle resolves")
    print(f"position prior NLL {_figure(first['position_prior']['nll'])}, acc {first['position_prior']['accuracy_at_1']['value']:.3f}; "
          f"choice model {_figure(first['choice_model']['nll'])}; oracle {_figure(first['oracle']['nll'])}, "
          f"acc {first['oracle']['accuracy_at_1']['value']:.3f}")
    print("| step | rows seen | train s | train loss | NLL | acc@1 | recovered share |")
    print("|---|---|---|---|---|---|---|")
    for p in curve:
        loss = f"{p['loss']:.3f}" if p["loss"] is not None else "-"
        print(f"| {p['step']} | {p['rows_seen']} | {p['train_seconds']:.0f} | {loss} | {_figure(p['policy']['nll'])} | "
              f"{p['policy']['accuracy_at_1']['value']:.3f} | {_figure(p['policy']['recovered_share'])} |")


if __name__ == "__main__":
    main()
