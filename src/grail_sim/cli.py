"""The `grail-sim` console entry point: one subcommand per stage.

Each stage's CLI module exposes `add_arguments(parser)` and `run(args) -> int`. Only the module of
the chosen subcommand is imported, so `grail-sim clean` never pays for importing torch.

Errors: a `GrailSimError` (a missing file, column or key, a bad value) prints one line,
`grail-sim <stage>: <message>`, and exits 2; anything else is a bug and keeps its traceback.
`LOGLEVEL` (default INFO) sets the log level.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from grail_sim.errors import GrailSimError

COMMANDS = {
    "model": ("grail_sim.model.cli", "build the embedded base model offline, or smoke-test a model"),
    "demo-capsule": ("grail_sim.data.demo_cli", "write a synthetic capsule in the CodeOcean layout"),
    "clean": ("grail_sim.data.clean_cli", "capsule or pre-cleaned dataset -> interaction rows"),
    "prompts": ("grail_sim.prompts.cli", "build, show or import chat-prompt datasets"),
    "train": ("grail_sim.training.cli", "GRPO / GRAIL / MaxEnt-GRPO training with TRL"),
    "evaluate": ("grail_sim.evaluation.cli", "generate and score predictions against baselines"),
    "evaluate-math": ("grail_sim.evaluation.math_eval", "pass@1 and pass@k of the math task, with intervals"),
    "simulate": ("grail_sim.simulation.cli", "run the experiment in silico: every arm's sessions with a predictor"),
    "report": ("grail_sim.report.cli", "render Markdown reports with Jinja2"),
    "config": ("grail_sim.config_cli", "print the resolved workflow configuration (defaults filled)"),
}
USER_ERROR = 2


def _usage() -> str:
    lines = ["usage: grail-sim COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<14}{summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run `grail-sim COMMAND --help` for a command's options."]
    return "\n".join(lines)


def _log_level() -> int:
    name = os.environ.get("LOGLEVEL", "INFO").strip().upper() or "INFO"
    level = logging.getLevelName(name)
    if not isinstance(level, int):
        raise GrailSimError(f"LOGLEVEL={name!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    return level


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"grail-sim: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return USER_ERROR
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"grail-sim {name}", description=summary,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    try:
        # argparse itself exits 2 with a usage line on a bad flag; `train` hands TRL's flags on.
        parse = getattr(module, "parse_arguments", None)
        args = parse(parser, rest) if parse else parser.parse_args(rest)
        logging.basicConfig(level=_log_level(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
        return int(module.run(args) or 0)
    except GrailSimError as err:
        print(f"grail-sim {name}: {err}", file=sys.stderr)
        return USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
