"""The simulate stage's cost on a finished run, beside the same models' evaluations.

    .venv/bin/python benchmarks/simulate_speed.py [--results results] [--issue gun] [--out benchmarks/simulate.md]

Reads, for every `results/simulate/{predictor}_{issue}/summary.json`, the run's own timing (sessions,
steps, seconds inside the rollout) and Snakemake's `benchmark:` file of its job (wall seconds of the
whole job: loading the model, the tables and the bootstrap included). Where the same run evaluated
that model (`results/eval/{model}_{issue}/test/metrics.json`), the evaluation's scored rows per second
sit beside the simulation's steps per second: both are one scoring forward per row, so their ratio
is the price of rendering and sampling sessions rather than reading built prompts. Nothing is timed
here; every figure comes from the run's own records, on the machine named.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
from pathlib import Path

# The same CPU line as the scoring benchmark's (this folder is on sys.path when a script here runs).
from scoring_throughput import cpu_description


def job_seconds(path: Path) -> float | None:
    """Wall seconds of a Snakemake `benchmark:` file, or None when the job has none."""
    if not path.is_file():
        return None
    with path.open(newline="") as handle:
        record = next(csv.DictReader(handle, delimiter="\t"), None)
    return float(record["s"]) if record else None


def evaluation_rate(results: Path, model: str, issue: str) -> float | None:
    """Scored rows per second of the model's test evaluation in the same results, if it ran."""
    path = results / "eval" / f"{model}_{issue}" / "test" / "metrics.json"
    if not path.is_file():
        return None
    scoring = json.loads(path.read_text()).get("scoring") or {}
    return scoring.get("rows_per_second")


def rows(results: Path, issue: str) -> list[dict]:
    out = []
    for summary_path in sorted((results / "simulate").glob(f"*_{issue}/summary.json")):
        summary = json.loads(summary_path.read_text())
        predictor, timing = summary["predictor"], summary.get("timing") or {}
        out.append({
            "predictor": predictor, "sessions": summary["sessions"], "participants": summary["participants"],
            "steps": timing.get("steps"), "rollout_s": timing.get("seconds"), "steps_per_s": timing.get("steps_per_second"),
            "job_s": job_seconds(results / "benchmarks" / f"simulate_{predictor}_{issue}.tsv"),
            "eval_rows_per_s": evaluation_rate(results, predictor, issue),
            "valid_mass": (summary.get("predictor_settings") or {}).get("mean_valid_mass"),
        })
    return out


def fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(records: list[dict]) -> str:
    lines = ["| predictor | participants | sessions | steps | rollout s | steps/s | job wall s | eval rows/s (same model, same run) | steps/s ÷ eval rows/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        ratio = r["steps_per_s"] / r["eval_rows_per_s"] if r["steps_per_s"] and r["eval_rows_per_s"] else None
        lines.append(f"| {r['predictor']} | {r['participants']} | {r['sessions']} | {r['steps'] or '-'} | "
                     f"{fmt(r['rollout_s'])} | {fmt(r['steps_per_s'], 2)} | {fmt(r['job_s'])} | "
                     f"{fmt(r['eval_rows_per_s'], 2)} | {fmt(ratio, 2)} |")
    total = sum(r["job_s"] or 0.0 for r in records)
    lines.append(f"\nAll simulate jobs: {total:,.0f} s of wall time, run one after another on {platform.node()}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--issue", default="gun")
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    records = rows(args.results, args.issue)
    if not records:
        raise SystemExit(f"no {args.results}/simulate/*_{args.issue}/summary.json: run the simulate target first")
    text = f"Machine: {cpu_description()}, {platform.machine()}.\n\n{table(records)}\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
