"""`grail-sim report` (one model), `grail-sim report portfolio` (all models beside the baselines), the
math report and the simulation report (every simulate run beside the observed sessions).

    grail-sim report --model grail --issue gun --eval results/eval/grail_gun/{validation,test} \
        --train-dir results/train/grail_gun --out reports/grail_gun.md [--config config/config.yaml]
    grail-sim report portfolio --eval results/eval/*_gun/test --out reports/portfolio.md
    grail-sim report math --model grpo --eval results/eval/math_{base,sft,grpo}/test \
        --train-dir results/train/math_grpo --out reports/math_grpo.md
    grail-sim report simulation --eval results/simulate/{observed,position_prior,grail}_gun \
        --out reports/simulation_gun.md --figures reports/figures/simulation_gun

Settings come from the `report:` section; `--provenance-config` names the workflow config file
whose hash the report records.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from grail_sim import config
from grail_sim.errors import ReportError
from grail_sim.report.model_report import (
    MODEL_TEMPLATE,
    PORTFOLIO_TEMPLATE,
    render_model_report,
)
from grail_sim.report.portfolio import render_portfolio


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", choices=("model", "portfolio", "math", "simulation"), default="model",
                        help="model: one model on one issue (default); portfolio: every model side by side; "
                             "math: the math task's models (math_metrics.json) beside the zero-shot base; "
                             "simulation: every predictor's in-silico experiment beside the observed sessions")
    parser.add_argument("--eval", nargs="+", required=True, metavar="DIR",
                        help="evaluation folders (Contract 4), each holding metrics.json; the folder name is the "
                             "split. For `simulation`: the simulate run folders (Contract 5, results/simulate/"
                             "{predictor}_{short}), each holding summary.json, observed among them")
    parser.add_argument("--out", required=True, help="Markdown file to write")
    parser.add_argument("--model", help="model name (model and math reports)")
    parser.add_argument("--issue", help="issue, short or long name (model reports)")
    parser.add_argument("--train-dir", help="training folder (Contract 3) with metrics.jsonl; omit for `base`")
    parser.add_argument("--provenance-config", type=Path, metavar="FILE",
                        help="workflow config file whose path and sha256 the report records")
    parser.add_argument("--template", help="Jinja2 template (default: the packaged one for KIND)")
    parser.add_argument("--figures", help="folder for PNG figures (default: figures/ beside --out)")
    config.add_arguments(parser, "report")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    figures = Path(args.figures) if args.figures else out.parent / "figures"
    eval_dirs = [Path(d) for d in args.eval]
    # Resolved for every kind, so a bad key fails the portfolio too instead of being ignored.
    section = config.from_arguments("report", args, os.environ)["report"]
    if args.kind == "math":
        from grail_sim.report.math_report import MATH_TEMPLATE, render_math_report

        if not args.model:
            raise ReportError("a math report needs --model (the trained model among the --eval folders)")
        render_math_report(model=args.model, eval_dirs=eval_dirs, out=out, figures=figures,
                           train_dir=Path(args.train_dir) if args.train_dir else None,
                           template=Path(args.template) if args.template else MATH_TEMPLATE,
                           config=args.provenance_config, samples=section["samples"])
        return 0
    if args.kind == "simulation":
        from grail_sim.report.simulation_report import SIMULATION_TEMPLATE, render_simulation_report

        render_simulation_report(eval_dirs, out, figures,
                                 template=Path(args.template) if args.template else SIMULATION_TEMPLATE,
                                 config=args.provenance_config)
        return 0
    if args.kind == "portfolio":
        render_portfolio(eval_dirs, out, template=Path(args.template) if args.template else PORTFOLIO_TEMPLATE,
                         config=args.provenance_config)
        return 0
    if not args.model or not args.issue:
        raise ReportError("a model report needs --model and --issue")
    render_model_report(
        model=args.model, issue=args.issue, eval_dirs=eval_dirs, out=out, figures=figures,
        train_dir=Path(args.train_dir) if args.train_dir else None,
        template=Path(args.template) if args.template else MODEL_TEMPLATE,
        config=args.provenance_config,
        constant_share=section["constant_share"], samples=section["samples"],
    )
    return 0
