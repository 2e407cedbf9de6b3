"""`grail-sim report`: every template renders from hand-made metrics, numbers come from the data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from grail_sim import cli, io
from grail_sim import errors as errors
from grail_sim.evaluation import metrics
from grail_sim.report import model_report as report_model_report
from grail_sim.report import portfolio as report_portfolio

GOOD = "<think>t</think><answer>{}</answer>"


def _nv(i, gold, n_options, parsed, study="study1"):
    return {"id": f"r{i}", "task": "next_video", "gold": gold, "n_options": n_options, "parsed": parsed,
            "raw_output": GOOD.format(parsed) if parsed is not None else "nothing", "issue": "gun_control",
            "participant_study": study, "participant_id": f"p{i}"}


def _op(i, before, after, parsed, study="study1"):
    return {"id": f"o{i}", "task": "opinion", "gold": after, "n_options": 0, "parsed": parsed,
            "raw_output": GOOD.format(parsed) if parsed is not None else "nothing", "issue": "gun_control",
            "participant_study": study, "participant_id": f"p{i}", "opinion_before": before, "opinion_after": after}


def write_eval(folder: Path, model: str, nv_records, op_records, *, samples=200) -> Path:
    """A Contract-4 metrics.json built with the real metric functions (no model involved)."""
    tasks = {}
    if nv_records is not None:
        tasks["next_video"] = metrics.next_video_metrics(nv_records, train_gold_indices=[1, 1, 2], samples=samples)
    if op_records is not None:
        tasks["opinion"] = metrics.opinion_metrics(op_records, train_after_values=[0.5], samples=samples)
    data = {
        "model": model,
        "provenance": {"model_dir": f"results/models/{model}", "model_sha256": "ab" * 32,
                       "prompts_dir": "results/prompts/gun_control", "prompts_sha256": {"next_video": "cd" * 32},
                       "split": folder.name, "git_revision": "0123abc", "versions": {"torch": "2.13.0"}},
        "generation": {"backend": "hf", "generated_rows": 10, "seconds": 4.0, "prompts_per_second": 2.5,
                       "resumed_rows": 0, "max_new_tokens": 64, "temperature": 0.0, "seed": 0, "batch_size": 8},
        "rows": {"next_video": {"available": 100, "evaluated": len(nv_records or [])}},
        "tasks": tasks,
        "samples": {"next_video": [{"id": "r0", "prompt": [{"role": "system", "content": "sys ```x```"},
                                                           {"role": "user", "content": "OPTIONS 1. a 2. b"}],
                                    "raw_output": "<think>t</think><answer>1</answer>", "parsed": 1, "gold": 2,
                                    "format_ok": True}]},
    }
    io.write_json(folder / "metrics.json", data)
    return folder


def constant_records(n=40):
    return [_nv(i, 1 + i % 4, 4, 1) for i in range(n)]


def perfect_records(n=60):
    return [_nv(i, 1 + i % 4, 4, 1 + i % 4) for i in range(n)]


def opinion_records(n=30, parsed=lambda i: None):
    return [_op(i, 0.3, 0.3 + (0.1 if i % 2 else -0.1), parsed(i)) for i in range(n)]


def test_formatting_filters_render_missing_values_as_no_rows():
    assert report_model_report.fmt_pct(None) == "no rows" and report_model_report.fmt_num(float("nan")) == "no rows"
    assert report_model_report.fmt_pct(0.3846) == "38.5%" and report_model_report.fmt_num(0.0962) == "0.096"
    assert report_model_report.fmt_ci({"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}, percent=True) == "50.0% [40.0%, 60.0%]"
    assert report_model_report.fmt_ci({"value": None}) == "no rows"
    fenced = report_model_report.fence("a ``` b")
    assert fenced.startswith("````\n") and fenced.endswith("\n````")


def test_base_model_report_has_numbers_warnings_and_no_training_curves(tmp_path):
    evals = [write_eval(tmp_path / "eval" / "base_gun" / split, "base", constant_records(), opinion_records())
             for split in ("validation", "test")]
    out = tmp_path / "reports" / "base_gun.md"
    text = report_model_report.render_model_report(model="base", issue="gun", eval_dirs=evals, out=out,
                                      figures=tmp_path / "reports" / "figures" / "base_gun")
    assert out.read_text() == text
    assert "No training curves" in text
    overall = json.loads((evals[0] / "metrics.json").read_text())["tasks"]["next_video"]["overall"]
    assert report_model_report.fmt_ci(overall["accuracy"], percent=True) in text
    assert report_model_report.fmt_ci(overall["baselines"]["always_last"], percent=True) in text
    assert "Constant-position warning" in text and "100.0% of parsed answers are position 1" in text
    assert "No opinion answer parsed" in text
    assert "## Split `validation`" in text and "## Split `test`" in text
    figure = tmp_path / "reports" / "figures" / "base_gun" / "base_gun_validation_positions.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"
    assert "](figures/base_gun/base_gun_validation_positions.png)" in text
    assert "````\nsys ```x```\n````" in text  # a sample prompt, fenced safely
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_trained_model_report_plots_training_curves(tmp_path):
    evaluation = write_eval(tmp_path / "eval" / "grail_gun" / "test", "grail", perfect_records(), None)
    train = tmp_path / "train" / "grail_gun"
    io.write_jsonl(train / "metrics.jsonl", [{"step": s, "epoch": s / 4, "reward": 0.25 * s, "kl": 0.01 * s,
                                             "completions/mean_length": 30 + s, "gail/disc_acc": 0.5} for s in (1, 2, 3, 4)])
    io.write_text(train / "resolved_recipe.yaml", "trainer: grail\n")
    out = tmp_path / "reports" / "grail_gun.md"
    code = cli.main(["report", "--model", "grail", "--issue", "gun", "--eval", str(evaluation), "--train-dir", str(train),
                     "--out", str(out)])
    assert code == 0
    text = out.read_text()
    assert "4 logged steps (last step 4)" in text
    assert "| `reward` | 0.2500 | 1.0000 | 4 |" in text and "`gail/disc_acc`" in text
    assert (tmp_path / "reports" / "figures" / "grail_gun_training.png").is_file()
    assert "Opinion" in text and "Not evaluated." in text  # no opinion task in this evaluation
    assert io.file_sha256(train / "resolved_recipe.yaml") in text


def test_empty_study_and_empty_task_render_as_no_rows(tmp_path):
    # Wage has two studies; only study2 has rows, so study3 must read "no rows". The opinion task is empty.
    records = [_nv(i, 1, 3, 2, study="study2") for i in range(5)]
    for r in records:
        r["issue"] = "minimum_wage"
    evaluation = write_eval(tmp_path / "eval" / "grpo_wage" / "test", "grpo", records, [])
    text = report_model_report.render_model_report(model="grpo", issue="wage", eval_dirs=[evaluation],
                                      out=tmp_path / "grpo_wage.md", figures=tmp_path / "figures",
                                      train_dir=None)
    assert "| study3 | no rows |" in text and "| study2 | 5 |" in text
    opinion_part = text.split("### Opinion (post-study index, 0-1 scale)")[1]
    assert opinion_part.lstrip().startswith("no rows")
    empty = write_eval(tmp_path / "eval" / "base_wage" / "test", "base", [], [])
    text = report_model_report.render_model_report(model="base", issue="wage", eval_dirs=[empty], out=tmp_path / "empty.md",
                                      figures=tmp_path / "figures")
    assert text.count("no rows") >= 2 and not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_portfolio_marks_only_a_model_whose_interval_clears_the_best_baseline(tmp_path):
    dirs = [
        write_eval(tmp_path / "base_gun" / "test", "base", constant_records(60), opinion_records(30)),
        write_eval(tmp_path / "grail_gun" / "test", "grail", perfect_records(60),
                   opinion_records(30, parsed=lambda i: 0.4 if i % 2 else 0.2)),
    ]
    out = tmp_path / "portfolio.md"
    assert cli.main(["report", "portfolio", "--eval", *map(str, dirs), "--out", str(out)]) == 0
    text = out.read_text()
    assert "| grail (test) | 60 | **★ 100.0% [100.0%, 100.0%]** |" in text
    assert "| base (test) | 60 | 25.0%" in text and "★ 25.0%" not in text
    assert "baseline: most-frequent index (best)" in text
    assert "**★ 0.000 [0.000, 0.000]**" in text  # the perfect opinion model's MAE
    assert "### study1" in text and "## gun control" in text

    # Identical to the baseline: no mark anywhere.
    same = write_eval(tmp_path / "grpo_gun" / "test", "grpo", constant_records(60), None)
    text = report_portfolio.render_portfolio([same], tmp_path / "p2.md")
    assert "★" not in text.split("# Portfolio")[1].split("\n", 3)[3]


def test_portfolio_lists_an_absent_study_as_no_rows(tmp_path):
    records = [_nv(i, 1, 3, 1, study="study2") for i in range(4)]
    for r in records:
        r["issue"] = "minimum_wage"
    evaluation = write_eval(tmp_path / "base_wage" / "test", "base", records, None)
    text = report_portfolio.render_portfolio([evaluation], tmp_path / "portfolio.md")
    study3 = text.split("### study3")[1]
    assert study3.split("Opinion")[0].strip().endswith("no rows")


def test_missing_metrics_and_template_fail_naming_the_file(tmp_path):
    with pytest.raises(errors.ReportError, match=str(tmp_path / "nothing" / "metrics.json")):
        report_portfolio.render_portfolio([tmp_path / "nothing"], tmp_path / "p.md")
    evaluation = write_eval(tmp_path / "e" / "test", "base", constant_records(4), None)
    with pytest.raises(errors.ReportError, match="custom.md.j2"):
        report_portfolio.render_portfolio([evaluation], tmp_path / "p.md", template=tmp_path / "custom.md.j2")
    with pytest.raises(errors.ReportError, match="metrics.jsonl"):
        report_model_report.render_model_report(model="grpo", issue="gun", eval_dirs=[evaluation], out=tmp_path / "r.md",
                                   figures=tmp_path / "f", train_dir=tmp_path / "no_training")


def test_every_packaged_template_renders(tmp_path):
    templates = sorted(report_model_report.TEMPLATES.glob("*.md.j2"))
    assert {t.name for t in templates} >= {"model_report.md.j2", "portfolio.md.j2"}
    evaluation = write_eval(tmp_path / "e" / "test", "base", constant_records(8), opinion_records(6))
    rendered = report_model_report.render_model_report(model="base", issue="gun", eval_dirs=[evaluation], out=tmp_path / "m.md",
                                          figures=tmp_path / "f", template=report_model_report.MODEL_TEMPLATE)
    assert rendered.startswith("# `base` on gun control")
    assert report_portfolio.render_portfolio([evaluation], tmp_path / "p.md").startswith("# Portfolio")
