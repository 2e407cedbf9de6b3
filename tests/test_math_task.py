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
    argv = ["train", "--config", str(RECIPES / "math" / "grpo.yaml"), "--dataset", str(dataset), "--model",
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
    figures = math_metrics(records, bootstrap=200, seed=0, confidence=0.95)
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


def test_batched_math_evaluation_gives_the_greedy_replies_of_one_at_a_time(tiny_model_dir, tmp_path):
    """math.batch_size (default 16) left-pads problems of different lengths into one generate call;
    the greedy reply of each problem must not depend on its neighbours or their padding."""
    import json

    from datasets import load_from_disk

    from grail_sim import cli

    dataset = tmp_path / "math"
    assert cli.main(["prompts", "math", "--out", str(dataset), "--train", "3", "--validation", "3",
                     "--test", "5"]) == 0
    replies = {}
    for batch_size in (1, 5):
        out = tmp_path / f"eval{batch_size}"
        assert cli.main(["evaluate-math", "--model", str(tiny_model_dir), "--dataset", str(dataset), "--out",
                         str(out), "--samples", "0", "--max-new-tokens", "8", "--batch-size", str(batch_size),
                         "--device", "cpu"]) == 0
        assert json.loads((out / "math_metrics.json").read_text())["batch_size"] == batch_size
        replies[batch_size] = [json.loads(line)["reply"] for line in (out / "math_predictions.jsonl").read_text().splitlines()]
    problems = load_from_disk(str(dataset))["test"]["problem"]
    assert len({len(problem) for problem in problems}) > 1  # one batch of unequal lengths: padding is exercised
    assert len(replies[1]) == 5 and replies[5] == replies[1]


def _math_section(**values):
    from grail_sim.config import resolve_section

    return resolve_section("math", values)


def test_a_gsm8k_style_file_maps_onto_the_math_contract(tmp_path):
    """GSM8K's shape: the answer column holds the working, then `#### answer`; no validation or test
    split in a single file, so both are carved from the train source, disjoint from training."""
    import json

    source = tmp_path / "gsm8k.jsonl"
    rows = [{"question": f"Q{i}: 1,000 + {i}?", "answer": f"1000 + {i} = {1000 + i}\n#### {1000 + i:,}"}
            for i in range(10)]
    rows += [{"question": "no marker", "answer": "42"}, {"question": "", "answer": "#### 3"}]
    source.write_text("\n".join(json.dumps(row) for row in rows))
    section = _math_section(dataset=str(source), columns={"problem": "question", "solution": None},
                            answer_pattern=r"####\s*(.+)$", dataset_splits={"test": None},
                            rows={"train": 0, "validation": 2, "test": 3})
    splits, stats = math_task.math_splits(section)
    assert stats["rows"] == {"train": 5, "validation": 2, "test": 3}
    assert stats["dropped"]["train"] == {"answer_pattern not found": 1, "empty problem": 1}
    ids = {name: {row["problem"] for row in rows} for name, rows in splits.items()}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["validation"])
    row = splits["test"][0]
    number = int(row["problem"].split("+ ")[1].rstrip("?"))
    assert row["answer"] == str(1000 + number)  # "1,00x" read canonical
    assert row["solution"] == f"1000 + {number} = {1000 + number} The answer is \\boxed{{{1000 + number}}}."
    assert math_task.reference_reply(row) == f"<think>1000 + {number} = {1000 + number}</think><answer>{1000 + number}</answer>"
    assert row["prompt"][0]["content"] == math_task.STYLES["answer"] and row["task"] == "math"


def test_a_deepscaler_style_folder_keeps_symbolic_answers_and_named_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "deepscaler"
    make = lambda n, tag: Dataset.from_list([{"problem": f"{tag} {i}", "answer": "\\frac{\\pi}{2}" if i == 0 else "0.50",
                                              "solution": f"work {i}", "level": str(i % 2)} for i in range(n)])
    DatasetDict(train=make(6, "train"), test=make(2, "test")).save_to_disk(str(folder))
    section = _math_section(dataset=str(folder), columns={"difficulty": "level"}, style="boxed",
                            rows={"train": 4, "validation": 0, "test": 0})
    splits, stats = math_task.math_splits(section)
    assert stats["rows"] == {"train": 4, "test": 2} and "validation" not in splits
    answers_seen = {row["answer"] for row in splits["test"]}
    assert answers_seen == {"\\frac{\\pi}{2}", "1/2"}
    assert all(row["difficulty"] in {"0", "1"} and row["style"] == "boxed" for row in splits["train"])
    boxed = next(row for row in splits["test"] if row["answer"] == "1/2")
    assert math_task.reference_reply(boxed).endswith("\\boxed{\\frac{1}{2}}.")


@pytest.mark.parametrize("values, message", [
    ({"columns": {"problem": "question"}}, r"lacks column\(s\) \['question'\]"),
    ({"dataset_splits": {"test": "holdout"}}, r"has no split 'holdout'"),
    ({"answer_pattern": "####"}, r"needs a group around the answer"),
    ({"answer_pattern": "(unclosed"}, r"is not a regular expression"),
])
def test_dataset_mapping_errors_name_the_culprit(tmp_path, values, message):
    import json

    source = tmp_path / "rows.json"
    source.write_text(json.dumps([{"problem": "1 + 1?", "answer": "2"}] * 4))
    section = _math_section(dataset=str(source), rows={"train": 0, "validation": 0, "test": 1},
                            **{"dataset_splits": {"test": None}, **values})
    with pytest.raises(errors.PromptError, match=message):
        math_task.math_splits(section)


def test_prompts_math_cli_reads_the_math_section_and_its_overrides(tmp_path):
    import json

    from grail_sim import cli

    config_file = tmp_path / "config.yaml"
    config_file.write_text("math:\n  rows: {train: 4, validation: 0, test: 2}\n  style: boxed\n")
    out = tmp_path / "math"
    assert cli.main(["prompts", "math", "--out", str(out), "--config", str(config_file), "--test", "3"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows"] == {"train": 4, "test": 3} and stats["style"] == "boxed" and stats["source"] == "generated"
    config_file.write_text("math:\n  rows: {train: 4, tests: 2}\n")
    assert cli.main(["prompts", "math", "--out", str(out), "--config", str(config_file)]) == 2


def test_sft_targets_a_math_rows_worked_solution():
    from grail_sim.training.sft import sft_example

    row = math_task.math_rows(1, seed=3)[0]
    example = sft_example(row, "Next: {short_title}")
    assert example["prompt"] == row["prompt"]
    assert example["completion"][0]["content"] == math_task.reference_reply(row)
    assert answers.answer_text(example["completion"][0]["content"]) == row["answer"]


def _evaluation(folder, name, correct, fmt):
    import json

    from grail_sim.evaluation.math_eval import math_metrics

    path = folder / f"math_{name}" / "test"
    path.mkdir(parents=True)
    records = [{"id": f"p{i}", "difficulty": 1 + i % 3, "gold": "1", "reply": f"reply {i}", "correct": float(c),
                "format_ok": float(f), "parsed": bool(f), "samples": 0, "samples_correct": 0}
               for i, (c, f) in enumerate(zip(correct, fmt))]
    (path / "math_predictions.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    metrics = {"model": name, "dataset": str(folder / "none"), "split": "test", "samples": 0, "temperature": 0.8,
               "max_new_tokens": 96, "backend": "hf", "bootstrap_samples": 300, "confidence": 0.95, "seed": 0,
               **math_metrics(records, bootstrap=300, seed=0, confidence=0.95)}
    (path / "math_metrics.json").write_text(json.dumps(metrics))
    return path


def test_the_math_report_pairs_the_trained_model_with_the_others(tmp_path):
    from grail_sim.report.math_report import paired_gain, render_math_report

    base = _evaluation(tmp_path, "base", [0] * 30, [0] * 30)
    sft = _evaluation(tmp_path, "sft", [1] * 6 + [0] * 24, [1] * 30)
    grpo = _evaluation(tmp_path, "grpo", [1] * 12 + [0] * 18, [1] * 30)
    out = tmp_path / "reports" / "math_grpo.md"
    text = render_math_report(model="grpo", eval_dirs=[base, sft, grpo], out=out, figures=tmp_path / "figures",
                              samples=2)
    assert out.read_text() == text
    assert "| base (zero-shot) | 30 | 0.0% [0.0%, 0.0%]" in text and "| **grpo** | 30 | 40.0%" in text
    # Against the base every problem gains 0 or 1: 12 of 30; against sft 6 of 30, paired.
    assert "| base (zero-shot) | 30 | 40.0% [" in text and "| sft | 30 | 20.0% [" in text
    gain = paired_gain(list(_records(grpo)), list(_records(sft)), bootstrap=300, confidence=0.95)
    assert gain["pass@1_greedy"]["value"] == pytest.approx(0.2) and gain["clears"]
    assert "reply 0" in text and "No training log given." in text
    with pytest.raises(errors.ReportError, match=r"--model 'maxent' is none of the evaluated models"):
        render_math_report(model="maxent", eval_dirs=[base, grpo], out=out, figures=tmp_path / "figures", samples=1)


def _records(folder):
    import json

    return [json.loads(line) for line in (folder / "math_predictions.jsonl").read_text().splitlines()]
