"""Train-stage benchmarks, written to benchmarks/train_benchmark.json and printed as Markdown.

1. Overhead: seconds per GRPO step of `grail-sim train` (same settings) against the bare
   TRL script benchmarks/bare_trl_grpo.py on the same model and data.
2. GRAIL's discriminator share of step time, from a GRAIL run's metrics.jsonl (`gail/seconds` / `step_time`).
3. The demo's learning curve: reward per step from a run's metrics.jsonl, plus held-out accuracy
   before/after from its heldout.json (recipes' `heldout_rows`).

    python benchmarks/train_benchmark.py --model results/models/base \
        --dataset results/prompts/gun_control/next_video --steps 4 --threads 1 \
        --runs results/train/grpo_gun results/train/grail_gun
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def overhead(model: str, dataset: str, steps: int, threads: int) -> dict:
    """Median step time of our CLI and of the bare TRL script (first step dropped: warm caches)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    with tempfile.TemporaryDirectory() as tmp:
        ours = Path(tmp) / "ours"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "grail_sim.cli", "train", "--config", str(ROOT / "config/recipes/grpo.yaml"),
                        "--dataset", dataset, "--model", model, "--out", str(ours), "--max_steps", str(steps),
                        "--threads", str(threads), "--set", "report_to=none", "--set", "save_steps=1000"],
                       check=True, env=env, capture_output=True)
        ours_wall = time.perf_counter() - started
        ours_steps = [row["step_time"] for row in _rows(ours / "metrics.jsonl") if "step_time" in row]
        started = time.perf_counter()
        bare = subprocess.run([sys.executable, str(ROOT / "benchmarks/bare_trl_grpo.py"), "--model", model,
                               "--dataset", dataset, "--out", str(Path(tmp) / "bare"), "--max-steps", str(steps),
                               "--threads", str(threads)], check=True, env=env, capture_output=True, text=True)
        bare_wall = time.perf_counter() - started
        bare_steps = json.loads(bare.stdout.strip().splitlines()[-1])["step_seconds"]
    ours_median = statistics.median(ours_steps[1:] or ours_steps)
    bare_median = statistics.median(bare_steps[1:] or bare_steps)
    return {"steps": steps, "ours_step_seconds": ours_steps, "bare_step_seconds": bare_steps,
            "ours_median_s": ours_median, "bare_median_s": bare_median,
            "overhead_ratio": ours_median / bare_median, "ours_wall_s": ours_wall, "bare_wall_s": bare_wall}


def run_summary(run_dir: Path) -> dict:
    rows = _rows(run_dir / "metrics.jsonl")
    steps = [row for row in rows if "reward" in row]
    summary = {
        "run": str(run_dir),
        "curve": [{key: row.get(key) for key in ("step", "reward", "rewards/answer_accuracy/mean",
                                                  "rewards/format/mean", "rewards/gail/mean", "step_time",
                                                  "gail/seconds", "gail/accuracy", "gail/p_human_gold",
                                                  "gail/p_human_policy") if key in row} for row in steps],
    }
    gail = [(row["gail/seconds"], row["step_time"]) for row in steps if "gail/seconds" in row and row.get("step_time")]
    if gail:
        summary["gail_share_of_step"] = sum(g for g, _ in gail) / sum(t for _, t in gail)
    if steps:
        summary["median_step_s"] = statistics.median(row["step_time"] for row in steps if "step_time" in row)
    heldout = run_dir / "heldout.json"
    if heldout.is_file():
        summary["heldout"] = json.loads(heldout.read_text())
    provenance = run_dir / "final" / "grail_sim.json"
    if provenance.is_file():
        record = json.loads(provenance.read_text())
        summary["total"] = {key: record.get(key) for key in ("train_seconds", "global_step")}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="results/models/base")
    parser.add_argument("--dataset", default="results/prompts/gun_control/next_video")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", nargs="*", default=[], help="finished run folders to summarise")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/train_benchmark.json"))
    args = parser.parse_args()

    result = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "threads": args.threads,
                          "load_average_at_start": os.getloadavg()}}
    if not args.skip_overhead:
        result["overhead"] = overhead(args.model, args.dataset, args.steps, args.threads)
    result["runs"] = [run_summary(Path(run)) for run in args.runs]
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    previous.update({key: value for key, value in result.items() if value})
    Path(args.out).write_text(json.dumps(previous, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
