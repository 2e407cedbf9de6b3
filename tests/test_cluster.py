"""The pre-submission check that every job fits a node (grail_sim.cluster); against a real sinfo in
tests/integration/test_slurm_run.py."""

from __future__ import annotations

import pytest

from grail_sim import cluster
from grail_sim import config as grail_config
from grail_sim.errors import ConfigError

@pytest.mark.parametrize(("gres", "gpus"), [("(null)", 0), ("gpu:4", 4), ("gpu:a100:4(S:0-1)", 4),
                                            ("gpu:2,shard:8", 2), ("gpu:h100:2,gpu:a100:1", 3)])
def test_gres_gpus(gres, gpus):
    assert cluster.gres_gpus(gres) == gpus


def _config(**changes):
    config = grail_config.resolve({})
    for dotted, value in changes.items():
        node = config
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return config


def test_a_gpu_job_keeps_the_defaults_it_does_not_set():
    config = _config(compute="gpu", **{"slurm.gpu_jobs": {"train": {"gpus": 1}}})
    assert cluster.gpu_job(config, "train") == {"gpus": 1, "mem_mb": 120000, "runtime": 720}
    assert cluster.gpu_job(config, "sft") == cluster.gpu_job_defaults()["sft"]


def test_cpu_jobs_on_a_small_node():
    node = [cluster.Node(cpus=2, mem_mb=22899, gpus=0)]
    cluster.check_jobs_fit(cluster.largest_requests(_config()), node, None)  # defaults fit
    with pytest.raises(ConfigError, match=r"asks for 8 CPUs \(train.threads\) but the largest node of the default "
                                          r"partition has 2: .*--config train='\{threads: 2\}'"):
        cluster.check_jobs_fit(cluster.largest_requests(_config(**{"train.threads": 8})), node, None)


def test_gpu_jobs_need_gpu_nodes_with_the_memory():
    gpu_config = _config(compute="gpu", **{"train.threads": 8})
    requests = cluster.largest_requests(gpu_config)
    with pytest.raises(ConfigError, match="no node there has a GPU: .*--configfiles config/config.yaml"):
        cluster.check_jobs_fit(requests, [cluster.Node(64, 512000, 0)], "cpu")
    with pytest.raises(ConfigError, match=r"train asks for 120000 MB \(slurm.gpu_jobs.train.mem_mb\)"):
        cluster.check_jobs_fit(requests, [cluster.Node(64, 100000, 4)], "gpu")
    with pytest.raises(ConfigError, match=r"train asks for 2 GPU\(s\) .* has 1: .*lower slurm.gpu_jobs.train.gpus"):
        cluster.check_jobs_fit(requests, [cluster.Node(64, 512000, 1)], "gpu")
    one_gpu = _config(compute="gpu", **{"train.threads": 8, "slurm.gpu_jobs": {"train": {"gpus": 1}}})
    cluster.check_jobs_fit(cluster.largest_requests(one_gpu), [cluster.Node(64, 512000, 1)], "gpu")
    cluster.check_jobs_fit(requests, [], "gpu")  # no answer from sinfo: left to the scheduler
