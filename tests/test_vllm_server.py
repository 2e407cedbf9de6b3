"""The vLLM server lifecycle against a real local HTTP process standing in for `vllm serve`:
port pick, /health wait, bounded timeout with the log's tail, teardown on exit and on failure."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import time

import pytest

from grail_sim.training import vllm_server

# A stand-in server: answers /health with 200 after DELAY seconds, 503 before; it also starts a
# grandchild (sleep) to check that teardown leaves no orphans. PID files let the test find both.
FAKE_SERVER = textwrap.dedent("""
    import http.server, os, subprocess, sys, time
    port, delay, pid_dir = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(os.path.join(pid_dir, "server.pid"), "w").write(str(os.getpid()))
    open(os.path.join(pid_dir, "child.pid"), "w").write(str(child.pid))
    started = time.monotonic()
    print("fake vllm: loading weights", flush=True)
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ready = self.path == "/health" and time.monotonic() - started >= delay
            self.send_response(200 if ready else 503)
            self.end_headers()
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
""")


@pytest.fixture()
def fake_server(tmp_path):
    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_SERVER)

    def command(port: int, delay: float = 0.3) -> list[str]:
        return [sys.executable, str(script), str(port), str(delay), str(tmp_path)]

    return command


def _grpo_config(out_dir, *assignments: str):
    """The parsed GRPO recipe (GrpoRecipe) that `orchestrate` reads, as `grail-sim train` parses it."""
    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    argv = ["--trainer", "grpo", "--dataset", "d", "--model", "m", "--out", str(out_dir), *assignments]
    return parse_recipe(argv, defaults=run_defaults).config


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes once reaped or defunct.
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _pids(tmp_path) -> list[int]:
    return [int((tmp_path / f"{name}.pid").read_text()) for name in ("server", "child")]


def _wait_gone(pids: list[int], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def test_free_port_is_bindable():
    import socket

    port = vllm_server.free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_server_comes_up_and_is_torn_down_with_its_children(fake_server, tmp_path):
    port = vllm_server.free_port()
    log = tmp_path / "logs" / "vllm.log"
    with vllm_server.managed_server(fake_server(port), health_url=f"http://127.0.0.1:{port}/health",
                                    log_path=log, timeout=30, interval=0.1) as process:
        assert process.poll() is None
        pids = _pids(tmp_path)
        assert all(_alive(pid) for pid in pids)
    assert _wait_gone(pids), "server or its child outlived the context"
    assert "loading weights" in log.read_text()


def test_health_check_and_children_bypass_an_exported_proxy(fake_server, tmp_path, monkeypatch):
    """A login shell's http_proxy without the loopback in no_proxy: /health went to the proxy and
    the job failed after the server timeout. Here the proxy is a closed local port."""
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
    for key in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(key, proxy)
    for key in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(key, "example.org")
    port = vllm_server.free_port()
    with vllm_server.managed_server(fake_server(port), health_url=f"http://127.0.0.1:{port}/health",
                                    log_path=tmp_path / "vllm.log", timeout=10, interval=0.1):
        pass
    env = vllm_server.local_service_env(os.environ, CUDA_VISIBLE_DEVICES="1")
    for key in ("NO_PROXY", "no_proxy"):
        assert env[key].split(",") == ["example.org", "127.0.0.1", "localhost"]
    assert env["VLLM_HOST_IP"] == "127.0.0.1" and env["CUDA_VISIBLE_DEVICES"] == "1"
    # TRL's client (requests) then reaches the server directly.
    import requests

    assert requests.utils.should_bypass_proxies(f"http://127.0.0.1:{port}/health", no_proxy=env["no_proxy"])


def test_timeout_fails_with_the_log_tail_and_stops_the_server(fake_server, tmp_path):
    port = vllm_server.free_port()
    with pytest.raises(vllm_server.ServerError, match=r"within 1s(.|\n)*loading weights"):
        with vllm_server.managed_server(fake_server(port, delay=60), health_url=f"http://127.0.0.1:{port}/health",
                                        log_path=tmp_path / "vllm.log", timeout=1, interval=0.1):
            pytest.fail("the body must not run when the server never becomes healthy")
    assert _wait_gone(_pids(tmp_path))


def test_a_server_that_crashes_fails_fast_with_its_log(tmp_path):
    command = [sys.executable, "-c", "import sys; print('CUDA error: no GPU'); sys.exit(3)"]
    started = time.monotonic()
    with pytest.raises(vllm_server.ServerError, match=r"exited with code 3(.|\n)*CUDA error: no GPU"):
        with vllm_server.managed_server(command, health_url="http://127.0.0.1:9/health",
                                        log_path=tmp_path / "vllm.log", timeout=60, interval=0.1):
            pass
    assert time.monotonic() - started < 30


def test_training_failure_propagates_and_still_stops_the_server(fake_server, tmp_path):
    port = vllm_server.free_port()
    url = f"http://127.0.0.1:{port}/health"
    # The "training" checks that the server answers, then fails with code 5.
    train = [sys.executable, "-c", f"import urllib.request, sys; urllib.request.urlopen({url!r}); sys.exit(5)"]
    code = vllm_server.run_with_server(fake_server(port), train, health_url=url, log_path=tmp_path / "vllm.log",
                                       server_env=dict(os.environ), train_env=dict(os.environ), timeout=30)
    assert code == 5
    assert _wait_gone(_pids(tmp_path))


def test_an_exception_in_the_body_and_sigterm_both_tear_down(fake_server, tmp_path):
    port = vllm_server.free_port()
    with pytest.raises(SystemExit):
        with vllm_server.managed_server(fake_server(port), health_url=f"http://127.0.0.1:{port}/health",
                                        log_path=tmp_path / "vllm.log", timeout=30, interval=0.1):
            os.kill(os.getpid(), signal.SIGTERM)  # what SLURM sends on cancellation
            time.sleep(5)
    assert _wait_gone(_pids(tmp_path))


def test_vllm_command_is_an_argument_list_with_trl_weight_sync_flags():
    command = vllm_server.vllm_serve_command("results/models/base", host="127.0.0.1", port=8123,
                                             gpu_memory_utilization=0.8, max_model_len=2048,
                                             extra_args=["--seed", 7])
    assert command[:5] == [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", "results/models/base"]
    flags = dict(zip(command[5::2], command[6::2]))
    assert flags["--port"] == "8123" and flags["--host"] == "127.0.0.1"
    assert flags["--gpu-memory-utilization"] == "0.8" and flags["--max-model-len"] == "2048"
    assert "--weight-transfer-config" in command and command[-2:] == ["--seed", "7"]


def test_server_mode_needs_two_gpus(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(vllm_server.ServerError, match="colocate"):
        vllm_server.orchestrate(["train"], model="m", config=_grpo_config(tmp_path))


def test_the_server_context_is_the_longest_prompt_plus_the_completion(tmp_path, monkeypatch):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list([{"prompt_tokens": 300}, {"prompt_tokens": 912}]),
                 "validation": Dataset.from_list([{"prompt_tokens": 5000}])}).save_to_disk(str(tmp_path / "data"))
    assert vllm_server.context_length(tmp_path / "data", "train", 128) == 912 + 128 + vllm_server.CONTEXT_MARGIN
    assert vllm_server.context_length(tmp_path / "nowhere", "train", 128) is None
    seen = {}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setattr(vllm_server, "run_with_server", lambda server, train, **kw: seen.update(
        server=server, train=train, **kw) or 0)
    assert vllm_server.orchestrate(["train"], model="m", config=_grpo_config(tmp_path), context=1104) == 0
    flags = dict(zip(seen["server"][5::2], seen["server"][6::2]))
    assert flags["--max-model-len"] == "1104" and flags["--host"] == "127.0.0.1"
    assert str(seen["log_path"]) == str(tmp_path / "vllm_server.log")
    ports = {flags["--port"], next(arg.split("=")[1] for arg in seen["train"] if arg.startswith("vllm_group_port="))}
    assert len(ports) == 2  # the server's and the weight-sync group's ports are distinct free ports
    # A recipe's own vllm_max_model_length (TRL's field) wins over the computed context.
    vllm_server.orchestrate(["train"], model="m", config=_grpo_config(tmp_path, "vllm_max_model_length=4096"),
                            context=1104)
    assert dict(zip(seen["server"][5::2], seen["server"][6::2]))["--max-model-len"] == "4096"
