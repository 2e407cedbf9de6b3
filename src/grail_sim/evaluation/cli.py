"""`grail-sim evaluate`: see grail_sim.evaluation.evaluate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from grail_sim.errors import EvaluationError
from grail_sim.evaluation.evaluate import evaluate
from grail_sim.evaluation.generators import GenerationSettings
from grail_sim.rows import TASKS


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="HF model folder (full or peft adapter)")
    parser.add_argument("--model-name", help="name recorded in metrics.json (default: inferred from --model)")
    parser.add_argument("--prompts", required=True,
                        help="Contract-2 issue folder holding one DatasetDict per task, e.g. results/prompts/gun_control")
    parser.add_argument("--tasks", default="next_video,opinion", help="comma-separated tasks (default: %(default)s)")
    parser.add_argument("--split", default="validation", help="split to evaluate (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder (predictions.jsonl, metrics.json)")
    parser.add_argument("--train-split-dir",
                        help="Contract-2 issue folder whose `train` split teaches the most-frequent and global-mean "
                             "baselines (default: --prompts when it has a train split; otherwise the evaluated rows)")
    parser.add_argument("--max-rows", type=int, default=0, help="rows per task, seeded sample; 0 = all")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="prompts per generate call; 1 is fastest on CPU (prefill-bound), raise it on a GPU")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--seed", type=int, default=0, help="row sampling, sampling decoding and bootstrap seed")
    parser.add_argument("--bootstrap-samples", type=int, default=1000)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--direction-tolerance", type=float, default=1e-6,
                        help="|after - before| at or below this is `no_change` (0-1 scale)")
    parser.add_argument("--report-samples", type=int, default=3, help="prompts with full responses kept per task")
    parser.add_argument("--backend", choices=("auto", "hf", "vllm"), default="auto",
                        help="auto: vLLM when importable with CUDA, else HF generate")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (HF backend)")
    parser.add_argument("--dtype", default="float32", help="HF backend weights dtype")


def run(args: argparse.Namespace) -> int:
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise EvaluationError(f"--tasks {args.tasks!r}: unknown task(s) {unknown}; valid: {', '.join(TASKS)}")
    if args.batch_size < 1 or args.max_new_tokens < 1 or args.max_rows < 0:
        raise EvaluationError("--batch-size and --max-new-tokens must be >= 1 and --max-rows >= 0")
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, batch_size=args.batch_size,
        seed=args.seed, backend=args.backend, device=args.device, dtype=args.dtype,
    )
    evaluate(
        model_dir=Path(args.model), prompts_dir=Path(args.prompts), tasks=tasks, split=args.split,
        out_dir=Path(args.out), settings=settings, max_rows=args.max_rows,
        train_split_dir=Path(args.train_split_dir) if args.train_split_dir else None,
        model_name=args.model_name, bootstrap_samples=args.bootstrap_samples, confidence=args.confidence,
        direction_tolerance=args.direction_tolerance, report_samples=args.report_samples,
    )
    return 0
