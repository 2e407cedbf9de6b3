"""`grail-sim report` (one model) and `grail-sim report portfolio` (all models beside the baselines).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from grail_sim.errors import ReportError
from grail_sim.report.model_report import (
    MODEL_TEMPLATE,
    PORTFOLIO_TEMPLATE,
    render_model_report,
)
from grail_sim.report.portfolio import render_portfolio


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", choices=("model", "portfolio"), default="model",
                        help="model: one model on one issue (default); portfolio: every model side by side")
    parser.add_argument("--eval", nargs="+", required=True, metavar="DIR",
                        help="evaluation folders (Contract 4), each holding metrics.json; the folder name is the split")
    parser.add_argument("--out", required=True, help="Markdown file to write")
    parser.add_argument("--model", help="model name (model reports)")
    parser.add_argument("--issue", help="issue, short or long name (model reports)")
    parser.add_argument("--train-dir", help="training folder (Contract 3) with metrics.jsonl; omit for `base`")
    parser.add_argument("--config", help="workflow config file, hashed for provenance")
    parser.add_argument("--template", help="Jinja2 template (default: the packaged one for KIND)")
    parser.add_argument("--figures", help="folder for PNG figures (default: figures/ beside --out)")
    parser.add_argument("--constant-share", type=float, default=0.75,
                        help="flag a model whose most common answer has at least this share of parsed answers")
    parser.add_argument("--samples", type=int, default=3, help="sample prompts with responses shown per task")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    figures = Path(args.figures) if args.figures else out.parent / "figures"
    eval_dirs = [Path(d) for d in args.eval]
    if args.kind == "portfolio":
        render_portfolio(eval_dirs, out, template=Path(args.template) if args.template else PORTFOLIO_TEMPLATE,
                         config=Path(args.config) if args.config else None)
        return 0
    if not args.model or not args.issue:
        raise ReportError("a model report needs --model and --issue")
    render_model_report(
        model=args.model, issue=args.issue, eval_dirs=eval_dirs, out=out, figures=figures,
        train_dir=Path(args.train_dir) if args.train_dir else None,
        template=Path(args.template) if args.template else MODEL_TEMPLATE,
        config=Path(args.config) if args.config else None,
        constant_share=args.constant_share, samples=args.samples,
    )
    return 0
