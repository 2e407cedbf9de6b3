"""`grail-sim train`: see grail_sim.training.main.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from grail_sim.errors import RecipeError, ServerError, TrainingDataError
from grail_sim.training.recipe import (
    ENV_OVERRIDES,
    env_overrides,
    load_recipe,
    recipe_help,
)

LOG = logging.getLogger("grail_sim.train")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = recipe_help()
    parser.add_argument("--recipe", required=True, help="recipe YAML (config/recipes/{grpo,grail,maxent}.yaml)")
    parser.add_argument("--dataset", required=True, help="prompts folder, e.g. results/prompts/gun_control/next_video")
    parser.add_argument("--model", required=True, help="base model folder, e.g. results/models/base")
    parser.add_argument("--out", required=True, help="output folder, e.g. results/train/grail_gun")
    parser.add_argument("--max-steps", type=int, default=None, help="override the recipe's max_steps")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice; the rule passes its `threads`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key (YAML value; dotted keys for sections, e.g. gail.weight=0.5); "
                             "wins over the environment overrides listed below")


def resolved_overrides(cli_overrides: list[str]) -> list[str]:
    """The environment's overrides (one log line each), then the command line's `--set` ones."""
    from_env = env_overrides(os.environ)
    variables = {key: variable for variable, key in ENV_OVERRIDES.items()}
    for text in from_env:
        key = text.split("=", 1)[0]
        LOG.info("environment %s=%s overrides recipe key %s", variables[key], os.environ[variables[key]].strip(), key)
    return from_env + list(cli_overrides)


def run(args: argparse.Namespace) -> int:
    from grail_sim.training import vllm_server
    from grail_sim.training.main import train

    try:
        overrides = resolved_overrides(args.overrides)
        script, grpo = load_recipe(args.recipe, overrides, args.max_steps)
        if grpo.get("use_vllm") and grpo.get("vllm_mode") == "server" and not os.environ.get(vllm_server.WORKER_ENV):
            # The launched workers inherit this environment and resolve the same overrides again.
            argv = ["train", "--recipe", args.recipe, "--dataset", args.dataset, "--model", args.model,
                    "--out", args.out]
            if args.max_steps is not None:
                argv += ["--max-steps", str(args.max_steps)]
            for override in args.overrides:
                argv += ["--set", override]
            return vllm_server.orchestrate(argv, model=args.model, out_dir=args.out, settings=script.vllm_server,
                                           grpo=grpo, accelerate_config=script.accelerate_config)
        train(args.recipe, args.dataset, args.model, args.out, overrides=overrides, max_steps=args.max_steps,
              threads=args.threads)
    except (RecipeError, TrainingDataError, ServerError) as err:
        print(f"grail-sim train: {err}", file=sys.stderr)
        return 2
    return 0
