"""The `grail-sim` console entry point: one subcommand per stage.

Each stage module exposes `add_arguments(parser)` and `run(args) -> int`. Only the module of the
chosen subcommand is imported, so `grail-sim clean` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "model": ("grail_sim.model.cli", "build the embedded base model offline, or smoke-test a model"),
    "demo-capsule": ("grail_sim.data.demo_cli", "write a synthetic capsule in the CodeOcean layout"),
    "clean": ("grail_sim.data.clean_cli", "capsule or pre-cleaned dataset -> interaction rows"),
    "prompts": ("grail_sim.prompts.cli", "build, show or import chat-prompt datasets"),
    "train": ("grail_sim.training.cli", "GRPO / GRAIL / MaxEnt-GRPO training with TRL"),
    "evaluate": ("grail_sim.evaluation.cli", "generate and score predictions against baselines"),
    "report": ("grail_sim.report.cli", "render Markdown reports with Jinja2"),
}


def _usage() -> str:
    lines = ["usage: grail-sim COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<14}{summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run `grail-sim COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"grail-sim: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"grail-sim {name}", description=summary)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
