"""`grail-sim evaluate`: score and/or generate answers for a prompt dataset (Contract 4).

    grail-sim evaluate --model results/models/base --prompts results/prompts/gun_control \
        --split validation --out results/eval/base_gun/validation [--config config/config.yaml]

Settings come from the `evaluate:` section (mode, rows, dtype, decoding, bootstrap) and
`prompts.direction_tolerance` (the one definition of "no change" in opinion); see
grail_sim.evaluation.evaluate.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from grail_sim import config
from grail_sim.evaluation.evaluate import evaluate
from grail_sim.evaluation.generators import GenerationSettings
from grail_sim.model.loading import resolve_dtype


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="HF model folder (full or peft adapter)")
    parser.add_argument("--model-name", help="name recorded in metrics.json (default: inferred from --model)")
    parser.add_argument("--prompts", required=True,
                        help="Contract-2 issue folder holding one DatasetDict per task, e.g. results/prompts/gun_control")
    parser.add_argument("--split", default="validation", help="split to evaluate (default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder (predictions.jsonl, metrics.json)")
    parser.add_argument("--train-split-dir",
                        help="Contract-2 issue folder whose `train` split teaches the most-frequent and global-mean "
                             "baselines (default: --prompts when it has a train split; otherwise the evaluated rows)")
    parser.add_argument("--external", action="store_true",
                        help="an external dataset: cap rows with evaluate.external.{score,generate}_rows "
                             "instead of evaluate.{score,generate}_rows")
    parser.add_argument("--demo-truth",
                        help="a demo capsule's demo_ground_truth.json (or the capsule folder): adds the demo's "
                             "oracle, the Bayes-optimal ceiling, and each source's recovered share of its gain")
    parser.add_argument("--tasks", nargs="+", choices=["next_video", "opinion"],
                        help="tasks to evaluate (default: evaluate.tasks; the workflow passes "
                             "evaluate.trained_model_tasks for a trained model)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (HF backend)")
    config.add_arguments(parser, "evaluate")


def run(args: argparse.Namespace) -> int:
    sections = config.from_arguments("evaluate", args, os.environ)
    section = sections["evaluate"]
    settings = GenerationSettings(
        max_new_tokens=section["max_new_tokens"], temperature=section["temperature"],
        batch_size=section["batch_size"], seed=section["seed"], backend=section["backend"],
        device=args.device, dtype=resolve_dtype(section["dtype"], args.device),
    )
    rows = section["external"] if args.external else section
    evaluate(
        model_dir=Path(args.model), prompts_dir=Path(args.prompts), tasks=args.tasks or section["tasks"], split=args.split,
        out_dir=Path(args.out), settings=settings,
        mode=section["mode"], generate_rows=rows["generate_rows"], score_rows=rows["score_rows"],
        score_batch_size=section["score_batch_size"], score_think=section["score_think"],
        train_split_dir=Path(args.train_split_dir) if args.train_split_dir else None,
        model_name=args.model_name, bootstrap_samples=section["bootstrap_samples"],
        confidence=section["confidence"], direction_tolerance=sections["prompts"]["direction_tolerance"],
        report_samples=section["report_samples"],
        demo_truth=Path(args.demo_truth) if args.demo_truth else None,
    )
    return 0
