"""The verifiable math task (#15): canonical answers, the math rewards on hand-written completions
(malformed ones included), the seeded problem generator, and GRPO on it through the real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from grail_sim import answers, errors
from grail_sim.prompts import math_task
from grail_sim.training import rewards
from grail_sim.training.data import trainable_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")
RECIPES = Path(__file__).resolve().parents[1] / "config" / "recipes"


@pytest.mark.parametrize("text, canonical", [
    ("1,234", "1234"), (" 42 ", "42"), ("7.", "7"), ("7.00", "7"), ("-0", "0"), ("2/4", "1/2"), ("0.5", "1/2"),
    ("3.50", "7/2"), ("7 / 2", "7/2"), ("  Paris ", "paris"), ("1/0", "1/0"), ("", None), (None, None)])
def test_canonical_answers(text, canonical):
    assert answers.canonical_answer(text) == canonical


def test_boxed_text_reads_the_last_box_with_nested_braces():
    assert answers.boxed_text(r"first \boxed{1} then \boxed{\frac{1}{2}}.") == r"\frac{1}{2}"
    assert answers.boxed_text(r"\boxed{unclosed") is None and answers.boxed_text("no box") is None


def test_answer_exact_match_on_hand_written_completions():
    completions = ["<think>12 + 30 = 42</think><answer>42</answer>", "<answer> 1,234.0 </answer>",
                   "<answer>0.5</answer>", "<answer>43</answer>", "42", "<answer></answer>", "<answer>42"]
    gold = ["42", "1234", "1/2", "42", "42", "42", "42"]
    assert rewards.answer_exact_match(completions, answer=gold) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(KeyError, match="needs the dataset column 'answer'"):
        rewards.answer_exact_match(completions, gold_index=[1] * 7)


def test_boxed_accuracy_is_trls_math_verify_reward():
    completions = [[{"role": "assistant", "content": r"so \boxed{\frac{47}{3}}"}],
                   [{"role": "assistant", "content": r"\boxed{15.666}"}],
                   [{"role": "assistant", "content": r"it is \boxed{\dfrac{94}{6}}"}],
                   [{"role": "assistant", "content": "no box at all: 47/3"}],
                   [{"role": "assistant", "content": r"\boxed{122}"}]]
    scores = rewards.boxed_accuracy(completions, answer=["47/3", "47/3", "47/3", "47/3", "122"])
    assert scores[0] == 1.0 and scores[1] == 0.0 and scores[2] == 1.0 and scores[4] == 1.0
    assert scores[3] == 0.0


def test_format_rewards_of_each_style():
    texts = ["<think>w</think><answer>3</answer>", "<answer>3</answer>", r"\boxed{3}", "3"]
    assert rewards.format(texts, answer=["3"] * 4) == [1.0, 0.5, 0.0, 0.0]
    assert rewards.boxed_format(texts, answer=["3"] * 4) == [0.0, 0.0, 1.0, 0.0]


def test_problems_are_seeded_graded_and_their_answers_check_out():
    rows = math_task.math_rows(30, seed=5)
    assert rows == math_task.math_rows(30, seed=5) and rows != math_task.math_rows(30, seed=6)
    assert [row["difficulty"] for row in rows].count(3) == 10
    for row in rows:
        assert row["task"] == "math" and row["answer"] == answers.canonical_answer(row["answer"])
        assert rewards.boxed_accuracy([row["solution"]], answer=[row["answer"]]) == [1.0]
        assert row["prompt"][0]["role"] == "system" and row["prompt"][1]["content"] == row["problem"]
    with pytest.raises(ValueError, match="style must be one of answer, boxed"):
        math_task.math_rows(1, seed=0, style="latex")


def test_math_rows_are_trainable_and_need_their_answer(tmp_path):
    from datasets import Dataset

    data = Dataset.from_list(math_task.math_rows(6, seed=0))
    assert len(trainable_rows(data, "math", need_grail=False)) == 6
    with pytest.raises(errors.TrainingDataError, match=r"lacks column\(s\) \['answer'\]"):
        trainable_rows(data.remove_columns(["answer"]), "math", need_grail=False)


@pytest.mark.slow
def test_grpo_trains_on_the_math_task_through_the_cli(tiny_model_dir, tmp_path):
    import json

    from grail_sim import cli

    dataset = tmp_path / "math"
    assert cli.main(["prompts", "math", "--out", str(dataset), "--train", "8", "--validation", "4",
                     "--test", "4"]) == 0
    argv = ["train", "--recipe", str(RECIPES / "math" / "grpo.yaml"), "--dataset", str(dataset), "--model",
            str(tiny_model_dir), "--out", str(tmp_path / "out"), "--max-steps", "1", "--threads", "1"]
    for override in ("per_device_train_batch_size=4", "num_generations=2", "max_completion_length=8",
                     "report_to=none"):
        argv += ["--set", override]
    assert cli.main(argv) == 0
    rows = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/answer_exact_match/mean" in row for row in rows)


def test_pass_at_k_is_the_unbiased_estimator():
    from grail_sim.evaluation.math_eval import ks_up_to, pass_at_k

    assert pass_at_k(4, 1, 1) == pytest.approx(0.25) and pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(4, 0, 4) == 0.0 and pass_at_k(4, 3, 2) == 1.0
    assert ks_up_to(8) == [1, 2, 4, 8] and ks_up_to(0) == []
    with pytest.raises(ValueError, match="pass@5 needs at least 5 samples"):
        pass_at_k(4, 1, 5)


def test_math_metrics_from_hand_made_records():
    from grail_sim.evaluation.math_eval import math_metrics

    records = [{"id": f"p{i}", "difficulty": 1 + i % 2, "correct": float(i < 2), "format_ok": 1.0,
                "parsed": True, "samples": 4, "samples_correct": i} for i in range(4)]
    figures = math_metrics(records, bootstrap=200)
    assert figures["overall"]["pass@1_greedy"]["value"] == 0.5
    assert figures["overall"]["pass@4"]["value"] == pytest.approx(0.75)  # c = 0, 1, 2, 3 of 4
    assert set(figures["by_difficulty"]) == {"1", "2"}
    low, high = figures["overall"]["pass@1_greedy"]["ci_low"], figures["overall"]["pass@1_greedy"]["ci_high"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0


@pytest.mark.slow
def test_evaluate_math_writes_records_and_metrics(tiny_model_dir, tmp_path):
    import json

    from grail_sim import cli

    dataset = tmp_path / "math"
    assert cli.main(["prompts", "math", "--out", str(dataset), "--train", "3", "--validation", "3",
                     "--test", "3", "--style", "boxed"]) == 0
    out = tmp_path / "eval"
    assert cli.main(["evaluate-math", "--model", str(tiny_model_dir), "--dataset", str(dataset), "--out", str(out),
                     "--samples", "2", "--max-new-tokens", "6", "--device", "cpu"]) == 0
    metrics = json.loads((out / "math_metrics.json").read_text())
    assert metrics["n_problems"] == 3 and {"pass@1_greedy", "pass@1", "pass@2", "parse_rate",
                                           "format_rate"} <= set(metrics["overall"])
    records = [json.loads(line) for line in (out / "math_predictions.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(record["samples"] == 2 for record in records)
