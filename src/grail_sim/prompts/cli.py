"""`grail-sim prompts build|show|import`.

  grail-sim prompts build  --interactions PARQUET --issue gun_control --tokenizer DIR --out-dir DIR
  grail-sim prompts show   --issue gun_control --n 3 [--task next_video] [--prompts-dir results/prompts]
  grail-sim prompts import --jsonl FILE --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from grail_sim.errors import PromptError
from grail_sim.issues import issue_name
from grail_sim.prompts.build import build_issue, write_build
from grail_sim.prompts.importer import import_jsonl, write_import
from grail_sim.prompts.settings import (
    OPINION_TARGETS,
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


def _settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-history", type=int, help="most recent prior watches shown (0 = full history)")
    parser.add_argument("--show-ids", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--max-prompt-tokens", type=int)
    parser.add_argument("--system-next-video", help="Jinja2 system prompt for next-video choice")
    parser.add_argument("--system-opinion-index", help="Jinja2 system prompt for the opinion index")
    parser.add_argument("--system-opinion-direction", help="Jinja2 system prompt for the opinion direction")
    parser.add_argument("--profile-fields", help="column -> phrase table (the pre-treatment allow-list)")
    parser.add_argument("--opinion-target", choices=OPINION_TARGETS)
    parser.add_argument("--direction-tolerance", type=float)
    parser.add_argument("--max-missing-metadata-gap", type=float)


def settings_from_args(args: argparse.Namespace) -> PromptSettings:
    section: dict[str, Any] = {}
    for key in ("max_history", "show_ids", "max_prompt_tokens", "profile_fields", "opinion_target",
                "direction_tolerance", "max_missing_metadata_gap"):
        if getattr(args, key, None) is not None:
            section[key] = getattr(args, key)
    systems = {task: getattr(args, f"system_{task}") for task in ("next_video", "opinion_index", "opinion_direction")}
    section["system_prompts"] = {k: v for k, v in systems.items() if v}
    return load_settings(section)


def run(args: argparse.Namespace) -> int:
    try:
        if args.action == "build":
            return _run_build(args)
        if args.action == "show":
            return _run_show(args)
        return _run_import(args)
    except (PromptError, ValueError, FileNotFoundError) as err:
        LOG.error("%s", err)
        return 1


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
    rows = import_jsonl(args.jsonl, settings_from_args(args) if args.our_system_prompt else None)
    write_import(rows, args.out)
    tasks = Counter(r["task"] for r in rows)
    LOG.info("imported %d rows (%s) from %s into %s (split test)", len(rows), dict(tasks), args.jsonl, args.out)
    return 0
