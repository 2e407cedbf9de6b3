"""The train rule's vLLM server for real, with vLLM's CPU build (`make test-vllm`).

`grail-sim train` with a `vllm_mode: server` recipe becomes the orchestrator: it starts `vllm serve`
(here through grail_sim.training.vllm_cli, since the CPU build's distribution is not named `vllm`),
waits for /health and runs the trainer. TRL joins the server's NCCL weight sync while it builds the
trainer, which needs CUDA: on CPU the run must stop there with one line naming CUDA, and the server's
whole process group must be gone, after that failure and after SIGTERM to the orchestrator.
Generation through the server (what TRL's trainer asks of it each step) is checked with TRL's own
client. NCCL weight sync itself, and tensor parallelism, only a CUDA node can show.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

from grail_sim.training import vllm_server  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STARTED = re.compile(r"started server, process group (\d+)")


def _group_gone(pgid: int, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _server_mode_train(model: Path, prompts: Path, out: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "grail_sim.cli", "train", "--config", str(ROOT / "config" / "recipes" / "grpo.yaml"),
               "--dataset", str(prompts), "--model", str(model), "--out", str(out), "--max_steps", "1",
               "--server-log", str(out / "vllm.log")]
    for override in ("use_vllm=true", "vllm_mode=server", "vllm_server_dtype=float32", "vllm_server_timeout=300",
                     "report_to=none", "per_device_train_batch_size=2", "num_generations=2", "max_completion_length=8",
                     "heldout_rows=0"):
        command += ["--set", override]
    return subprocess.Popen(command, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)


def test_server_mode_on_cpu_stops_at_weight_sync_naming_cuda_and_leaves_no_server(vllm_model, prompts, tmp_path):
    log = tmp_path / "train.log"
    run = _server_mode_train(vllm_model, prompts, tmp_path / "out", log)
    assert run.wait(timeout=600) == 2, log.read_text()[-4000:]
    text = log.read_text()
    assert "server healthy at http://127.0.0.1:" in text  # the real server came up and answered /health
    errors = [line for line in text.splitlines() if line.startswith("grail-sim train:")]
    assert len(errors) == 1 and errors[0].startswith("grail-sim train: vllm_mode: server needs CUDA"), errors
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1].endswith("stopped")  # the orchestrator stopped the server after it
    pgid = int(STARTED.search(text).group(1))
    assert _group_gone(pgid), "the vLLM server outlived the trainer's failure"


def test_sigterm_to_the_orchestrator_stops_the_server(vllm_model, prompts, tmp_path):
    log = tmp_path / "train.log"
    run = _server_mode_train(vllm_model, prompts, tmp_path / "out", log)
    deadline = time.monotonic() + 120
    while not STARTED.search(log.read_text()):
        assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    pgid = int(STARTED.search(log.read_text()).group(1))
    time.sleep(5)  # the server is loading
    os.kill(run.pid, signal.SIGTERM)  # what SLURM sends at a time limit, and scancel
    assert run.wait(timeout=120) != 0
    assert _group_gone(pgid), "the vLLM server outlived SIGTERM to the orchestrator"


def test_trls_client_generates_through_the_real_server(vllm_model, tmp_path):
    from trl.generation.vllm_client import VLLMClient

    port = vllm_server.free_port()
    command = vllm_server.vllm_serve_command(vllm_model, host="127.0.0.1", port=port, dtype="float32",
                                             max_model_len=1024, extra_args=["--enforce-eager"])
    env = vllm_server.local_service_env(os.environ, VLLM_CPU_KVCACHE_SPACE="1", VLLM_SERVER_DEV_MODE="1")
    with vllm_server.managed_server(command, health_url=f"http://127.0.0.1:{port}/health",
                                    log_path=tmp_path / "vllm.log", timeout=300, env=env) as process:
        client = VLLMClient(base_url=f"http://127.0.0.1:{port}", group_port=vllm_server.free_port(),
                            connection_timeout=30)
        out = client.generate(["Which video next?"], n=2, max_tokens=4)
        assert len(out["completion_ids"]) == 2 and all(len(ids) == 4 for ids in out["completion_ids"])
        assert all(len(row) == 4 for row in out["logprobs"])
        with pytest.raises(NotImplementedError, match="CUDA"):
            client.init_communicator(device="cpu")
        pgid = process.pid
    assert _group_gone(pgid)
