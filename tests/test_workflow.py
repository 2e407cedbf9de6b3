"""The Snakemake DAG: both profiles dry-run with no scheduler present, and the lint is clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _snakemake(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Rules call the `grail-sim` entry point of this interpreter's environment.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [*SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def _dry_run_jobs(output: str) -> dict[str, int]:
    jobs, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                jobs[parts[0]] = int(parts[1])
            elif jobs:
                break
    return jobs


# Every stage from the demo capsule to the portfolio, for the default config (issue gun;
# trainers grpo and grail; base as the zero-shot reference; validation and test splits).
DEFAULT_DAG = {"model": 1, "model_smoke": 1, "demo_capsule": 1, "clean": 1, "prompts": 1, "train": 2,
               "evaluate": 6, "report": 3, "portfolio": 1, "all": 1}


def test_local_profile_dry_run_plans_the_whole_default_dag():
    result = _snakemake("--profile", "profiles/local", "-n", "--forceall")
    assert result.returncode == 0, result.stderr + result.stdout
    jobs = _dry_run_jobs(result.stdout + result.stderr)
    jobs.pop("total", None)
    assert jobs == DEFAULT_DAG


def test_slurm_profile_dry_run_without_slurm():
    # `--sdm env-modules` replaces the profile's conda deployment: conda is not installable here
    # and a conda dry run needs the binary (no rule uses env modules, so nothing changes).
    result = _snakemake("--profile", "profiles/slurm", "-n", "--forceall", "--sdm", "env-modules")
    assert result.returncode == 0, result.stderr + result.stdout
    assert "slurm" in result.stdout + result.stderr
    jobs = _dry_run_jobs(result.stdout + result.stderr)
    jobs.pop("total", None)
    assert jobs == DEFAULT_DAG


def test_lint_is_clean():
    result = _snakemake("--lint")
    output = result.stdout + result.stderr
    assert "Lints for" not in output, output
    assert result.returncode == 0, output
