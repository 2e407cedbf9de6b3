"""Fixtures of the real-engine tests; they also import helpers of the unit suite (tests/test_*.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@pytest.fixture(scope="session")
def vllm_model(tokenizer_dir, tmp_path_factory):
    """A random 2-layer Llama with SmolLM2's tokenizer and head size 64: vLLM's CPU attention takes
    head sizes of 32 and up, not the unit suite's tiny model's 16."""
    from grail_sim.model.loading import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("vllm") / "model", tokenizer_dir, hidden_size=128, head_dim=64)


@pytest.fixture(scope="session")
def prompts(tmp_path_factory):
    """8 training rows of the next-video contract (test_train.make_prompt_dataset)."""
    from test_train import make_prompt_dataset

    return make_prompt_dataset(tmp_path_factory.mktemp("prompts") / "next_video", rows=8)
