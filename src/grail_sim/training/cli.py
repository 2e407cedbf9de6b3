"""`grail-sim train`: see grail_sim.training.main. Every recipe value is TRL's flag; the options
below are the run's own (threads, the workflow config, the vLLM server's log).

    grail-sim train --config RECIPE.yaml --dataset PROMPTS --model MODEL --out OUT [--key value ...]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from grail_sim import config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.allow_abbrev = False  # --config (the recipe, TRL's) is not short for --config-json
    parser.usage = ("grail-sim train --config RECIPE.yaml --dataset PROMPTS --model MODEL --out OUT "
                    "[--KEY VALUE | KEY=VALUE | --set KEY=VALUE ...] [--threads N] [--workflow-config FILE]")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: train.threads; the rule passes its `threads`)")
    parser.add_argument("--server-log", default=None,
                        help="where the vLLM server of a vllm_mode: server run writes its log (the rule's log "
                             "folder; default: the recipe's vllm_server_log, else OUT/vllm_server.log)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workflow-config", type=Path, metavar="FILE",
                       help="workflow config file (config/config.yaml): its train section's overrides and "
                            "max_steps apply under the command line (--config is the recipe, as in TRL)")
    group.add_argument("--config-json", metavar="JSON",
                       help="the resolved train section as one JSON object (how the workflow's rules call)")


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The run's own options; every other word (the recipe and its flags) is TRL's, in `recipe_args`."""
    if {"-h", "--help"} & set(argv):
        from grail_sim.training.arguments import recipe_help

        parser.epilog = recipe_help()  # imports TRL: only when shown
    args, rest = parser.parse_known_args(argv)
    args.recipe_args = rest
    return args


def run(args: argparse.Namespace) -> int:
    from grail_sim.training import vllm_server
    from grail_sim.training.main import train
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    section = config.from_arguments("train", argparse.Namespace(config=args.workflow_config,
                                                                config_json=args.config_json), os.environ)["train"]
    recipe = parse_recipe(args.recipe_args, workflow_overrides(section), defaults=run_defaults)
    threads = args.threads if args.threads is not None else section["threads"]
    config_ = recipe.config
    if getattr(config_, "use_vllm", False) and config_.vllm_mode == "server" \
            and not os.environ.get(vllm_server.WORKER_ENV):
        # The launched workers parse the same command line and train section, so they train the same recipe.
        argv = ["train", *args.recipe_args, "--config-json", json.dumps({"train": section})]
        if args.threads is not None:
            argv += ["--threads", str(args.threads)]
        context = vllm_server.context_length(recipe.script.dataset_name, recipe.script.dataset_train_split,
                                             int(config_.max_completion_length or 256))
        return vllm_server.orchestrate(argv, model=served_model(recipe.model.model_name_or_path), config=config_,
                                       log=args.server_log, context=context)
    train(recipe, threads=threads)
    return 0


def workflow_overrides(section: dict) -> dict:
    """The workflow config's layer of a run: `train.overrides` (with the environment's), then
    `train.max_steps`; the parser keeps those the recipe's trainer reads."""
    overrides = dict(section.get("overrides") or {})
    if section.get("max_steps") is not None:
        overrides["max_steps"] = int(section["max_steps"])
    return overrides


def served_model(model: str) -> str:
    """The folder vLLM serves: an adapter's base (TRL syncs the merged adapter's weights into vLLM
    every step, so the server needs the base architecture and weights, not the adapter folder)."""
    if (Path(model) / "adapter_config.json").is_file():
        from grail_sim.model.loading import adapter_base

        return adapter_base(model)
    return model
