"""Evaluation backends on CPU (#13): vLLM where it is usable, for full models and for LoRA adapters
(merged into their base once, cached), batched HF otherwise; `backend: vllm` without vLLM fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from grail_sim import errors, io
from grail_sim.evaluation import generators, scorers
from grail_sim.model.loading import PROVENANCE_FILE, base_model_record

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("adapter") / "final"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(str(folder))
    io.write_json(folder / PROVENANCE_FILE, {"base_model": str(tiny_model_dir), **base_model_record(tiny_model_dir)})
    return folder


class Recorded:
    """Stands in for vLLM's engine wrappers (vLLM is not installed on CPU): records the folder given."""

    backend = "vllm"
    folders: list = []

    def __init__(self, model_dir, *args, **kwargs):
        Recorded.folders.append(Path(model_dir))


@pytest.fixture
def vllm_here(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAIL_SIM_CACHE", str(tmp_path / "cache"))
    for module in (generators, scorers):
        monkeypatch.setattr(module, "vllm_usable", lambda: True)
        monkeypatch.setattr(module, "vllm_preferred", lambda: True)
    monkeypatch.setattr(generators, "VLLMGenerator", Recorded)
    monkeypatch.setattr(scorers, "VLLMScorer", Recorded)
    Recorded.folders = []
    return tmp_path / "cache"


def _settings(backend="auto"):
    return generators.GenerationSettings(max_new_tokens=4, batch_size=2, backend=backend, device="cpu")


def test_vllm_gets_a_full_model_as_it_is(tiny_model_dir, vllm_here):
    generators.make_generator(Path(tiny_model_dir), _settings())
    scorers.make_scorer(Path(tiny_model_dir), backend="auto")
    assert Recorded.folders == [Path(tiny_model_dir)] * 2


def test_vllm_gets_an_adapter_merged_once_into_its_base(adapter_dir, vllm_here):
    generators.make_generator(adapter_dir, _settings())
    merged = Recorded.folders[0]
    assert merged.parent == vllm_here and merged.name.startswith("merged-") and (merged / "config.json").is_file()
    assert not (merged / "adapter_config.json").exists() and (merged / "tokenizer_config.json").is_file()
    written = (merged / "config.json").stat().st_mtime_ns
    scorers.make_scorer(adapter_dir, backend="vllm")
    assert Recorded.folders[1] == merged and (merged / "config.json").stat().st_mtime_ns == written  # reused


def test_split_jobs_merging_one_adapter_at_once_merge_it_once(adapter_dir, monkeypatch, tmp_path):
    """The validation and test jobs of one model start together: each merged the adapter and replaced
    the folder the other's engine was loading from. Under the cache lock one merges, the rest reuse it."""
    import threading

    from grail_sim.model import loading

    monkeypatch.setenv("GRAIL_SIM_CACHE", str(tmp_path / "cache"))
    merges, real_load = [], loading.load_policy

    def counted(*args, **kwargs):
        merges.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(loading, "load_policy", counted)
    start, found = threading.Barrier(3), []

    def job():
        start.wait()
        found.append(loading.served_model_dir(adapter_dir, dtype="float32"))

    threads = [threading.Thread(target=job) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(merges) == 1 and len(set(found)) == 1
    assert (found[0] / "config.json").is_file() and (found[0] / "tokenizer_config.json").is_file()


def test_without_vllm_auto_is_batched_hf_and_vllm_fails_clearly(tiny_model_dir, monkeypatch):
    for module in (generators, scorers):
        monkeypatch.setattr(module, "vllm_usable", lambda: False)
        monkeypatch.setattr(module, "vllm_preferred", lambda: False)
    assert generators.make_generator(Path(tiny_model_dir), _settings()).backend == "hf"
    assert scorers.make_scorer(Path(tiny_model_dir), backend="auto").backend == "hf"
    with pytest.raises(errors.EvaluationError, match="needs vllm installed, with a CUDA device or vLLM.s CPU build"):
        generators.make_generator(Path(tiny_model_dir), _settings("vllm"))
    with pytest.raises(errors.EvaluationError, match="needs vllm installed, with a CUDA device or vLLM.s CPU build"):
        scorers.make_scorer(Path(tiny_model_dir), backend="vllm")
