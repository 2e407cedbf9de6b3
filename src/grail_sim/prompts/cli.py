"""`grail-sim prompts build|show|import|math`.

  grail-sim prompts build  --interactions PARQUET --issue gun_control --tokenizer DIR --out-dir DIR
  grail-sim prompts show   --issue gun_control --n 3 [--task next_video] [--prompts-dir results/prompts]
  grail-sim prompts import --jsonl FILE --out DIR
  grail-sim prompts math   --out results/prompts/math [--config FILE] [--train N --validation N --test N]
                           [--seed N] [--style answer|boxed] [--dataset NAME|FOLDER|FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import Counter
from pathlib import Path

from grail_sim import config
from grail_sim.errors import PromptError
from grail_sim.issues import issue_name
from grail_sim.prompts.build import build_issue, write_build
from grail_sim.prompts.importer import import_jsonl, write_import
from grail_sim.prompts.settings import (
    PromptSettings,
    load_settings,
    tokenizer_counter,
)
from grail_sim.rows import SPLITS, TASKS

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="action", required=True)
    build = commands.add_parser("build", help="Contract-1 parquet -> prompt datasets + stats.json")
    build.add_argument("--interactions", required=True, help="results/clean/interactions.parquet")
    build.add_argument("--issue", required=True, help="gun_control or minimum_wage (gun/wage accepted)")
    build.add_argument("--tokenizer", required=True, help="model folder whose tokenizer counts prompt tokens")
    build.add_argument("--out-dir", required=True, help="results/prompts/{issue}")
    _settings_arguments(build)

    show = commands.add_parser("show", help="print rendered prompts")
    show.add_argument("--issue", required=True)
    show.add_argument("--n", type=int, default=3)
    show.add_argument("--task", choices=TASKS, default="next_video")
    show.add_argument("--split", choices=SPLITS, default="train")
    show.add_argument("--prompts-dir", default="results/prompts")

    imp = commands.add_parser("import", help="external chat-prompt JSONL -> Contract-2 DatasetDict (test split)")
    imp.add_argument("--jsonl", required=True)
    imp.add_argument("--out", required=True)
    imp.add_argument("--our-system-prompt", action="store_true",
                     help="replace each row's system message with the configured one (user text kept)")
    _settings_arguments(imp)
    _math_arguments(commands)


def _math_arguments(commands) -> None:
    math = commands.add_parser("math", help="the math task's problems: seeded arithmetic with graded difficulty, or "
                                            "a dataset mapped onto the math contract (config section math:)")
    math.add_argument("--out", required=True, help="output folder, e.g. results/prompts/math")
    config.add_arguments(math, "prompts math")
    # By hand, these override the section's values (whose defaults are the schema's).
    for split in SPLITS:
        math.add_argument(f"--{split}", type=int, default=None, help=f"math.rows.{split}: {split} problems")
    math.add_argument("--seed", type=int, default=None, help="math.seed")
    math.add_argument("--style", choices=("answer", "boxed"), default=None,
                      help="math.style: answer (<think>..</think><answer>..</answer>) or boxed (\\boxed{..})")
    math.add_argument("--dataset", default=None, help="math.dataset: a hub name, a datasets folder or a file")


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    config.add_arguments(parser, "prompts")


def settings_from_args(args: argparse.Namespace) -> PromptSettings:
    """The `prompts:` section from --config / --config-json (schema defaults filled)."""
    return load_settings(config.from_arguments("prompts", args, os.environ)["prompts"])


def run(args: argparse.Namespace) -> int:
    actions = {"build": _run_build, "show": _run_show, "import": _run_import, "math": _run_math}
    return actions[args.action](args)


def _run_build(args: argparse.Namespace) -> int:
    import pandas as pd

    settings = settings_from_args(args)
    path = Path(args.interactions)
    if not path.is_file():
        raise PromptError(f"interactions file not found: {path}")
    frame = pd.read_parquet(path)
    LOG.info("building prompts for %s from %s (%d rows), settings %s", args.issue, path, len(frame),
             json.dumps(settings.describe()))
    out, stats = build_issue(frame, args.issue, settings, tokenizer_counter(args.tokenizer), source=str(path))
    stats["tokenizer"] = str(args.tokenizer)
    stats["interactions"] = str(path)
    write_build(out, stats, args.out_dir)
    for task in TASKS:
        tokens = stats[task]["prompt_tokens"]["train"]
        LOG.info("%s: rows %s, prompt tokens train mean %.0f p95 %d max %d", task,
                 {s: len(out[task][s]) for s in SPLITS}, tokens["mean"], tokens["p95"], tokens["max"])
    LOG.info("wrote %s", args.out_dir)
    return 0


def _run_show(args: argparse.Namespace) -> int:
    from datasets import load_from_disk

    folder = Path(args.prompts_dir) / issue_name(args.issue) / args.task
    if not folder.exists():
        raise PromptError(f"no prompt dataset at {folder}; run `grail-sim prompts build` (or snakemake) first")
    split = load_from_disk(str(folder))[args.split]
    for index in range(min(args.n, len(split))):
        row = split[index]
        print(f"=== {row['id']} ({args.task}, {args.split}) ===")
        for message in row["prompt"]:
            print(f"--- {message['role']} ---\n{message['content']}")
        gold = row.get("answer") or row["gold_index"]
        print(f"--- gold answer: {gold} ---\n")
    return 0


def _run_import(args: argparse.Namespace) -> int:
    rows = import_jsonl(args.jsonl, settings_from_args(args), our_system_prompt=args.our_system_prompt)
    write_import(rows, args.out)
    tasks = Counter(r["task"] for r in rows)
    LOG.info("imported %d rows (%s) from %s into %s (split test)", len(rows), dict(tasks), args.jsonl, args.out)
    return 0


def _run_math(args: argparse.Namespace) -> int:
    from grail_sim.prompts.math_task import write_math_dataset

    flags = {**{split: f"rows.{split}" for split in SPLITS}, "seed": "seed", "style": "style", "dataset": "dataset"}
    section = config.section_with_flags("math", config.from_arguments("prompts math", args, os.environ)["math"], args,
                                        flags, source="its flags")
    stats = write_math_dataset(args.out, section)
    LOG.info("math problems from %s (%s style): %s -> %s", stats["source"], stats["style"], stats["rows"], args.out)
    print(json.dumps({"out": args.out, **stats}))
    return 0
