"""`grail-sim train`: see grail_sim.training.main.
"""

from __future__ import annotations

import argparse
import json
import os

from grail_sim import config
from grail_sim.training.recipe import (
    load_recipe,
    recipe_help,
    shared_overrides_for,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = recipe_help()
    parser.add_argument("--recipe", required=True, help="recipe YAML (config/recipes/{sft,grpo,grail,maxent}.yaml)")
    parser.add_argument("--dataset", required=True, help="prompts folder, e.g. results/prompts/gun_control/next_video")
    parser.add_argument("--model", required=True, help="starting model folder: the base (results/models/base) or a "
                                                       "trained one, e.g. sft's adapter results/train/sft_gun/final")
    parser.add_argument("--out", required=True, help="output folder, e.g. results/train/grail_gun")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="override the recipe's max_steps (wins over train.max_steps)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: train.threads; the rule passes its `threads`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key (YAML value; dotted keys for sections, e.g. gail.weight=0.5); "
                             "wins over train.overrides and the environment overrides listed below")
    parser.add_argument("bare_overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="the same overrides in the Hydra form of the seed launchers, after the options: "
                             "`learning_rate=1e-5`, or with the launchers' group prefix `training.learning_rate=1e-5`; "
                             "applied after every --set")
    parser.add_argument("--server-log", default=None,
                        help="where the vLLM server of a vllm_mode: server run writes its log (the rule's log "
                             "folder; default: vllm_server.log of the recipe, else OUT/vllm_server.log)")
    config.add_arguments(parser, "train")


def run(args: argparse.Namespace) -> int:
    from grail_sim.training import vllm_server
    from grail_sim.training.main import train

    section = config.from_arguments("train", args, os.environ)["train"]
    # The config's overrides (with any environment ones) first, then --set, which wins. The config's
    # apply to every trainer, so those only another kind of recipe has are skipped for this one.
    shared = shared_overrides_for(args.recipe, config.recipe_overrides(section["overrides"]))
    overrides = shared + list(args.overrides) + [hydra_override(text) for text in args.bare_overrides]
    max_steps = args.max_steps if args.max_steps is not None else section["max_steps"]
    threads = args.threads if args.threads is not None else section["threads"]
    script, grpo = load_recipe(args.recipe, overrides, max_steps)
    if grpo.get("use_vllm") and grpo.get("vllm_mode") == "server" and not os.environ.get(vllm_server.WORKER_ENV):
        # The launched workers get the resolved overrides, not the environment, so they train the same recipe.
        argv = ["train", "--recipe", args.recipe, "--dataset", args.dataset, "--model", args.model,
                "--out", args.out, "--config-json", json.dumps({"train": {**section, "overrides": {}}})]
        if max_steps is not None:
            argv += ["--max-steps", str(max_steps)]
        for override in overrides:
            argv += ["--set", override]
        context = vllm_server.context_length(args.dataset, script.train_split,
                                             int(grpo.get("max_completion_length") or 256))
        if args.server_log and not script.vllm_server.log:
            script.vllm_server.log = args.server_log
        return vllm_server.orchestrate(argv, model=served_model(args.model), out_dir=args.out,
                                       settings=script.vllm_server, grpo=grpo,
                                       accelerate_config=script.accelerate_config, context=context)
    train(args.recipe, args.dataset, args.model, args.out, overrides=overrides, max_steps=max_steps, threads=threads)
    return 0


# The seed launchers' Hydra groups that hold trainer arguments: `training.learning_rate=1e-5` is this
# project's `learning_rate=1e-5`.
HYDRA_GROUPS = ("training.",)


def hydra_override(text: str) -> str:
    """A bare `key=value` of the Hydra form as a --set override (the group prefix dropped); a word
    without `=` fails naming it, as argparse would."""
    from grail_sim.errors import RecipeError

    if "=" not in text:
        raise RecipeError(f"{text!r} is not an override: write KEY=VALUE (for example learning_rate=1e-5)")
    for group in HYDRA_GROUPS:
        if text.startswith(group):
            return text[len(group):]
    return text


def served_model(model: str) -> str:
    """The folder vLLM serves: an adapter's base (TRL syncs the merged adapter's weights into vLLM
    every step, so the server needs the base architecture and weights, not the adapter folder)."""
    from pathlib import Path

    if (Path(model) / "adapter_config.json").is_file():
        from grail_sim.model.loading import adapter_base

        return adapter_base(model)
    return model
