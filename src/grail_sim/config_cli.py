"""`grail-sim config`: the workflow configuration as the stages see it, every default filled.

    grail-sim config                       # the defaults (the schema's)
    grail-sim config --config config/config.yaml [--section prompts]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from grail_sim import config
from grail_sim.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="workflow config file (default: none, defaults only)")
    parser.add_argument("--section", help="print one section only (for example prompts)")


def run(args: argparse.Namespace) -> int:
    import yaml

    values = config.read_file(args.config) if args.config is not None else {}
    for message in config.apply_environment(values, os.environ):
        print(f"# {message}")
    resolved = config.resolve(values, source=str(args.config or "defaults"))
    if args.section is not None:
        if args.section not in resolved:
            raise ConfigError(f"--section {args.section!r}: no such config section; sections: {sorted(resolved)}")
        resolved = {args.section: resolved[args.section]}
    print(yaml.safe_dump(resolved, sort_keys=False, width=110), end="")
    return 0
