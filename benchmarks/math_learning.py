"""The math task's learning benchmark (#15): does RL on the verifiable task raise held-out pass@1?

    .venv/bin/python benchmarks/math_learning.py [--root results/bench_math] [--grpo-steps 40] [--rv-steps 10] [--samples 4] [--curve-every 20]

Runs, each step skipped when its output exists (so an interrupted run resumes where it stopped):

1. the generated problems (`grail-sim prompts math`, the `math:` section's defaults: 600/120/120);
2. sft from the base model (config/recipes/math/sft.yaml): the embedded model never writes the
   answer format zero-shot, so GRPO needs a start that does;
3. grpo from sft's adapter (config/recipes/math/grpo.yaml), with a checkpoint every 10 steps;
4. the reasoning-vocabulary comparison at equal steps (`--rv-steps`): grpo from sft's model with
   every weight training (`lora.enabled=false`, the adapter merged), without and with
   `reasoning_vocab_size` 49152 (the whole vocabulary duplicated);
5. evaluate-math on the test split (greedy pass@1 for all; 4 samples for pass@k of sft and grpo) of
   base, sft and every grpo run, and on the validation split (greedy) at sft and every 20 grpo steps:
   the learning curve.

Prints a Markdown table of every model (pass@1 with its interval, pass@4, parse and format rates) and
the paired pass@1 gains (trained - other, bootstrap over problems), and writes ROOT/summary.json with
the wall-clock seconds of every step. Results in benchmarks/math_learning.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parents[1]
GRAIL = [sys.executable, "-c", "import sys; from grail_sim.cli import main; sys.exit(main())"]
BASE = "results/models/base"
FULL_WEIGHTS = ["lora.enabled=false", "learning_rate=2e-5"]


def run_step(name: str, argv: list[str], done: Path, root: Path, timings: dict) -> None:
    """Run `grail-sim argv` unless `done` exists; its output goes to ROOT/logs/NAME.log."""
    if done.exists():
        print(f"[skip] {name}: {done} exists", flush=True)
        return
    started = time.perf_counter()
    print(f"[run] {name}: grail-sim {' '.join(argv)}", flush=True)
    log = root / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.call([*GRAIL, *argv], cwd=ROOT_DIR, stdout=handle, stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if code != 0:
        raise SystemExit(f"{name} failed (exit {code}); see {log}")
    timings[name] = round(time.perf_counter() - started, 1)
    print(f"[done] {name} in {timings[name]:.0f} s", flush=True)
    (root / "seconds.json").write_text(json.dumps(timings, indent=2))  # kept if a later step is interrupted


def train(name: str, recipe: str, model: str, root: Path, overrides: list[str], timings: dict) -> Path:
    out = root / name
    run_step(f"train_{name}", ["train", "--recipe", recipe, "--dataset", str(root / "prompts"), "--model", model,
                               "--out", str(out), "--threads", "2", "report_to=none", *overrides],
             out / "final" / "grail_sim.json", root, timings)
    return out


def evaluate(name: str, model: Path | str, split: str, root: Path, samples: int, timings: dict) -> Path:
    out = root / "eval" / name / split
    run_step(f"eval_{name}_{split}", ["evaluate-math", "--model", str(model), "--dataset", str(root / "prompts"),
                                      "--split", split, "--out", str(out), "--samples", str(samples),
                                      "--device", "cpu"], out / "math_metrics.json", root, timings)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT_DIR / "results" / "bench_math")
    parser.add_argument("--grpo-steps", type=int, default=40)
    parser.add_argument("--rv-steps", type=int, default=10)
    parser.add_argument("--samples", type=int, default=4, help="sampled replies per test problem of sft and grpo")
    parser.add_argument("--curve-every", type=int, default=20,
                        help="grpo steps between validation evaluations (0: no validation curve)")
    args = parser.parse_args()
    root = args.root.resolve()
    summary_path = root / "summary.json"
    seconds_path = root / "seconds.json"  # each step's seconds, written as it ends, kept across resumed runs
    timings = json.loads(seconds_path.read_text()) if seconds_path.is_file() else {}
    run_step("prompts", ["prompts", "math", "--out", str(root / "prompts")], root / "prompts" / "stats.json", root,
             timings)
    sft = train("sft", "config/recipes/math/sft.yaml", BASE, root, [], timings)
    steps = [f"max_steps={args.grpo_steps}", "save_steps=10", "save_total_limit=null"]
    grpo = train("grpo", "config/recipes/math/grpo.yaml", str(sft / "final"), root, steps, timings)
    equal = [f"max_steps={args.rv_steps}", "save_steps=10", *FULL_WEIGHTS]
    full = train("grpo_full", "config/recipes/math/grpo.yaml", str(sft / "final"), root, equal, timings)
    vocab = train("grpo_rv", "config/recipes/math/grpo.yaml", str(sft / "final"), root,
                  equal + ["reasoning_vocab_size=49152"], timings)
    # The base model writes prose to the token cap (60 greedy replies of up to 128 tokens took 5 min 24 s
    # here), so it is scored greedy only, as are the equal-step arms; --samples sets sft's and grpo's.
    test = {name: evaluate(name, model, "test", root, samples, timings)
            for name, model, samples in (("base", BASE, 0), ("sft", sft / "final", args.samples),
                                         ("grpo", grpo / "final", args.samples),
                                         ("grpo_full", full / "final", 0), ("grpo_rv", vocab / "final", 0))}
    curve = {}
    if args.curve_every:
        curve[0] = evaluate("sft", sft / "final", "validation", root, 0, timings)
        for step in range(args.curve_every, args.grpo_steps, args.curve_every):
            curve[step] = evaluate(f"grpo_step{step}", grpo / f"checkpoint-{step}", "validation", root, 0, timings)
        curve[args.grpo_steps] = evaluate("grpo", grpo / "final", "validation", root, 0, timings)
    summary = {"seconds": timings, **tables(test, curve)}
    summary_path.write_text(json.dumps(summary, indent=2))
    print_tables(summary)


def tables(test: dict[str, Path], curve: dict[int, Path]) -> dict:
    from grail_sim.report.math_report import load_math_evaluation, paired_gain

    evaluations = {name: load_math_evaluation(folder) for name, folder in test.items()}
    models = {}
    for name, evaluation in evaluations.items():
        overall = evaluation["metrics"]["overall"]
        models[name] = {key: overall[key] for key in ("pass@1_greedy", "pass@4", "parse_rate", "format_rate")
                        if key in overall}
        if "reasoning_tokens" in evaluation["metrics"]:
            models[name]["reasoning_tokens"] = evaluation["metrics"]["reasoning_tokens"]
    pairs = [("sft", "base"), ("grpo", "base"), ("grpo", "sft"), ("grpo_full", "sft"), ("grpo_rv", "sft"),
             ("grpo_rv", "grpo_full")]
    gains = {f"{a} - {b}": paired_gain(evaluations[a]["records"], evaluations[b]["records"], bootstrap=1000,
                                       confidence=0.95) for a, b in pairs}
    validation = {step: load_math_evaluation(folder)["metrics"]["overall"]["pass@1_greedy"]
                  for step, folder in sorted(curve.items())}
    return {"test": models, "gains": gains, "validation_curve": validation}


def _ci(stat: dict) -> str:
    if stat.get("ci_low") is None:
        return f"{100 * stat['value']:.1f}%"
    return f"{100 * stat['value']:.1f}% [{100 * stat['ci_low']:.1f}, {100 * stat['ci_high']:.1f}]"


def print_tables(summary: dict) -> None:
    print("\n| model | pass@1 greedy [95% CI] | pass@4 sampled | parsed | format |\n|---|---|---|---|---|")
    for name, figures in summary["test"].items():
        print(f"| {name} | {_ci(figures['pass@1_greedy'])} | {_ci(figures['pass@4']) if 'pass@4' in figures else '-'} "
              f"| {_ci(figures['parse_rate'])} | {_ci(figures['format_rate'])} |")
    print("\n| paired gain | problems | pass@1 [95% CI] | clears 0 |\n|---|---|---|---|")
    for name, gain in summary["gains"].items():
        print(f"| {name} | {gain['n_problems']} | {_ci(gain['pass@1_greedy'])} | {'yes' if gain['clears'] else 'no'} |")
    print("\n| grpo step | validation pass@1 greedy [95% CI] |\n|---|---|")
    for step, stat in summary["validation_curve"].items():
        print(f"| {step} | {_ci(stat)} |")
    print("\n| step | seconds |\n|---|---|")
    for name, seconds in summary["seconds"].items():
        print(f"| {name} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
