"""`grail-sim evaluate-math`: the math task's evaluation (#15).

    grail-sim evaluate-math --model results/train/math_grpo/final --dataset results/prompts/math \
        --split test --out results/eval/math_grpo/test [--rows 0] [--samples 8] [--temperature 0.8]

For every problem: one greedy reply (pass@1) and `samples` sampled replies (pass@k for k = 1, 2, 4,
... up to `samples`, with the unbiased estimator 1 - C(n - c, k) / C(n, k) of Chen et al. 2021), each
checked by the reward the recipe trains with (`answer_exact_match` for the answer style,
`boxed_accuracy` for the boxed style), so evaluation and training score the same thing. Also the parse
rate (an answer was found) and the format rate (the style's format reward is 1). Each figure is a mean
over problems with a bootstrap interval (problems resampled), overall and by difficulty. Run it on the
base model too: the zero-shot figures are the comparison.

Writes OUT/math_predictions.jsonl (one record per problem) and OUT/math_metrics.json.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any, Sequence

from grail_sim import io
from grail_sim.errors import EvaluationError

LOG = logging.getLogger(__name__)

CHECKS = {"answer": ("answer_exact_match", "format"), "boxed": ("boxed_accuracy", "boxed_format")}


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k from n samples with `correct` right: 1 - C(n - c, k) / C(n, k)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - correct < k:
        return 1.0
    return 1.0 - math.prod((n - correct - i) / (n - i) for i in range(k))


def check(texts: Sequence[str], gold: str, style: str) -> tuple[list[float], list[float], list[bool]]:
    """(correct, format, parsed) of each reply, through the style's reward functions."""
    from grail_sim import answers
    from grail_sim.training import rewards

    accuracy, formatting = (rewards.get_reward(name) for name in CHECKS[style])
    correct = [float(score or 0.0) for score in accuracy(list(texts), answer=[gold] * len(texts))]
    formats = [1.0 if score == 1.0 else 0.0 for score in formatting(list(texts), answer=[gold] * len(texts))]
    read = answers.boxed_text if style == "boxed" else answers.answer_text
    parsed = [answers.canonical_answer(read(text)) is not None for text in texts]
    return correct, formats, parsed


def ks_up_to(samples: int) -> list[int]:
    ks, k = [], 1
    while k <= samples:
        ks.append(k)
        k *= 2
    return ks


def math_records(rows: Sequence[dict], greedy, sampler, samples: int) -> list[dict[str, Any]]:
    """One record per problem: the greedy reply and its checks, and the sampled replies' correct count.

    Greedy replies are generated in batches of the generator's `chunk_size`; a problem's samples
    form one batch of their own."""
    replies = []
    for start in range(0, len(rows), greedy.chunk_size):
        replies += greedy.generate([row["prompt"] for row in rows[start:start + greedy.chunk_size]])
    records = []
    for row, reply in zip(rows, replies):
        style = row.get("style") or "answer"
        correct, formats, parsed = check([reply], row["answer"], style)
        record = {"id": row["id"], "difficulty": row.get("difficulty"), "gold": row["answer"], "reply": reply,
                  "correct": correct[0], "format_ok": formats[0], "parsed": parsed[0], "samples": 0,
                  "samples_correct": 0}
        if samples:
            replies = sampler.generate([row["prompt"]] * samples)
            record.update(samples=samples, samples_correct=int(sum(check(replies, row["answer"], style)[0])))
        records.append(record)
    return records


def math_metrics(records: Sequence[dict], *, bootstrap: int = 1000, seed: int = 0,
                 confidence: float = 0.95) -> dict[str, Any]:
    """pass@1 (greedy), pass@k (sampled), parse and format rates with intervals, overall and by difficulty."""
    from grail_sim.evaluation.metrics import bootstrap_means

    def figures(subset: Sequence[dict]) -> dict[str, Any]:
        scores = {"pass@1_greedy": [r["correct"] for r in subset], "parse_rate": [float(r["parsed"]) for r in subset],
                  "format_rate": [r["format_ok"] for r in subset]}
        samples = min((r["samples"] for r in subset), default=0)
        for k in ks_up_to(samples):
            scores[f"pass@{k}"] = [pass_at_k(r["samples"], r["samples_correct"], k) for r in subset]
        return bootstrap_means([r["id"] for r in subset], scores, samples=bootstrap, seed=seed,
                               confidence=confidence)

    levels = sorted({r["difficulty"] for r in records if r["difficulty"] is not None})
    return {"n_problems": len(records), "overall": figures(records),
            "by_difficulty": {str(level): figures([r for r in records if r["difficulty"] == level])
                              for level in levels}}


def evaluate_math(model_dir: Path, dataset_dir: Path, split: str, out_dir: Path, *, rows: int = 0,
                  samples: int = 8, temperature: float = 0.8, max_new_tokens: int = 128, batch_size: int = 8,
                  device: str = "auto", dtype: str = "float32", backend: str = "auto", seed: int = 0) -> dict:
    from datasets import load_from_disk

    from grail_sim.evaluation.generators import GenerationSettings, make_generator

    try:
        data = load_from_disk(str(dataset_dir))[split]
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise EvaluationError(f"math dataset {dataset_dir} split {split!r} does not load: {err}") from None
    missing = [column for column in ("id", "prompt", "answer") if column not in data.column_names]
    if missing:
        raise EvaluationError(f"math dataset {dataset_dir} split {split!r} lacks column(s) {missing}")
    if rows and rows < len(data):
        data = data.shuffle(seed=seed).select(range(rows))
    common = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "backend": backend, "device": device,
              "dtype": dtype, "seed": seed}
    greedy = make_generator(model_dir, GenerationSettings(temperature=0.0, **common))
    sampler = make_generator(model_dir, GenerationSettings(temperature=temperature, **common)) if samples else None
    records = math_records([data[i] for i in range(len(data))], greedy, sampler, samples)
    result = {"model": str(model_dir), "dataset": str(dataset_dir), "split": split, "samples": samples,
              "temperature": temperature, "backend": greedy.backend, **math_metrics(records, seed=seed)}
    out_dir.mkdir(parents=True, exist_ok=True)
    io.write_jsonl(out_dir / "math_predictions.jsonl", records)
    io.write_json(out_dir / "math_metrics.json", result)
    overall = result["overall"]
    LOG.info("math %s on %s/%s: pass@1 %.3f [%s, %s] over %d problems", model_dir, dataset_dir, split,
             overall["pass@1_greedy"]["value"], overall["pass@1_greedy"]["ci_low"],
             overall["pass@1_greedy"]["ci_high"], len(records))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (full or peft adapter)")
    parser.add_argument("--dataset", required=True, help="math prompt dataset (grail-sim prompts math)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, help="output folder (math_predictions.jsonl, math_metrics.json)")
    parser.add_argument("--rows", type=int, default=0, help="problems evaluated after a seeded shuffle (0: all)")
    parser.add_argument("--samples", type=int, default=8, help="sampled replies per problem for pass@k (0: none)")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature of pass@k")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--backend", default="auto", choices=("auto", "hf", "vllm"))
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    evaluate_math(Path(args.model), Path(args.dataset), args.split, Path(args.out), rows=args.rows,
                  samples=args.samples, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                  batch_size=args.batch_size, device=args.device, dtype=args.dtype, backend=args.backend,
                  seed=args.seed)
    return 0
