"""`grail-sim simulate`: one predictor's sessions under every arm, or the observed ones (Contract 5).

    grail-sim simulate --predictor sft --model results/train/sft_gun/final --issue gun \
        --clean results/clean/interactions.parquet --capsule results/demo_capsule \
        --prompts results/prompts/gun_control --demo-truth results/demo_capsule \
        --out results/simulate/sft_gun --config config/config.yaml

`--predictor` is `observed` (the participants' own sessions), `position_prior`, `choice_model`,
`oracle` (demo only) or a model's name with `--model`. Settings: the `simulate:` section, with
evaluate's scoring and bootstrap settings and the prompts' rendering (docs/simulate.md).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from grail_sim import config
from grail_sim.issues import issue_name
from grail_sim.simulation.simulate import simulate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictor", required=True,
                        help="observed, position_prior, choice_model, oracle, or a model name (with --model)")
    parser.add_argument("--model", help="the model folder of a model predictor (full or peft adapter)")
    parser.add_argument("--issue", required=True, help="gun / gun_control or wage / minimum_wage")
    parser.add_argument("--clean", required=True, help="the clean table (results/clean/interactions.parquet)")
    parser.add_argument("--capsule", required=True,
                        help="the capsule folder whose recommendation trees the slates are drawn from")
    parser.add_argument("--prompts", required=True,
                        help="Contract-2 issue folder (its next_video train split fits the baselines)")
    parser.add_argument("--demo-truth", help="a demo capsule's demo_ground_truth.json or folder: video stances "
                                             "and the oracle (otherwise simulate.video_stances labels videos)")
    parser.add_argument("--out", required=True, help="output folder (sessions.jsonl, summary.json)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (model predictors)")
    config.add_arguments(parser, "simulate")


def run(args: argparse.Namespace) -> int:
    sections = config.from_arguments("simulate", args, os.environ)
    simulate(predictor=args.predictor, issue=issue_name(args.issue), clean=Path(args.clean), capsule=Path(args.capsule),
             prompts_dir=Path(args.prompts), out_dir=Path(args.out), section=sections["simulate"],
             evaluate_section=sections["evaluate"], prompts_section=sections["prompts"],
             model_dir=Path(args.model) if args.model else None,
             demo_truth=Path(args.demo_truth) if args.demo_truth else None, device=args.device)
    return 0
