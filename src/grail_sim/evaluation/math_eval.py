"""`grail-sim evaluate-math`: the math task's evaluation (#15).

    grail-sim evaluate-math --model results/train/math_grpo/final --dataset results/prompts/math \
        --out results/eval/math_grpo/test [--split test] [--config FILE] [--rows N] [--samples N]

Settings come from the `math:` config section (eval_rows, samples, temperature, max_new_tokens,
batch_size, split) and from `evaluate:` (backend, dtype, seed, bootstrap_samples, confidence), defaults from
the schema; the flags override them by hand.

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


def generate_all(generator, prompts: Sequence, what: str) -> list[str]:
    """`generator`'s reply to every prompt, in batches of its `chunk_size`, with progress in the log."""
    replies: list[str] = []
    for start in range(0, len(prompts), generator.chunk_size):
        replies += generator.generate(list(prompts[start:start + generator.chunk_size]))
        LOG.info("%s: %d/%d replies", what, len(replies), len(prompts))
    return replies


def math_records(rows: Sequence[dict], greedy, sampler, samples: int) -> list[dict[str, Any]]:
    """One record per problem: the greedy reply and its checks, and the sampled replies' correct count.

    Greedy and sampled replies are each generated in batches of the generator's `chunk_size` (a
    problem's `samples` prompts sit next to each other, so batches span problems)."""
    replies = generate_all(greedy, [row["prompt"] for row in rows], "greedy")
    sampled = generate_all(sampler, [row["prompt"] for row in rows for _ in range(samples)], "sampled") \
        if samples else []
    records = []
    for index, (row, reply) in enumerate(zip(rows, replies)):
        style = row.get("style") or "answer"
        correct, formats, parsed = check([reply], row["answer"], style)
        record = {"id": row["id"], "difficulty": row.get("difficulty"), "gold": row["answer"], "reply": reply,
                  "correct": correct[0], "format_ok": formats[0], "parsed": parsed[0], "samples": 0,
                  "samples_correct": 0}
        if samples:
            mine = sampled[index * samples:(index + 1) * samples]
            record.update(samples=samples, samples_correct=int(sum(check(mine, row["answer"], style)[0])))
        records.append(record)
    return records


def math_metrics(records: Sequence[dict], *, bootstrap: int, seed: int, confidence: float) -> dict[str, Any]:
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


# The `evaluate:` keys the math evaluation reads (generation and intervals); the rule passes only these.
# Its batch size is the math section's own: batching pays on math's short prompts and not on the
# next-video ones (benchmarks/eval_throughput_math.json beside eval_throughput.json).
EVALUATE_KEYS = ("backend", "dtype", "seed", "bootstrap_samples", "confidence")


def evaluate_math(model_dir: Path, dataset_dir: Path, split: str, out_dir: Path, *, math: dict, evaluate: dict,
                  device: str = "auto") -> dict:
    """Greedy pass@1, sampled pass@k, parse and format rates of `model_dir` on a math split, per the
    `math:` section (eval_rows, samples, temperature, max_new_tokens, batch_size) and `evaluate:`'s
    EVALUATE_KEYS."""
    from datasets import load_from_disk

    from grail_sim.evaluation.generators import GenerationSettings, make_generator

    try:
        data = load_from_disk(str(dataset_dir))[split]
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise EvaluationError(f"math dataset {dataset_dir} split {split!r} does not load: {err}") from None
    missing = [column for column in ("id", "prompt", "answer") if column not in data.column_names]
    if missing:
        raise EvaluationError(f"math dataset {dataset_dir} split {split!r} lacks column(s) {missing}")
    seed, rows, samples = evaluate["seed"], math["eval_rows"], math["samples"]
    if rows and rows < len(data):
        data = data.shuffle(seed=seed).select(range(rows))
    common = {"max_new_tokens": math["max_new_tokens"], "batch_size": math["batch_size"],
              "backend": evaluate["backend"], "device": device, "dtype": evaluate["dtype"], "seed": seed}
    greedy = make_generator(model_dir, GenerationSettings(temperature=0.0, **common))
    sampler = make_generator(model_dir, GenerationSettings(temperature=math["temperature"], **common)) if samples else None
    records = math_records([data[i] for i in range(len(data))], greedy, sampler, samples)
    result = {"model": str(model_dir), "dataset": str(dataset_dir), "split": split, "samples": samples,
              "temperature": math["temperature"], "max_new_tokens": math["max_new_tokens"],
              "batch_size": math["batch_size"], "backend": greedy.backend,
              "bootstrap_samples": evaluate["bootstrap_samples"], "confidence": evaluate["confidence"], "seed": seed,
              **math_metrics(records, bootstrap=evaluate["bootstrap_samples"], seed=seed,
                             confidence=evaluate["confidence"])}
    if getattr(greedy, "token_map", None) is not None:  # a reasoning-vocabulary model: how much it used them
        used = greedy.reasoning_tokens + (sampler.reasoning_tokens if sampler else 0)
        generated = greedy.generated_tokens + (sampler.generated_tokens if sampler else 0)
        result["reasoning_tokens"] = {"used": used, "generated": generated, "fraction": used / max(1, generated)}
    out_dir.mkdir(parents=True, exist_ok=True)
    io.write_jsonl(out_dir / "math_predictions.jsonl", records)
    io.write_json(out_dir / "math_metrics.json", result)
    overall = result["overall"]
    LOG.info("math %s on %s/%s: pass@1 %.3f [%s, %s] over %d problems", model_dir, dataset_dir, split,
             overall["pass@1_greedy"]["value"], overall["pass@1_greedy"]["ci_low"],
             overall["pass@1_greedy"]["ci_high"], len(records))
    return result


# Flags that override the math section's values by hand (the schema holds every default).
OVERRIDES = {"rows": "eval_rows", "samples": "samples", "temperature": "temperature",
             "max_new_tokens": "max_new_tokens", "batch_size": "batch_size"}
# The math-section keys only the evaluation reads: the problems do not depend on them (rule math_prompts).
EVALUATION_ONLY_KEYS = tuple(OVERRIDES.values())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from grail_sim import config

    parser.add_argument("--model", required=True, help="model folder (full or peft adapter)")
    parser.add_argument("--dataset", required=True, help="math prompt dataset (grail-sim prompts math)")
    parser.add_argument("--split", default=None, help="split to evaluate (default: math.split)")
    parser.add_argument("--out", required=True, help="output folder (math_predictions.jsonl, math_metrics.json)")
    config.add_arguments(parser, "evaluate-math")
    parser.add_argument("--rows", type=int, default=None, help="math.eval_rows: problems after a seeded shuffle (0: all)")
    parser.add_argument("--samples", type=int, default=None, help="math.samples: sampled replies per problem (pass@k)")
    parser.add_argument("--temperature", type=float, default=None, help="math.temperature of pass@k")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="math.max_new_tokens")
    parser.add_argument("--batch-size", type=int, default=None, help="math.batch_size: replies per generation batch")
    parser.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    import os

    from grail_sim import config

    sections = config.from_arguments("evaluate-math", args, os.environ)
    math = config.section_with_flags("math", sections["math"], args, OVERRIDES, source="its flags")
    evaluate_math(Path(args.model), Path(args.dataset), args.split or math["split"], Path(args.out), math=math,
                  evaluate=sections["evaluate"], device=args.device)
    return 0
