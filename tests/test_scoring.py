"""Likelihood scoring (#11): exact candidate log-likelihoods, options 10 and above, agreement with
greedy generation, the vLLM glue, resume, direction datasets and real imported rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from grail_sim import io
from grail_sim.answers import DIRECTIONS
from grail_sim.errors import EvaluationError
from grail_sim.evaluation import evaluate as evaluation_evaluate
from grail_sim.evaluation import scorers
from grail_sim.prompts import importer as prompts_importer
from grail_sim.prompts import settings as prompts_settings
from test_evaluate import REAL, ConstantGenerator, _rows, _settings, fake_model_dir, make_prompts


def _empty_think(answers) -> list[str]:
    """The candidates' continuations after the empty-think prefix: `N</answer>`."""
    return [scorers.ThinkForcing().continuation(answer, k, None) for k, answer in enumerate(answers, 1)]


def _brute_force(scorer: scorers.HFScorer, messages, continuations) -> list[float]:
    """ln P(continuation | prompt + prefix), one unpadded sequence per candidate, no cache."""
    import torch

    prompt = scorer.prompt_ids(messages)
    out = []
    for continuation in continuations:
        ids = scorer.candidate_ids(continuation)
        with torch.no_grad():
            logits = scorer.model(input_ids=torch.tensor([prompt + ids])).logits[0].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        out.append(sum(float(logprobs[len(prompt) - 1 + j, token]) for j, token in enumerate(ids)))
    return out


def test_batched_scores_equal_one_sequence_at_a_time_with_options_past_nine(tiny_model_dir):
    scorer = scorers.HFScorer(tiny_model_dir, batch_size=4, device="cpu")
    rows = _rows("next_video", "test", 3)
    # Prompts of different lengths share a batch (left padding), with 12 options and with directions.
    rows[1]["prompt"][1]["content"] += " A much longer viewer description." * 5
    batch = [(rows[0]["prompt"], _empty_think(scorers.candidate_answers("next_video", 12))),
             (rows[1]["prompt"], _empty_think(scorers.candidate_answers("next_video", 3))),
             (rows[2]["prompt"], _empty_think(scorers.candidate_answers("opinion", 0)))]
    scored = scorer.score(batch)
    for (messages, answers), result in zip(batch, scored):
        assert len(result.log_likelihoods) == len(answers)
        assert result.log_likelihoods == pytest.approx(_brute_force(scorer, messages, answers), abs=1e-4)
        assert sum(result.probabilities) == pytest.approx(1.0)
        assert 0.0 < result.valid_mass <= 1.0
    # "1" and "12" are different answers: the closing tag keeps a prefix from taking the longer one's mass.
    assert scored[0].log_likelihoods[0] != scored[0].log_likelihoods[11]


def test_candidates_tokenise_the_same_alone_as_after_the_prefix(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Pick one."}], tokenize=False,
                                           add_generation_prompt=True) + scorers.ANSWER_PREFIX
    prefix = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for answer in [*scorers.candidate_answers("next_video", 25), *DIRECTIONS]:
        alone = tokenizer(answer + scorers.ANSWER_CLOSE, add_special_tokens=False)["input_ids"]
        joined = tokenizer(prompt + answer + scorers.ANSWER_CLOSE, add_special_tokens=False)["input_ids"]
        assert joined == prefix + alone, answer


# ------------------------------------------------------------------------------ trained think
TEMPLATE = "Next: {short_title}"
SLATE = [{"title": "Gun Bans Fail: What the Data Shows", "channel": "Armed Citizen Report"},
         {"title": "Stricter Gun Laws Save Lives (Part 2)", "channel": "Safer Streets Now"},
         {"title": "Why the Second Amendment Protects Every Family", "channel": "Gun Rights Defenders"}]


def test_trained_think_writes_the_sft_target_of_each_option():
    from grail_sim.answers import gold_reply

    think = scorers.ThinkForcing(TEMPLATE)
    assert think.prefix == "<think>"
    for k, item in enumerate(SLATE, 1):
        # The prefix plus option k's continuation is exactly the reply sft teaches for a human who chose k.
        row = {"gold_index": k, "slate_items": json.dumps(SLATE)}
        assert think.prefix + think.continuation(str(k), k, item) == gold_reply(row, TEMPLATE)
    # A direction names no option: it is scored after an empty think, written out.
    assert think.continuation("increase", 1, None) == "</think><answer>increase</answer>"
    assert scorers.ThinkForcing().prefix == scorers.ANSWER_PREFIX


def test_trained_think_candidates_tokenise_the_same_alone_as_in_the_training_reply(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    think = scorers.ThinkForcing(TEMPLATE)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Pick one."}], tokenize=False,
                                           add_generation_prompt=True) + think.prefix
    prefix = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for k, item in enumerate(SLATE, 1):
        continuation = think.continuation(str(k), k, item)
        alone = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        joined = tokenizer(prompt + continuation, add_special_tokens=False)["input_ids"]
        assert joined == prefix + alone, continuation


def test_trained_think_scores_equal_whole_replies_one_at_a_time(tiny_model_dir):
    from grail_sim.evaluation import likelihood

    scorer = scorers.HFScorer(tiny_model_dir, batch_size=2, device="cpu", think=scorers.ThinkForcing(TEMPLATE))
    rows = _rows("next_video", "test", 2)
    rows[0]["slate_items"], rows[0]["n_options"] = json.dumps(SLATE), 3
    rows[1]["slate_items"], rows[1]["n_options"] = json.dumps(SLATE + SLATE[:1]), 4
    records = likelihood.score_batch(scorer, "next_video", rows)
    for row, record in zip(rows, records):
        items = json.loads(row["slate_items"])
        replies = [scorers.ThinkForcing(TEMPLATE).continuation(str(k), k, item) for k, item in enumerate(items, 1)]
        assert record["log_likelihoods"] == pytest.approx(_brute_force(scorer, row["prompt"], replies), abs=1e-4)
    # Options 1 and 4 of the second row name the same video: only the answer digit tells them apart.
    assert records[1]["log_likelihoods"][0] != records[1]["log_likelihoods"][3]


def test_think_forcing_follows_the_models_recorded_template(tmp_path):
    trained = fake_model_dir(tmp_path / "sft")
    (trained / "grail_sim.json").write_text(json.dumps({"trainer": "sft", "think_template": TEMPLATE}))
    untrained = fake_model_dir(tmp_path / "base")
    assert scorers.think_forcing(trained, "trained").template == TEMPLATE
    assert scorers.think_forcing(trained, "empty").template == ""
    assert scorers.think_forcing(untrained, "trained").template == ""
    (trained / "grail_sim.json").write_text(json.dumps({"think_template": "Next: {rating}"}))
    with pytest.raises(EvaluationError, match=r"sft/grail_sim.json: think_template 'Next: \{rating\}'"):
        scorers.think_forcing(trained, "trained")
    with pytest.raises(EvaluationError, match="evaluate.score_think must be one of empty, trained"):
        scorers.think_forcing(untrained, "greedy")


def _train_answer_only_policy(model_dir: Path, rows: list[dict], steps: int = 60) -> None:
    """A few optimiser steps that teach the tiny model to reply `<think></think><answer>N</answer>`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    examples = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        reply = tokenizer(f"<think></think><answer>{row['gold_index']}</answer>{tokenizer.eos_token}",
                          add_special_tokens=False)["input_ids"]
        examples.append((torch.tensor([prompt_ids + reply]), len(prompt_ids)))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        ids, start = examples[step % len(examples)]
        labels = ids.clone()
        labels[0, :start] = -100
        model(input_ids=ids, labels=labels).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    model.save_pretrained(str(model_dir))


def test_scoring_argmax_equals_the_greedy_answer_of_an_answer_only_policy(tiny_model_dir, tmp_path):
    import shutil

    from grail_sim import answers
    from grail_sim.evaluation.generators import HFGenerator

    model_dir = tmp_path / "answer_only"
    shutil.copytree(tiny_model_dir, model_dir)
    rows = _rows("next_video", "train", 6)
    _train_answer_only_policy(model_dir, rows)
    generator = HFGenerator(model_dir, _settings(max_new_tokens=12, batch_size=1))
    scorer = scorers.HFScorer(model_dir, batch_size=3, device="cpu")
    replies = [generator.generate([row["prompt"]])[0] for row in rows]
    scored = scorer.score([(row["prompt"], _empty_think(scorers.candidate_answers("next_video", row["n_options"])))
                           for row in rows])
    parsed = [answers.parse_choice(reply, row["n_options"]) for reply, row in zip(replies, rows)]
    assert all(p is not None for p in parsed), replies  # the policy answers at once, in format
    argmax = [1 + max(range(len(s.probabilities)), key=s.probabilities.__getitem__) for s in scored]
    assert argmax == parsed


class FixedScorer:
    """Half the mass on option 1 (or the first direction) and the rest spread evenly; counts calls."""

    backend = "test-fixed"
    chunk_size = 4
    think = scorers.ThinkForcing()

    def __init__(self, valid_mass: float = 1.0):
        self.calls, self.valid_mass = 0, valid_mass

    def prompt_length(self, messages):
        return sum(len(m["content"]) for m in messages)

    def score(self, batch):
        self.calls += len(batch)
        out = []
        for _, answers in batch:
            rest = [0.5 / (len(answers) - 1)] * (len(answers) - 1)
            out.append(scorers.ScoredAnswers(tuple(math.log(p * self.valid_mass) for p in [0.5, *rest])))
        return out


def test_scores_resume_and_a_finished_run_rescores_for_free(tmp_path, monkeypatch):
    prompts = make_prompts(tmp_path / "prompts")
    out = tmp_path / "out"
    first = FixedScorer()
    monkeypatch.setattr(scorers, "make_scorer", lambda *a, **k: first)
    kwargs = dict(model_dir=fake_model_dir(tmp_path / "model"), prompts_dir=prompts, tasks=["next_video"],
                  split="validation", out_dir=out, settings=_settings(), mode="score", bootstrap_samples=20)
    real_write = io.write_jsonl
    monkeypatch.setattr(io, "write_jsonl", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        evaluation_evaluate.evaluate(**kwargs)
    partial = out / "scores.partial.jsonl"
    assert first.calls == 6 and not (out / "scores.jsonl").exists()
    partial.write_text("".join(partial.read_text().splitlines(keepends=True)[:2]))
    monkeypatch.setattr(io, "write_jsonl", real_write)
    second = FixedScorer()
    monkeypatch.setattr(scorers, "make_scorer", lambda *a, **k: second)
    result = evaluation_evaluate.evaluate(**kwargs)
    assert second.calls == 4 and result["scoring"]["resumed_rows"] == 2
    records = list(io.read_jsonl(out / "scores.jsonl"))
    assert len(records) == 6 and not partial.exists()
    assert list(io.read_jsonl(out / "predictions.jsonl")) == [] and "next_video" not in result["tasks"]
    policy = result["likelihood"]["next_video"]["overall"]["policy"]
    assert policy["nll"]["value"] == pytest.approx(
        sum(-math.log(r["probabilities"][r["gold"] - 1]) for r in records) / 6)


def test_direction_dataset_is_scored_over_the_three_directions_and_generated_as_words(tmp_path, monkeypatch):
    from datasets import Dataset, DatasetDict

    splits = {split: Dataset.from_list([dict(row, answer=row["opinion_direction"])
                                        for row in _rows("opinion", split, n)])
              for split, n in (("train", 8), ("test", 4))}
    DatasetDict(splits).save_to_disk(str(tmp_path / "prompts" / "opinion"))
    monkeypatch.setattr(scorers, "make_scorer", lambda *a, **k: FixedScorer())
    generator = ConstantGenerator({"next_video": "", "opinion": "<think>t</think><answer>No change</answer>"})
    monkeypatch.setattr(evaluation_evaluate, "make_generator", lambda *a, **k: generator)
    result = evaluation_evaluate.evaluate(model_dir=fake_model_dir(tmp_path / "model"), prompts_dir=tmp_path / "prompts",
                                          tasks=["opinion"], split="test", out_dir=tmp_path / "out",
                                          settings=_settings(), bootstrap_samples=20)
    figures = result["likelihood"]["opinion"]
    assert set(figures["overall"]) == {"policy", "uniform", "direction_prior"}
    assert figures["candidates"] == list(DIRECTIONS)
    # Train: 4 no_change, 4 increase, add-one smoothed over three directions.
    assert figures["baselines"]["direction_prior"]["train_counts"] == {"increase": 4, "decrease": 0, "no_change": 4}
    generation = result["tasks"]["opinion"]
    assert generation["target"] == "direction"
    # Test rows alternate no_change / increase; "No change" parses on every row.
    assert generation["overall"]["parsed_rate"]["value"] == 1.0
    assert generation["overall"]["direction_accuracy"]["value"] == 0.5


@pytest.mark.skipif(not (REAL / "next_video_study2.jsonl").exists(), reason="../shared/real not present")
def test_real_rows_get_a_distribution_whatever_the_policy_writes(tmp_path, monkeypatch):
    root = tmp_path / "external"
    prompts_importer.write_import(
        prompts_importer.import_jsonl(REAL / "next_video_study2.jsonl", prompts_settings.load_settings()),
        root / "next_video")
    # The collapse seen on these rows: every reply is a think with no answer.
    generator = ConstantGenerator({"next_video": "<think>Next: After This</think>", "opinion": ""})
    monkeypatch.setattr(evaluation_evaluate, "make_generator", lambda *a, **k: generator)
    monkeypatch.setattr(scorers, "make_scorer", lambda *a, **k: FixedScorer(valid_mass=1e-3))
    result = evaluation_evaluate.evaluate(model_dir=fake_model_dir(tmp_path / "model"), prompts_dir=root,
                                          tasks=["next_video"], split="test", out_dir=tmp_path / "eval",
                                          settings=_settings(), generate_rows=8, bootstrap_samples=50)
    assert result["tasks"]["next_video"]["overall"]["parsed_rate"]["value"] == 0.0
    figures = result["likelihood"]["next_video"]
    assert figures["n_eligible"] == 364 and figures["valid_mass"]["value"] == pytest.approx(1e-3)
    assert "cross-fitting" in figures["baselines"]["learned_on"]
    assert set(figures["overall"]) == {"policy", "uniform", "position_prior", "choice_model"}
    # Uniform 1/n on these slates: its NLL is the mean log slate size.
    sizes = [json.loads(line)["n_options"] for line in (REAL / "next_video_study2.jsonl").read_text().splitlines()]
    assert figures["overall"]["uniform"]["nll"]["value"] == pytest.approx(sum(map(math.log, sizes)) / len(sizes))
