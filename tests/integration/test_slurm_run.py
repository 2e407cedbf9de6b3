"""The used-by command through a real Slurm scheduler, on a tiny configuration.

    snakemake --profile profiles/slurm reports/grail_gun.md --configfiles config/config.yaml --sdm env-modules

is docs/cluster.md's command for "a cluster without GPUs, accounting or conda": the profile as it
ships (sbatch for every job, squeue for job states), with only the CPU configuration and the
software of the submitting environment. This test runs it on the one-node cluster of
scripts/slurm-local.sh (`make integration` starts it; CI too) in a scratch copy of the workflow whose
config/config.yaml is tiny: 40 demo participants, the tiny random model the unit tests build, 2
training steps, 3 scored rows. Its one flag beyond the documented command,
`--slurm-init-seconds-before-status-checks`, only shortens the plugin's first wait (40 s) per job.

It checks what a user relies on: every job goes through sbatch and ends COMPLETED in Slurm's own
records (the job completion log; there is no accounting database); the report is built; an edited
stage reruns with what depends on it and nothing else; a training job cancelled with scancel resumes
from its last checkpoint; a failing job ends the run with its rule and log named, not a hang. Nothing
is left queued: Snakemake is stopped with SIGINT and what is left is cancelled.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration
SLURM_STATE = Path(os.environ.get("SLURM_LOCAL_STATE", "/var/lib/grail-sim-slurm"))
JOB_LOG = SLURM_STATE / "log" / "jobcomp.log"
# docs/cluster.md, "A cluster without GPUs, accounting or conda".
USED_BY = ["--profile", "profiles/slurm", "reports/grail_gun.md", "--configfiles", "config/config.yaml",
           "--sdm", "env-modules"]
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "3"]
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/")


@pytest.fixture(scope="module")
def cluster():
    """The local one-node cluster: skipped where Slurm is absent, an error in CI (which starts it)."""
    probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False) \
        if shutil.which("sinfo") else None
    if probe is None or probe.returncode != 0 or not probe.stdout.strip():
        message = "no Slurm cluster answers sinfo: run `scripts/slurm-local.sh up` (make integration does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert JOB_LOG.parent.is_dir(), f"{JOB_LOG.parent}: not the cluster of scripts/slurm-local.sh"
    return JOB_LOG


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory, tiny_model_dir):
    """A scratch copy of the workflow with a tiny config/config.yaml and tiny recipes."""
    work = tmp_path_factory.mktemp("slurm") / "grail-sim"
    work.mkdir()
    for name in ("Snakefile", "workflow", "config", "envs", "src", "profiles"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
    config = {
        "data": {"source": "demo", "demo": {"participants": 40, "seed": 3}},
        "issues": ["gun"],
        "model": {"name_or_path": str(tiny_model_dir)},
        "train": {"trainers": ["sft", "grail"], "threads": 1,
                  "overrides": {"per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 8,
                                "report_to": "none", "save_steps": 1, "save_total_limit": 2}},
        "evaluate": {"score_rows": 3, "generate_rows": 1},
        "report": {"models": ["base", "sft", "grail"]},
    }
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    recipes = work / "config" / "recipes"
    for name, steps in (("sft", 2), ("grail", 2), ("grpo", 40)):  # grpo: long enough to be cancelled
        recipe = yaml.safe_load((recipes / f"{name}.yaml").read_text())
        recipe["max_steps"] = steps
        (recipes / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    return work


def _env() -> dict:
    # sbatch exports the submitting environment to each job: the jobs find this venv's python.
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


def _snakemake(work: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", *args]
    process = subprocess.Popen(command, cwd=work, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(process, work)
        output, _ = process.communicate()
        pytest.fail(f"snakemake {' '.join(args)} still running after {timeout:.0f}s:\n{output[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output, "")


def _stop(process: subprocess.Popen, work: Path) -> None:
    """SIGINT Snakemake (SIGTERM leaves it waiting on its jobs), then cancel what it left in the queue."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    _cancel_jobs_of(work)


def _queued_jobs_of(work: Path) -> list[str]:
    listing = subprocess.run(["squeue", "-h", "-t", "PENDING,RUNNING,CONFIGURING,COMPLETING", "-o", "%i %Z"],
                             capture_output=True, text=True, check=False).stdout
    return [line.split()[0] for line in listing.splitlines() if line.split()[1:] == [str(work)]]


def _cancel_jobs_of(work: Path, timeout_s: float = 60.0) -> None:
    """scancel what is left, then wait for it to leave the queue: scancel only asks, and a job that
    Snakemake resubmitted (restart-times) may still be starting or completing for some seconds."""
    jobs = _queued_jobs_of(work)
    if jobs:
        subprocess.run(["scancel", *jobs], check=False)
    deadline = time.monotonic() + timeout_s
    while _queued_jobs_of(work) and time.monotonic() < deadline:
        time.sleep(1)


def _submitted(output: str) -> list[tuple[str, str]]:
    """(Slurm job id, rule) of every job this run submitted."""
    return SUBMITTED.findall(output)


def _job_records(job_log: Path) -> dict[str, dict[str, str]]:
    """Slurm's job completion records by job id: JobState, StartTime, EndTime, ..."""
    records = {}
    for line in job_log.read_text().splitlines() if job_log.is_file() else []:
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        records[fields["JobId"]] = fields
    return records


def _seconds(record: dict[str, str]) -> float:
    from datetime import datetime

    start, end = (datetime.fromisoformat(record[key]) for key in ("StartTime", "EndTime"))
    return (end - start).total_seconds()


def test_the_used_by_command_runs_through_slurm(cluster, workflow_copy):
    work, job_log = workflow_copy, cluster
    started = time.monotonic()
    run = _snakemake(work, *USED_BY, *FAST_STATUS)
    wall = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-6000:]
    assert (work / "reports" / "grail_gun.md").is_file()
    submitted = _submitted(run.stdout)
    rules = sorted(rule for _, rule in submitted)
    assert rules == sorted(["demo_capsule", "model", "clean", "prompts", "sft", "train", "evaluate", "evaluate",
                            "report"]), rules
    records = _job_records(job_log)
    for job_id, rule in submitted:
        assert records.get(job_id, {}).get("JobState") == "COMPLETED", (job_id, rule, records.get(job_id))
    print(f"\nused-by command through Slurm: {len(submitted)} jobs, {wall:.0f} s wall")
    print("| Slurm job | rule | state | seconds in Slurm |\n|---|---|---|---|")
    for job_id, rule in submitted:
        print(f"| {job_id} | {rule} | {records[job_id]['JobState']} | {_seconds(records[job_id]):.0f} |")

    # Nothing is stale: a second run plans nothing.
    assert "Nothing to be done" in _snakemake(work, *USED_BY, "-n").stdout

    # An edited stage reruns with what depends on it, and nothing else.
    module = work / "src" / "grail_sim" / "evaluation" / "likelihood.py"
    module.write_text(module.read_text() + "\n# an edit\n")
    rerun = _snakemake(work, *USED_BY, *FAST_STATUS)
    assert rerun.returncode == 0, rerun.stdout[-6000:]
    assert sorted(rule for _, rule in _submitted(rerun.stdout)) == ["evaluate", "evaluate", "report"]
    assert _queued_jobs_of(work) == []


def test_a_cancelled_training_job_resumes_from_its_last_checkpoint(cluster, workflow_copy):
    work = workflow_copy
    out = work / "results" / "train" / "grpo_gun"
    target = "results/train/grpo_gun/final"
    args = [*USED_BY[:2], target, *USED_BY[3:], *FAST_STATUS]
    # Its output goes to a file, not a pipe nobody reads while it runs: a full pipe blocks Snakemake's
    # writes (show-failed-logs prints the cancelled job's whole log), and it then cannot act on SIGINT.
    output = work / "cancelled_run.log"
    with open(output, "w") as sink:
        process = subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=work, env=_env(), stdout=sink,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not any(int(path.name.split("-")[1]) >= 3 for path in out.glob("checkpoint-*")
                      if (path / "trainer_state.json").is_file()):
            assert process.poll() is None, output.read_text()[-4000:]
            assert time.monotonic() < deadline, "no checkpoint-3 within 900 s"
            time.sleep(1)
        cancelled = _queued_jobs_of(work)
        assert cancelled, "the training job is not in the queue"
        subprocess.run(["scancel", *cancelled], check=True)
        time.sleep(5)
    finally:
        _stop(process, work)
    # Snakemake stopped on SIGINT (a SIGKILL after 120 s would leave its lock and its jobs behind).
    assert process.returncode != -signal.SIGKILL, output.read_text()[-4000:]
    assert _queued_jobs_of(work) == []
    state = out / "trainer_state.json"
    assert not state.is_file() or yaml.safe_load(state.read_text())["global_step"] < 40

    rerun = _snakemake(work, *args)
    assert rerun.returncode == 0, rerun.stdout[-6000:]
    log = (work / "results" / "logs" / "train_grpo_gun.log").read_text()
    assert re.search(r"resuming from \S*checkpoint-\d+", log), log[-3000:]
    assert yaml.safe_load(state.read_text())["global_step"] == 40
    assert _queued_jobs_of(work) == []


def test_a_failing_job_ends_the_run_with_its_rule_and_log_named(cluster, workflow_copy):
    work = workflow_copy
    template = work / "src" / "grail_sim" / "report" / "templates" / "model_report.md.j2"
    template.write_text(template.read_text() + "\n{% if %}\n")  # a template error: the report job fails
    started = time.monotonic()
    run = _snakemake(work, *USED_BY, *FAST_STATUS, timeout=600)
    assert run.returncode != 0
    assert "Error in rule report" in run.stdout and "results/logs/report_grail_gun.log" in run.stdout
    assert "TemplateSyntaxError" in (work / "results" / "logs" / "report_grail_gun.log").read_text()
    print(f"\na failing job ended the run after {time.monotonic() - started:.0f} s")
    assert _queued_jobs_of(work) == []


@pytest.mark.parametrize(("extra", "expected"), [
    (["--config", "train={threads: 64}"], "sft and train asks for 64 CPUs (train.threads) but the largest node"),
    (["--configfiles", "config/config.yaml", "config/cluster.yaml"], "no node there has a GPU"),
])
def test_a_job_no_node_can_hold_stops_the_run_before_submitting(cluster, workflow_copy, extra, expected):
    """sbatch accepts such a job and leaves it PENDING forever without a message: the workflow's
    onstart compares the largest jobs with sinfo's nodes and stops at once, naming the key."""
    work = workflow_copy
    args = [*USED_BY[:3], *(extra if extra[0] == "--configfiles" else ["--configfiles", "config/config.yaml", *extra]),
            "--sdm", "env-modules", "--forcerun", "report"]
    run = _snakemake(work, *args, timeout=120)
    assert run.returncode != 0
    assert expected in run.stdout, run.stdout[-3000:]
    assert "has been submitted" not in run.stdout
    assert _queued_jobs_of(work) == []
