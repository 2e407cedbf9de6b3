"""`grail-sim evaluate`: Contract-2 inputs, Contract-4 outputs, resume, bad input, real rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grail_sim import cli, io
from grail_sim import errors as errors
from grail_sim.evaluation import evaluate as evaluation_evaluate
from grail_sim.evaluation import generators as evaluation_generators
from grail_sim.prompts import importer as prompts_importer
from grail_sim.prompts import settings as prompts_settings
from grail_sim.rows import TASKS

REAL = Path(__file__).resolve().parents[2] / "shared" / "real"
CONTRACT4 = {"id", "task", "raw_output", "parsed", "gold", "correct", "n_options", "issue", "participant_study",
             "participant_id", "opinion_before", "opinion_after"}


SYSTEM = {"next_video": "Pick the next video: <think>...</think><answer>N</answer>.",
          "opinion": "Estimate the post-study opinion index: <think>...</think><answer>0.42</answer>."}


def fake_model_dir(root: Path) -> Path:
    """A folder with fixed content: its hash, part of the resume fingerprint, stays the same."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text("{}")
    return root


def _rows(task: str, split: str, n: int) -> list[dict]:
    rows = []
    for i in range(n):
        n_options = 3 + i % 2
        options = "\n".join(f"{k}. video {k} (Channel {k})" for k in range(1, n_options + 1))
        rows.append({
            "id": f"{task}-{split}-{i}",
            "prompt": [{"role": "system", "content": SYSTEM[task]},
                       {"role": "user", "content": f"PROFILE: Viewer {i}.\nOPTIONS\n{options}"}],
            "gold_index": (1 + i % n_options) if task == "next_video" else 0,
            "n_options": n_options if task == "next_video" else 0,
            "slate_items": "[]", "viewer_profile": "", "history": "[]", "issue": "gun_control",
            "participant_study": "study1", "participant_id": f"p{i // 2}",
            "opinion_before": 0.4, "opinion_after": 0.5 if i % 2 else 0.4,
            "opinion_direction": "increase" if i % 2 else "no_change", "gold_id": "abcdefghijk",
        })
    return rows


def make_prompts(root: Path, sizes=(("train", 6), ("validation", 6), ("test", 3)), drop_column=None) -> Path:
    """A Contract-2 issue folder: one DatasetDict per task."""
    from datasets import Dataset, DatasetDict

    for task in TASKS:
        splits = {}
        for split, n in sizes:
            dataset = Dataset.from_list(_rows(task, split, n))
            splits[split] = dataset.remove_columns([drop_column]) if drop_column else dataset
        DatasetDict(splits).save_to_disk(str(root / task))
    return root


class ConstantGenerator:
    """Stands in for the model where only the orchestration is under test: a fixed answer per task."""

    backend = "test-constant"
    chunk_size = 4

    def __init__(self, answers):
        self.answers, self.calls = answers, 0

    def prompt_length(self, messages):
        return sum(len(m["content"]) for m in messages)

    def generate(self, batch):
        self.calls += len(batch)
        return [self.answers["opinion" if "opinion" in m[0]["content"].lower() else "next_video"] for m in batch]


def _settings(**kw):
    return evaluation_generators.GenerationSettings(max_new_tokens=kw.pop("max_new_tokens", 4), batch_size=kw.pop("batch_size", 4),
                                       backend="hf", device="cpu", **kw)


# --------------------------------------------------------------------------- scoring
def test_score_row_parses_through_answers_and_never_falls_back():
    row = _rows("next_video", "test", 2)[1]  # gold 2 of 4
    good = evaluation_evaluate.score_row("next_video", row, "<think>x</think><answer>2</answer>", 1e-6)
    assert good["parsed"] == 2 and good["correct"] is True and good["format_ok"] is True
    bad = evaluation_evaluate.score_row("next_video", row, "I pick 2", 1e-6)
    assert bad["parsed"] is None and bad["correct"] is False and bad["format_ok"] is False
    assert CONTRACT4 <= set(good)
    opinion = _rows("opinion", "test", 2)[1]  # 0.4 -> 0.5 (increase)
    up = evaluation_evaluate.score_row("opinion", opinion, "<think>x</think><answer>0.45</answer>", 1e-6)
    assert up["parsed"] == 0.45 and up["gold"] == 0.5 and up["correct"] is True
    off_scale = evaluation_evaluate.score_row("opinion", opinion, "<answer>5</answer>", 1e-6)
    assert off_scale["parsed"] is None and off_scale["correct"] is False


def test_select_rows_is_seeded_sorted_and_capped():
    data = list(range(50))
    first = evaluation_evaluate.select_rows(data, 10, seed=3)
    assert first == evaluation_evaluate.select_rows(data, 10, seed=3) == sorted(first) and len(set(first)) == 10
    assert evaluation_evaluate.select_rows(data, 0, seed=3) == list(range(50))
    assert evaluation_evaluate.select_rows(data, 80, seed=3) == list(range(50))


# --------------------------------------------------------------------------- bad input
def test_bad_inputs_fail_naming_folder_split_or_column(tmp_path):
    prompts = make_prompts(tmp_path / "prompts", drop_column="participant_id")
    with pytest.raises(errors.EvaluationError, match=r"next_video.*participant_id"):
        evaluation_evaluate.load_task_split(prompts, "next_video", "validation")
    good = make_prompts(tmp_path / "good")
    with pytest.raises(errors.EvaluationError, match=r"no split 'dev'.*train"):
        evaluation_evaluate.load_task_split(good, "opinion", "dev")
    with pytest.raises(errors.EvaluationError, match=str(tmp_path / "missing" / "opinion")):
        evaluation_evaluate.load_task_split(tmp_path / "missing", "opinion", "test")
    with pytest.raises(errors.EvaluationError, match="nowhere"):
        evaluation_evaluate.evaluate(model_dir=tmp_path / "nowhere", prompts_dir=good, tasks=["opinion"], split="test",
                          out_dir=tmp_path / "out", settings=_settings(), mode="generate")


def test_opinion_dataset_must_ask_for_an_index_or_a_direction(tmp_path):
    from datasets import Dataset, DatasetDict

    for target, answer in (("direction", lambda row: row["opinion_direction"]),
                           ("index", lambda row: f"{row['opinion_after']:.3f}"),
                           ("words", lambda row: "somewhat more")):
        rows = [dict(row, answer=answer(row)) for row in _rows("opinion", "test", 3)]
        DatasetDict({"test": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / target / "opinion"))
    assert len(evaluation_evaluate.load_task_split(tmp_path / "direction", "opinion", "test")) == 3
    assert len(evaluation_evaluate.load_task_split(tmp_path / "index", "opinion", "test")) == 3
    with pytest.raises(errors.EvaluationError, match="'somewhat more'.*increase, decrease, no_change"):
        evaluation_evaluate.load_task_split(tmp_path / "words", "opinion", "test")


def test_model_folder_that_does_not_load_is_named(tmp_path):
    broken = tmp_path / "broken_model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    prompts = make_prompts(tmp_path / "prompts")
    with pytest.raises(Exception, match="broken_model"):
        evaluation_evaluate.evaluate(model_dir=broken, prompts_dir=prompts, tasks=["next_video"], split="test",
                          out_dir=tmp_path / "out", settings=_settings())


def test_corrupt_partial_predictions_fail_with_file_and_line(tmp_path, monkeypatch):
    prompts = make_prompts(tmp_path / "prompts")
    out = tmp_path / "out"
    generator = ConstantGenerator({"next_video": "<answer>1</answer>", "opinion": "<answer>0.4</answer>"})
    monkeypatch.setattr(evaluation_evaluate, "make_generator", lambda *a, **k: generator)
    kwargs = dict(model_dir=fake_model_dir(tmp_path / "model"), prompts_dir=prompts, tasks=["next_video"],
                  split="test", out_dir=out, settings=_settings(), mode="generate")
    # Interrupt after the first batch: the partial file holds valid lines, then add a torn one.
    monkeypatch.setattr(io, "write_jsonl", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        evaluation_evaluate.evaluate(**kwargs)
    partial = out / "predictions.partial.jsonl"
    lines = partial.read_text().splitlines()
    partial.write_text("\n".join(lines) + '\n{"id": "torn', encoding="utf-8")
    monkeypatch.undo()
    monkeypatch.setattr(evaluation_evaluate, "make_generator", lambda *a, **k: generator)
    with pytest.raises(io.JsonlError, match=rf"{partial.name}:{len(lines) + 1}"):
        evaluation_evaluate.evaluate(**kwargs)


# --------------------------------------------------------------------------- resume
def test_partial_predictions_are_resumed_not_recomputed(tmp_path, monkeypatch):
    prompts = make_prompts(tmp_path / "prompts")
    out = tmp_path / "out"
    answers = {"next_video": "<think>a</think><answer>1</answer>", "opinion": "<think>a</think><answer>0.4</answer>"}
    first = ConstantGenerator(answers)
    monkeypatch.setattr(evaluation_evaluate, "make_generator", lambda *a, **k: first)
    kwargs = dict(model_dir=fake_model_dir(tmp_path / "model"), prompts_dir=prompts, tasks=["next_video", "opinion"],
                  split="validation", out_dir=out, settings=_settings(), bootstrap_samples=20,
                  mode="generate", generate_rows=0)
    # A run that dies while writing the final file leaves its generations in the partial file.
    real_write = io.write_jsonl
    monkeypatch.setattr(io, "write_jsonl", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        evaluation_evaluate.evaluate(**kwargs)
    assert first.calls == 12 and not (out / "predictions.jsonl").exists()
    # Keep only 5 of the 12 lines, as if the run had been killed mid-way.
    partial = out / "predictions.partial.jsonl"
    partial.write_text("".join(partial.read_text().splitlines(keepends=True)[:5]))
    monkeypatch.setattr(io, "write_jsonl", real_write)
    second = ConstantGenerator(answers)
    monkeypatch.setattr(evaluation_evaluate, "make_generator", lambda *a, **k: second)
    result = evaluation_evaluate.evaluate(**kwargs)
    assert second.calls == 7
    assert result["generation"]["resumed_rows"] == 5 and result["generation"]["generated_rows"] == 7
    rows = list(io.read_jsonl(out / "predictions.jsonl"))
    assert len(rows) == 12 and len({(r["task"], r["id"]) for r in rows}) == 12
    assert not partial.exists() and not (out / "predictions.partial.json").exists()
    # Other generation settings: the partial file is not reused.
    partial.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    third = ConstantGenerator(answers)
    monkeypatch.setattr(evaluation_evaluate, "make_generator", lambda *a, **k: third)
    evaluation_evaluate.evaluate(**{**kwargs, "settings": _settings(max_new_tokens=9)})
    assert third.calls == 12


# --------------------------------------------------------------------------- real generation
def test_cli_evaluates_a_tiny_model_end_to_end(tmp_path, tiny_model_dir):
    prompts = make_prompts(tmp_path / "prompts")
    out = tmp_path / "eval" / "base_gun" / "validation"
    # Settings as the workflow's rule passes them: the `evaluate` section (other keys take the schema's defaults).
    settings = {"evaluate": {"tasks": ["next_video", "opinion"], "generate_rows": 4, "batch_size": 3,
                             "max_new_tokens": 5, "bootstrap_samples": 50, "backend": "hf", "score_batch_size": 4}}
    code = cli.main(["evaluate", "--model", str(tiny_model_dir), "--model-name", "base", "--prompts", str(prompts),
                     "--split", "validation", "--out", str(out), "--config-json", json.dumps(settings)])
    assert code == 0
    rows = list(io.read_jsonl(out / "predictions.jsonl"))
    assert len(rows) == 8 and all(CONTRACT4 <= set(r) for r in rows)
    assert {r["task"] for r in rows} == {"next_video", "opinion"}
    assert all(isinstance(r["raw_output"], str) for r in rows)
    result = json.loads((out / "metrics.json").read_text())
    assert result["model"] == "base" and result["generation"]["backend"] == "hf"
    assert result["generation"]["generated_rows"] == 8 and result["generation"]["prompts_per_second"] > 0
    assert result["rows"]["next_video"] == {"available": 6, "scored": 6, "generated": 4}
    # Opinion rows of an index dataset are generated only; every next-video row is scored.
    assert result["rows"]["opinion"] == {"available": 6, "scored": 0, "generated": 4}
    scores = list(io.read_jsonl(out / "scores.jsonl"))
    assert len(scores) == 6 and {r["task"] for r in scores} == {"next_video"}
    assert all(len(r["probabilities"]) == r["n_options"] == len(r["baseline_probabilities"]["choice_model"])
               and sum(r["probabilities"]) == pytest.approx(1.0) for r in scores)
    figures = result["likelihood"]["next_video"]
    assert set(figures["overall"]) == {"policy", "uniform", "position_prior", "choice_model"}
    assert figures["baselines"]["learned_on"] == "train" and result["scoring"]["scored_rows"] == 6
    assert result["provenance"]["model_sha256"] == io.file_sha256(tiny_model_dir)
    nv = result["tasks"]["next_video"]
    assert nv["most_frequent_learned_on"] == "train" and nv["overall"]["n"] == 4
    # A random tiny model writes no valid answer: its accuracy is its parse failure, shown as such.
    parsed = [r for r in rows if r["task"] == "next_video" and r["parsed"] is not None]
    assert nv["overall"]["accuracy"]["value"] == pytest.approx(sum(r["correct"] for r in parsed) / 4)
    assert len(result["samples"]["next_video"]) == 3 and result["samples"]["opinion"][0]["prompt"][0]["role"] == "system"


def test_batched_generation_matches_one_at_a_time(tiny_model_dir):
    rows = _rows("next_video", "test", 3)
    one = evaluation_generators.HFGenerator(tiny_model_dir, _settings(max_new_tokens=6, batch_size=1))
    singles = [one.generate([r["prompt"]])[0] for r in rows]
    assert one.generate([r["prompt"] for r in rows]) == singles


# --------------------------------------------------------------------------- external rows
@pytest.mark.skipif(not (REAL / "next_video_study2.jsonl").exists(), reason="../shared/real not present")
def test_external_real_rows_constant_answer_one_equals_most_frequent_baseline(tmp_path, monkeypatch):


    root = tmp_path / "external"
    for task, name in (("next_video", "next_video_study2.jsonl"), ("opinion", "opinion_study2.jsonl")):
        prompts_importer.write_import(prompts_importer.import_jsonl(REAL / name, prompts_settings.load_settings()), root / task)
    # The reference's RL models answered "1" on every wage row; the report must show that this is
    # exactly the most-frequent-position baseline.
    generator = ConstantGenerator({"next_video": "<think>t</think><answer>1</answer>",
                                   "opinion": "<think>t</think><answer>0.5</answer>"})
    monkeypatch.setattr(evaluation_evaluate, "make_generator", lambda *a, **k: generator)
    result = evaluation_evaluate.evaluate(model_dir=fake_model_dir(tmp_path / "model"), prompts_dir=root, tasks=["next_video", "opinion"], split="test",
                               out_dir=tmp_path / "eval", settings=_settings(), bootstrap_samples=100,
                               mode="generate", generate_rows=0)
    nv = result["tasks"]["next_video"]
    assert nv["n_eligible"] == 364 and "no train split" in nv["most_frequent_learned_on"]
    assert round(nv["overall"]["accuracy"]["value"], 3) == 0.385
    assert round(nv["overall"]["baselines"]["most_frequent"]["value"], 3) == 0.385
    assert round(nv["overall"]["baselines"]["random"]["value"], 3) == 0.256
    assert round(nv["overall"]["baselines"]["always_last"]["value"], 3) == 0.220
    assert nv["position_distribution"]["top_share"] == 1.0
    opinion = result["tasks"]["opinion"]["overall"]
    truth = [json.loads(line) for line in (REAL / "opinion_study2.jsonl").read_text().splitlines() if line.strip()]
    assert opinion["n"] == 165 and opinion["n_parsed"] == 165
    assert opinion["mae"]["value"] == pytest.approx(sum(abs(o["after"] - 0.5) for o in truth) / 165)
    assert round(opinion["baselines"]["no_change"]["mae"]["value"], 3) == 0.096


@pytest.mark.skipif(not (REAL / "next_video_study2.jsonl").exists(), reason="../shared/real not present")
def test_corrupt_external_line_fails_with_file_and_line(tmp_path):


    lines = (REAL / "next_video_study2.jsonl").read_text().splitlines()[:3]
    bad = tmp_path / "external.jsonl"
    bad.write_text("\n".join([lines[0], lines[1][:40], lines[2]]) + "\n")
    with pytest.raises(io.JsonlError, match=r"external.jsonl:2"):
        prompts_importer.import_jsonl(bad, prompts_settings.load_settings())


@pytest.mark.slow
def test_embedded_model_generates_real_text(tmp_path, embedded_model_dir):
    prompts = make_prompts(tmp_path / "prompts", sizes=(("test", 2),))
    result = evaluation_evaluate.evaluate(model_dir=Path(embedded_model_dir), prompts_dir=prompts, tasks=["next_video"],
                               split="test", out_dir=tmp_path / "out", settings=_settings(max_new_tokens=8),
                               bootstrap_samples=10, mode="generate")
    rows = list(io.read_jsonl(tmp_path / "out" / "predictions.jsonl"))
    assert len(rows) == 2 and all(r["raw_output"].strip() for r in rows)
    assert result["generation"]["generated_rows"] == 2 and result["generation"]["backend"] == "hf"
    assert result["tasks"]["next_video"]["most_frequent_learned_on"].startswith("evaluation rows")
