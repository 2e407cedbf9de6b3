"""Before a SLURM run submits anything: does every job fit a node of the partition it goes to?

`sbatch` accepts a job that asks for more CPUs, memory or GPUs than any node of its partition has,
and the job then stays PENDING forever with no message, while Snakemake waits. The workflow's
`onstart` (workflow/rules/common.smk) calls `check_jobs_fit` with what the configuration makes the
largest jobs ask for and what `sinfo` says the partition's nodes have, and stops the run with one
line naming the key to change.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from typing import Mapping, Sequence

from grail_sim.errors import ConfigError


@dataclass(frozen=True)
class Node:
    cpus: int
    mem_mb: int
    gpus: int


@dataclass(frozen=True)
class Request:
    """The largest ask of one kind of job, and the config key that sets it."""

    what: str  # e.g. "sft and train"
    cpus: int
    cpus_key: str
    mem_mb: int
    mem_key: str
    gpus: int
    gpus_key: str


def gres_gpus(gres: str) -> int:
    """GPUs in one sinfo %G field: `gpu:4`, `gpu:a100:4(S:0-1)`, `gpu:2,shard:8`; 0 for `(null)`."""
    total = 0
    for item in gres.split(","):
        match = re.match(r"gpu(?::[^:()]+)?:(\d+)", item.strip())
        if match:
            total += int(match.group(1))
    return total


def partition_nodes(partition: str | None) -> list[Node] | None:
    """The nodes of `partition` (the default partition when None) by sinfo; None when sinfo is absent
    or does not answer (the check is then left to the scheduler)."""
    try:
        listing = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G"], capture_output=True, text=True,
                                 timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if listing.returncode != 0:
        return None
    nodes = []
    for line in listing.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4:
            continue
        name, cpus, mem, gres = parts
        default = name.endswith("*")
        if (partition is None and default) or name.rstrip("*") == partition:
            nodes.append(Node(int(cpus.rstrip("+")), int(mem.rstrip("+")), gres_gpus(gres)))
    return nodes


# What an evaluation job asks for on CPU (workflow/rules/evaluate.smk and math.smk use these).
EVALUATION_THREADS = 2
EVALUATION_MEM_MB = 8000
# The rules whose CPUs are train.threads (the others on the model env evaluate).
TRAINING_RULES = ("sft", "train", "math_train")


def gpu_job_defaults() -> dict[str, dict]:
    """The schema's `slurm.gpu_jobs` defaults by rule name: each GPU job's gpus, mem_mb and runtime."""
    from grail_sim.config import load_schema

    jobs = load_schema()["properties"]["slurm"]["properties"]["gpu_jobs"]["properties"]
    return {name: dict(spec["default"]) for name, spec in jobs.items()}


def gpu_job(config: Mapping, rule: str) -> dict:
    """`slurm.gpu_jobs.<rule>` of `config` over the schema's defaults for that rule (a key left out
    keeps its default): the GPUs, memory and runtime the rule asks for under `compute: gpu`."""
    return {**gpu_job_defaults()[rule], **config["slurm"]["gpu_jobs"].get(rule, {})}


def largest_requests(config: Mapping) -> list[Request]:
    """What the workflow's largest jobs ask for under `config` (the rules' threads, memory and GPUs,
    as workflow/rules/*.smk and common.smk's model_env_resources set them)."""
    threads = int(config["train"]["threads"])
    if config["compute"] != "gpu":
        return [Request("sft and train", threads, "train.threads", int(config["train"]["mem_mb"]), "train.mem_mb",
                        0, ""), Request("evaluate", EVALUATION_THREADS, "", EVALUATION_MEM_MB, "", 0, "")]
    requests = []
    for rule in gpu_job_defaults():
        job = gpu_job(config, rule)
        cpus, cpus_key = (threads, "train.threads") if rule in TRAINING_RULES else (EVALUATION_THREADS, "")
        key = f"slurm.gpu_jobs.{rule}"
        requests.append(Request(rule, cpus, cpus_key, int(job["mem_mb"]), f"{key}.mem_mb", int(job["gpus"]),
                                f"{key}.gpus"))
    return requests


def check_jobs_fit(requests: Sequence[Request], nodes: Sequence[Node], partition: str | None) -> None:
    """Raise ConfigError, one line, for the first request that no node of the partition can hold."""
    if not nodes:
        return
    where = f"partition {partition}" if partition else "the default partition"
    most = Node(max(n.cpus for n in nodes), max(n.mem_mb for n in nodes), max(n.gpus for n in nodes))
    for request in requests:
        if request.gpus > most.gpus:
            hint = ("no node there has a GPU: on a CPU-only cluster add --configfiles config/config.yaml "
                    "(compute: cpu)" if most.gpus == 0 else f"lower {request.gpus_key}")
            raise ConfigError(f"{request.what} asks for {request.gpus} GPU(s) but the largest node of {where} "
                              f"has {most.gpus}: it would stay PENDING forever; {hint} (docs/cluster.md)")
        if request.cpus > most.cpus:
            hint = (f"lower it, for example --config train='{{threads: {most.cpus}}}'" if request.cpus_key
                    else "use nodes with more CPUs")
            raise ConfigError(f"{request.what} asks for {request.cpus} CPUs{_named(request.cpus_key)} but the "
                              f"largest node of {where} has {most.cpus}: it would stay PENDING forever; {hint} "
                              "(docs/cluster.md)")
        if request.mem_mb > most.mem_mb:
            hint = f"lower {request.mem_key}" if request.mem_key else "use nodes with more memory"
            raise ConfigError(f"{request.what} asks for {request.mem_mb} MB{_named(request.mem_key)} but the "
                              f"largest node of {where} has {most.mem_mb} MB: it would stay PENDING forever; "
                              f"{hint} (docs/cluster.md)")


def _named(key: str) -> str:
    return f" ({key})" if key else ""
