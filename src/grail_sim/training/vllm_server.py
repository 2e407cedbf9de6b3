"""The vLLM server's lifecycle for `vllm_mode: server` training on a GPU node.

`grail-sim train` with `use_vllm: true` and `vllm_mode: server` (and not already inside a launched
worker) becomes an orchestrator: it picks free ports, starts `vllm serve` for the base policy on the
first allotted GPU with its log beside the rule's log, waits on `/health` with a bounded timeout
(failing with the tail of the server's log), runs `accelerate launch` of the same command on the
remaining GPUs, and always stops the server's whole process group on exit: success, failure, an
exception, or SIGTERM/SIGINT from SLURM or Snakemake. No orphan processes are left.

The vLLM command line comes from TRL's own `trl.scripts.vllm_serve.build_command` (the flags TRL's
weight sync needs) and runs with `VLLM_SERVER_DEV_MODE=1`, as `trl vllm-serve` does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

from grail_sim.errors import ServerError

LOG = logging.getLogger("grail_sim.vllm_server")
WORKER_ENV = "GRAIL_SIM_WORKER"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: str | os.PathLike, lines: int = 40) -> str:
    path = Path(path)
    if not path.is_file():
        return f"(no log at {path})"
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:]) or "(empty log)"


def vllm_serve_command(model: str, *, host: str, port: int, gpu_memory_utilization: float = 0.9,
                       dtype: str = "auto", max_model_len: int | None = None, tensor_parallel_size: int = 1,
                       enable_prefix_caching: bool | None = None, extra_args: Sequence[str] = ()) -> list[str]:
    """The `vllm serve` command TRL's server mode expects, as an argument list (never a shell string).
    With vLLM's CPU build, vLLM's CLI runs through grail_sim.training.vllm_cli (it cannot find its own
    version there otherwise)."""
    from trl.scripts.vllm_serve import ScriptArguments, build_command

    from grail_sim.evaluation.vllm_engine import cpu_build

    arguments = ScriptArguments(model=str(model), host=host, port=int(port), dtype=dtype,
                                gpu_memory_utilization=float(gpu_memory_utilization),
                                tensor_parallel_size=int(tensor_parallel_size), max_model_len=max_model_len,
                                enable_prefix_caching=enable_prefix_caching)
    command = build_command(arguments, [str(arg) for arg in extra_args])
    vllm_cli = "vllm.entrypoints.cli.main"
    if cpu_build() and vllm_cli in command:
        command[command.index(vllm_cli)] = "grail_sim.training.vllm_cli"
    return command


LOCAL_HOSTS = ("127.0.0.1", "localhost")


def local_service_env(base: dict, **extra: str) -> dict:
    """`base` with 127.0.0.1 and localhost added to NO_PROXY/no_proxy, VLLM_HOST_IP set to 127.0.0.1,
    and `extra`. HPC login environments often export http_proxy without the loopback in no_proxy;
    then the server's /health check and TRL's client went through the proxy, never answered, and the
    job failed after the server timeout."""
    env = dict(base)
    for key in ("NO_PROXY", "no_proxy"):
        present = [host.strip() for host in env.get(key, "").split(",") if host.strip()]
        env[key] = ",".join(present + [host for host in LOCAL_HOSTS if host not in present])
    env["VLLM_HOST_IP"] = LOCAL_HOSTS[0]
    env.update(extra)
    return env


# The health check talks to the server this process started: never through a proxy.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def wait_for_health(url: str, process: subprocess.Popen, log_path: str | os.PathLike, *, timeout: float,
                    interval: float = 1.0) -> float:
    """Poll `url` (directly, whatever the proxy settings) until HTTP 200; fail early if the process
    exits, or after `timeout` seconds."""
    started = time.monotonic()
    while True:
        code = process.poll()
        if code is not None:
            raise ServerError(f"server exited with code {code} before {url} answered; last lines of "
                              f"{log_path}:\n{log_tail(log_path)}")
        try:
            with _DIRECT.open(url, timeout=max(0.5, interval)) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() - started >= timeout:
            raise ServerError(f"server did not answer {url} within {timeout:.0f}s; last lines of "
                              f"{log_path}:\n{log_tail(log_path)}")
        time.sleep(interval)


def stop_process_group(process: subprocess.Popen, *, grace: float = 20.0) -> None:
    """SIGTERM the process's whole group, then SIGKILL what is left after `grace` seconds."""
    if process.poll() is not None and not _group_alive(process.pid):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid):
                return
            time.sleep(0.1)
    process.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGINT into SystemExit so that `finally` blocks (server teardown) run."""

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def managed_server(command: Sequence[str], *, health_url: str, log_path: str | os.PathLike, timeout: float = 900.0,
                   env: dict | None = None, interval: float = 1.0) -> Iterator[subprocess.Popen]:
    """Start `command` in its own process group, wait for `health_url`, and always stop it afterwards."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log, _terminate_on_signals():
        process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, start_new_session=True)
        LOG.info("started server, process group %d (log %s): %s", process.pid, log_path,
                 " ".join(command[:6]) + (" ..." if len(command) > 6 else ""))
        try:
            seconds = wait_for_health(health_url, process, log_path, timeout=timeout, interval=interval)
            LOG.info("server healthy at %s after %.1fs (pid %d)", health_url, seconds, process.pid)
            yield process
        finally:
            stop_process_group(process)
            LOG.info("server (pid %d) stopped", process.pid)


def visible_gpus() -> list[str]:
    """GPU ids allotted to this job: CUDA_VISIBLE_DEVICES (SLURM sets it), else every device torch sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip()]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


def run_with_server(server_command: Sequence[str], train_command: Sequence[str], *, health_url: str,
                    log_path: str | os.PathLike, server_env: dict, train_env: dict, timeout: float = 900.0) -> int:
    """Run `train_command` while the server runs; returns the training's exit code."""
    with managed_server(server_command, health_url=health_url, log_path=log_path, timeout=timeout,
                        env=server_env):
        LOG.info("launching training: %s", " ".join(train_command[:8]) + " ...")
        trainer = subprocess.Popen(list(train_command), env=train_env, start_new_session=True)
        try:
            return trainer.wait()
        finally:
            stop_process_group(trainer, grace=30.0)


# Tokens a chat template adds around the prompt stage's counted tokens, and a little slack: the context
# vLLM must hold is the longest prompt plus the longest completion plus this.
CONTEXT_MARGIN = 64


def context_length(dataset_dir: str | os.PathLike, split: str, max_completion_length: int) -> int | None:
    """The context vLLM must hold for a run: the split's longest prompt (Contract 2's `prompt_tokens`)
    plus `max_completion_length` plus CONTEXT_MARGIN; None when the rows do not count their tokens."""
    from datasets import load_from_disk

    from grail_sim.evaluation.vllm_engine import needed_context

    try:
        data = load_from_disk(str(dataset_dir))
        data = data[split] if hasattr(data, "keys") else data
    except (FileNotFoundError, KeyError, ValueError):
        return None
    return needed_context([data], max_completion_length, CONTEXT_MARGIN)


def orchestrate(argv: Sequence[str], *, model: str, config, log: str | os.PathLike | None = None,
                context: int | None = None) -> int:
    """The GPU-node path: vLLM on the first GPU, `accelerate launch` of this same command on the rest.

    `config` is the parsed recipe (its `vllm_server_*` fields, TRL's `vllm_gpu_memory_utilization`,
    `vllm_max_model_length` and `vllm_server_timeout`, and `accelerate_config`); `log` the server's
    log when the recipe names none. `context` (from `context_length`) is the server's max_model_len
    when the recipe sets none: a model's own maximum (32k and more) would reserve KV-cache memory that
    the short prompts never use."""
    from grail_sim.evaluation.vllm_engine import CPU_ENVIRONMENT, cpu_build

    gpus = visible_gpus()
    on_cpu = not gpus and cpu_build()  # vLLM's CPU build: the path runs up to TRL's weight sync (CUDA only)
    if len(gpus) < 2 and not on_cpu:
        raise ServerError(f"vllm_mode: server needs at least 2 GPUs (found {len(gpus)}: {gpus}); "
                          "use vllm_mode: colocate on a single GPU")
    host = "127.0.0.1"
    port, group_port = free_port(host), free_port(host)
    log_path = Path(config.vllm_server_log or log or Path(config.output_dir) / "vllm_server.log")
    extra_args = list(config.vllm_server_args)
    if on_cpu and "--enforce-eager" not in extra_args:
        extra_args.append("--enforce-eager")  # compiling the graph takes minutes on CPU
    server_command = vllm_serve_command(
        model, host=host, port=port, gpu_memory_utilization=config.vllm_gpu_memory_utilization,
        dtype=config.vllm_server_dtype, max_model_len=config.vllm_max_model_length or context,
        tensor_parallel_size=1, extra_args=extra_args)
    overrides = ["--set", f"vllm_server_host={host}", "--set", f"vllm_server_port={port}",
                 "--set", f"vllm_group_port={group_port}"]
    if on_cpu:
        kv_cache = {"VLLM_CPU_KVCACHE_SPACE": CPU_ENVIRONMENT["VLLM_CPU_KVCACHE_SPACE"]}  # vLLM's: most of RAM
        server_env = local_service_env({**kv_cache, **os.environ}, VLLM_SERVER_DEV_MODE="1")
        train_command = [sys.executable, "-m", "grail_sim.cli", *argv, *overrides]
        train_env = local_service_env(os.environ, **{WORKER_ENV: "1"})
    else:
        server_env = local_service_env(os.environ, CUDA_VISIBLE_DEVICES=gpus[0], VLLM_SERVER_DEV_MODE="1")
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(len(gpus) - 1)]
        if config.accelerate_config:
            launch += ["--config_file", str(config.accelerate_config)]
        train_command = launch + ["-m", "grail_sim.cli", *argv, *overrides]
        train_env = local_service_env(os.environ, CUDA_VISIBLE_DEVICES=",".join(gpus[1:]), **{WORKER_ENV: "1"})
    return run_with_server(server_command, train_command, health_url=f"http://{host}:{port}/health",
                           log_path=log_path, server_env=server_env, train_env=train_env,
                           timeout=float(config.vllm_server_timeout))
