"""`grail-sim report`: every template renders from metrics built with the real metric functions,
numbers come from the data, and the marks and warnings appear exactly when they should."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from grail_sim import cli, io
from grail_sim import errors as errors
from grail_sim.evaluation import choice_metrics, metrics
from grail_sim.report import model_report as report_model_report
from grail_sim.report import portfolio as report_portfolio

GOOD = "<think>t</think><answer>{}</answer>"
PRIOR = {3: [0.5, 0.3, 0.2], 4: [0.4, 0.3, 0.2, 0.1]}


def _nv(i, gold, n_options, parsed, study="study1"):
    return {"id": f"r{i}", "task": "next_video", "gold": gold, "n_options": n_options, "parsed": parsed,
            "raw_output": GOOD.format(parsed) if parsed is not None else "nothing", "issue": "gun_control",
            "participant_study": study, "participant_id": f"p{i}"}


def _op(i, before, after, parsed, study="study1"):
    return {"id": f"o{i}", "task": "opinion", "gold": after, "n_options": 0, "parsed": parsed,
            "raw_output": GOOD.format(parsed) if parsed is not None else "nothing", "issue": "gun_control",
            "participant_study": study, "participant_id": f"p{i}", "opinion_before": before, "opinion_after": after}


# --------------------------------------------------------------------------- likelihood fixtures
def scored_records(n=60, n_options=4, study="study1"):
    """Scores.jsonl-like next-video records with the breakdown keys choice_metrics groups by."""
    return [{"id": f"s{i}", "task": "next_video", "gold": 1 + (i * 7) % n_options, "n_options": n_options,
             "participant_study": study, "participant_id": f"p{i // 2}", "issue": "gun_control",
             "treatment_arm": "pro_22" if i % 2 else "anti_31", "viewer_leaning": "liberal" if i % 3 else "conservative"}
            for i in range(n)]


def peaked(on_gold):
    """A policy putting `on_gold` on the participant's choice and the rest evenly elsewhere."""
    def policy(record):
        n = record["n_options"]
        return [on_gold if k == record["gold"] else (1 - on_gold) / (n - 1) for k in range(1, n + 1)]
    return policy


def always_first(share):
    return lambda r: [share] + [(1 - share) / (r["n_options"] - 1)] * (r["n_options"] - 1)


def uniform(record):
    return [1 / record["n_options"]] * record["n_options"]


def likelihood_block(records, policy, *, choice_model=None, valid_mass=0.9, samples=200, oracle=None):
    """metrics.json's `likelihood.next_video`: choice_metrics.distribution_metrics of the policy and the
    three baselines (the choice model stands in as a fixed vector function), plus valid mass and fitting;
    `oracle` (a vector function) adds the demo's ceiling as evaluate does on demo data."""
    sources = {"policy": [policy(r) for r in records], "uniform": [uniform(r) for r in records],
               "position_prior": [PRIOR[r["n_options"]] for r in records],
               "choice_model": [(choice_model or (lambda r: PRIOR[r["n_options"]]))(r) for r in records]}
    if oracle is not None:
        sources["oracle"] = [oracle(r) for r in records]
    figures = choice_metrics.distribution_metrics(records, sources, samples=samples)
    if oracle is not None:
        figures["oracle"] = {"stance_match_prob": 0.7, "position_weights": [1.0, 0.8, 0.6, 0.45, 0.35],
                             "participants": 30, "videos": 240, "resolved_rows": len(records),
                             "dropped": {"slate_not_displayed": 2}}
    groups = [r["participant_id"] for r in records]
    figures["valid_mass"] = metrics.bootstrap_means(groups, {"v": [valid_mass] * len(records)}, samples=samples)["v"]
    figures["baselines"] = {
        "learned_on": "train",
        "uniform": {"name": "uniform", "rule": "1/n_options for every option"},
        "position_prior": {"name": "position_prior", "smoothing": 1.0, "train_rows": 7, "by_n_options": PRIOR},
        "choice_model": {"name": "choice_model", "features": ["position_1", "sim_profile"], "train_rows": 7,
                         "coefficients": {"position_1": 0.25, "sim_profile": -1.5}, "settings": {"C": 0.01}},
    }
    figures["candidates"] = "option numbers 1..n"
    return figures


def write_eval(folder: Path, model: str, nv_records, op_records, *, likelihood=None, mode=None, samples=200,
               opinion=None) -> Path:
    """A Contract-4 metrics.json built with the real metric functions (no model involved).

    `likelihood` is the next-video likelihood block; `opinion` replaces the opinion generation figures
    (a direction summary). The mode follows from what is given unless `mode` says otherwise.
    """
    tasks = {}
    if nv_records is not None:
        tasks["next_video"] = metrics.next_video_metrics(nv_records, train_gold_indices=[1, 1, 2], samples=samples)
    if op_records is not None:
        tasks["opinion"] = metrics.opinion_metrics(op_records, train_after_values=[0.5, 0.6],
                                                   train_before_values=[0.4, 0.5], samples=samples)
    if opinion is not None:
        tasks["opinion"] = opinion
    generated = bool(tasks)
    mode = mode or ("both" if likelihood and generated else "score" if likelihood else "generate")
    scored = likelihood["n_rows"] if likelihood else 0
    data = {
        "model": model, "mode": mode,
        "provenance": {"model_dir": f"results/models/{model}", "model_sha256": "ab" * 32,
                       "prompts_dir": "results/prompts/gun_control", "prompts_sha256": {"next_video": "cd" * 32},
                       "split": folder.name, "git_revision": "0123abc", "versions": {"torch": "2.13.0"}},
        "generation": {"backend": "hf" if generated else None, "generated_rows": 10 if generated else 0,
                       "seconds": 4.0, "prompts_per_second": 2.5 if generated else None,
                       "resumed_rows": 0, "max_new_tokens": 64, "temperature": 0.0, "seed": 0, "batch_size": 8},
        "scoring": {"backend": "hf", "scored_rows": scored, "seconds": 2.0, "rows_per_second": scored / 2.0,
                    "resumed_rows": 0, "batch_size": 8, "dtype": "float32", "prefix": "<think></think><answer>"},
        "rows": {"next_video": {"available": 100, "scored": scored, "generated": len(nv_records or [])}},
        "likelihood": {"next_video": likelihood} if likelihood else {},
        "tasks": tasks,
        "samples": {"next_video": [{"id": "r0", "prompt": [{"role": "system", "content": "sys ```x```"},
                                                           {"role": "user", "content": "OPTIONS 1. a 2. b"}],
                                    "raw_output": "<think>t</think><answer>1</answer>", "parsed": 1, "gold": 2,
                                    "format_ok": True}]} if generated else {},
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
    # No opinion task in this evaluation (a trained model's default): one line, no empty section.
    assert report_model_report.OPINION_NOT_TRAINED in text and "Not evaluated." not in text
    assert io.file_sha256(train / "resolved_recipe.yaml") in text
    assert "GRAIL discriminator" not in text  # this log has no gail/accuracy: no discriminator figure


def _grail_report(tmp_path, metric_rows: list[dict]) -> str:
    """`grail-sim report` of a grail model whose training logged `metric_rows`; the report's text."""
    evaluation = write_eval(tmp_path / "eval" / "grail_gun" / "test", "grail", perfect_records(), None)
    train = tmp_path / "train" / "grail_gun"
    io.write_jsonl(train / "metrics.jsonl", metric_rows)
    out = tmp_path / "reports" / "grail_gun.md"
    assert cli.main(["report", "--model", "grail", "--issue", "gun", "--eval", str(evaluation), "--train-dir",
                     str(train), "--out", str(out)]) == 0
    return out.read_text()


def test_grail_report_plots_its_discriminator_and_states_the_gap(tmp_path):
    text = _grail_report(tmp_path, [
        {"step": s, "reward": 0.5, "gail/accuracy": 0.5 + 0.1 * s, "gail/p_human_gold": 0.5 + 0.05 * s,
         "gail/p_human_policy": 0.5 - 0.05 * s, "gail/p_human_negative": 0.45} for s in (1, 2, 3)])
    assert "0.100 at the first logged step, 0.300 at the last (3 steps)" in text
    assert "](figures/grail_gun_training_discriminator.png)" in text
    assert (tmp_path / "reports" / "figures" / "grail_gun_training_discriminator.png").read_bytes()[:4] == b"\x89PNG"


def test_grail_report_renders_when_no_step_scored_the_policy(tmp_path):
    """A short GRAIL run whose completions named no option logs the discriminator's accuracy but no
    P(human) of policy choices: the report said nothing of the gap and failed ('None' has no attribute
    'first'), found by the first run through Slurm."""
    text = _grail_report(tmp_path, [{"step": s, "reward": 0.0, "gail/accuracy": 0.5} for s in (1, 2)])
    assert "](figures/grail_gun_training_discriminator.png)" in text
    assert "No logged step scored both human and policy choices" in text


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
    opinion_part = text.split("### Opinion (post-study index, 0-1 scale): generation on a small sample")[1]
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
    # Gun control has one study: its tables are the "all" tables, printed once under a label saying so.
    assert "### all studies (study1 only)" in text and "### study1" not in text and "## gun control" in text

    # Identical to the baseline: no mark anywhere.
    same = write_eval(tmp_path / "grpo_gun" / "test", "grpo", constant_records(60), None)
    text = report_portfolio.render_portfolio([same], tmp_path / "p2.md")
    assert "★" not in text.split("\n## ", 1)[1]  # the tables, past the legend


def test_portfolio_lists_an_absent_study_as_no_rows(tmp_path):
    records = [_nv(i, 1, 3, 1, study="study2") for i in range(4)]
    for r in records:
        r["issue"] = "minimum_wage"
    evaluation = write_eval(tmp_path / "base_wage" / "test", "base", records, None)
    text = report_portfolio.render_portfolio([evaluation], tmp_path / "portfolio.md")
    study3 = text.split("### study3")[1]
    assert study3.split("Opinion")[0].strip().endswith("no rows")
    assert "Not scored" in study3  # a generation-only evaluation has no likelihood table


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


# --------------------------------------------------------------------------- choice likelihood
def _report(tmp_path, evaluation, model="grail", **options):
    return report_model_report.render_model_report(model=model, issue="gun", eval_dirs=[evaluation],
                                                   out=tmp_path / "reports" / f"{model}_gun.md",
                                                   figures=tmp_path / "reports" / "figures", **options)


def _likelihood_part(text):
    return text.split("### Choice likelihood (every row)")[1].split("generation on a small sample")[0]


def test_likelihood_table_leads_and_marks_a_policy_that_clears_every_baseline(tmp_path):
    records = scored_records()
    lik = likelihood_block(records, peaked(0.85))
    evaluation = write_eval(tmp_path / "eval" / "grail_gun" / "test", "grail", perfect_records(8), None, likelihood=lik)
    text = _report(tmp_path, evaluation)
    assert text.index("### Choice likelihood (every row)") < text.index("### Next-video choice: generation on a small")
    policy = lik["overall"]["policy"]
    fmt = report_model_report.fmt_ci
    assert f"| **grail** | **★ {fmt(policy['nll'])}** |" in text
    assert f"**★ {fmt(policy['accuracy_at_1'], percent=True)}**" in text
    # Every baseline's row, with the reference's pseudo-R² read as such.
    assert f"| fitted choice model | {fmt(lik['overall']['choice_model']['nll'])} |" in text
    assert f"| position prior (train shares per n) | {fmt(lik['overall']['position_prior']['nll'])} | 0 (reference) |" in text
    assert "Collapse warning" not in text and "Constant-position warning" not in text
    # Breakdowns: every arm and leaning of the records; how the baselines were fitted.
    part = _likelihood_part(text)
    assert "##### By treatment arm" in part and "| anti_31 | 30 |" in part and "| pro_22 | 30 |" in part
    assert "##### By viewer leaning" in part and "| conservative | 20 |" in part
    assert "Learned on: train." in part and "Choice-model features (2): `position_1`, `sim_profile`." in part
    assert "Generation on a small sample of the same split: 8 of 8 answers parsed (100.0%)" in part
    assert "generation on a small sample (8 rows)" in text


def test_no_star_when_the_fitted_choice_model_is_better(tmp_path):
    records = scored_records()
    lik = likelihood_block(records, peaked(0.7), choice_model=peaked(0.95))
    overall = lik["overall"]
    # The policy clears uniform and the position prior, but not the best baseline: no ★.
    assert choice_metrics.clears_best_baseline(overall, "policy", ["uniform", "position_prior"], "nll")
    assert not choice_metrics.clears_best_baseline(overall, "policy", ["uniform", "position_prior", "choice_model"], "nll")
    evaluation = write_eval(tmp_path / "eval" / "grail_gun" / "test", "grail", None, None, likelihood=lik)
    text = _report(tmp_path, evaluation)
    assert "**★" not in _likelihood_part(text)
    assert "NLL does not clear, accuracy@1 does not clear" in text


def test_collapsed_policy_gets_the_valid_mass_warning(tmp_path):
    records = scored_records(40)
    collapsed = write_eval(tmp_path / "eval" / "c" / "test", "grail", None, None,
                           likelihood=likelihood_block(records, peaked(0.5), valid_mass=3e-9))
    text = _report(tmp_path, collapsed)
    assert "**Collapse warning:** most of the policy's probability after `<think></think><answer>` is on no valid" in text
    assert "3.0e-09 [3.0e-09, 3.0e-09]" in text  # tiny masses never round to 0.000
    healthy = write_eval(tmp_path / "eval" / "h" / "test", "grail", None, None,
                         likelihood=likelihood_block(records, peaked(0.5), valid_mass=0.9))
    text = _report(tmp_path, healthy)
    assert "Collapse warning" not in text and "0.900 [0.900, 0.900]" in text


def test_constant_position_warning_reads_the_policys_mean_distribution(tmp_path):
    records = scored_records(40)
    constant = write_eval(tmp_path / "eval" / "k" / "test", "grail", None, None,
                          likelihood=likelihood_block(records, always_first(0.9)))
    text = _report(tmp_path, constant)
    assert "**Constant-position warning:** the policy's mean distribution puts 90.0% on 1." in _likelihood_part(text)
    assert "Constant-position warning" not in _report(tmp_path, constant, constant_share=0.95)


def test_reliability_and_mean_position_figures_are_written_and_linked(tmp_path):
    evaluation = write_eval(tmp_path / "eval" / "grail_gun" / "test", "grail", None, None,
                            likelihood=likelihood_block(scored_records(30), peaked(0.6)))
    text = _report(tmp_path, evaluation)
    figures = tmp_path / "reports" / "figures"
    for name in ("grail_gun_test_next_video_reliability.png", "grail_gun_test_next_video_mean_positions.png"):
        assert (figures / name).read_bytes()[:4] == b"\x89PNG"
        assert f"](figures/{name})" in text


def test_score_mode_renders_without_generation_sections(tmp_path):
    evaluation = write_eval(tmp_path / "eval" / "base_gun" / "test", "base", None, None,
                            likelihood=likelihood_block(scored_records(20), uniform))
    text = _report(tmp_path, evaluation, model="base")
    assert "### Choice likelihood (every row)" in text
    assert "generation on a small sample" not in text and "Sample responses" not in text
    assert "No generation in this run (`evaluate.mode: score`)" in text
    assert "| generation (test) |" not in text and "| scoring (test) | backend hf, dtype float32" in text
    assert "- next_video: 100 rows; scored 20 (seeded sample, capped by `evaluate.score_rows`); generated 0." in text
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    portfolio = report_portfolio.render_portfolio([evaluation], tmp_path / "p.md")
    assert "Not generated (no evaluation here ran" in portfolio


def test_generate_mode_has_no_likelihood_section(tmp_path):
    evaluation = write_eval(tmp_path / "eval" / "base_gun" / "test", "base", constant_records(8), None)
    text = _report(tmp_path, evaluation, model="base")
    assert "Choice likelihood" not in text and "generation on a small sample (8 rows)" in text


def test_direction_opinion_summary_renders_in_both_reports(tmp_path):
    direction_metrics = pytest.importorskip("grail_sim.evaluation.direction_metrics")
    golds = ["increase", "decrease", "no_change", "increase"]
    records = [{"id": f"d{i}", "task": "opinion", "target": "direction", "gold": golds[i % 4],
                "parsed": "increase" if i % 3 else None, "raw_output": GOOD.format("increase") if i % 3 else "x",
                "participant_study": "study1", "participant_id": f"p{i}"} for i in range(24)]
    summary = direction_metrics.direction_metrics(records, train_directions=["increase", "increase", "decrease"],
                                                  samples=200)
    evaluation = write_eval(tmp_path / "eval" / "grail_gun" / "test", "grail", None, None, opinion=summary)
    text = _report(tmp_path, evaluation)
    assert "### Opinion direction: generation on a small sample (24 rows)" in text
    assert "Parsed 16 of 24 answers (66.7%)" in text
    fmt = report_model_report.fmt_ci
    assert f"| majority direction (increase, learned on train) | 24 | " \
           f"{fmt(summary['overall']['baselines']['majority_direction'], percent=True)} |" in text
    assert f"| **grail** | 24 | {fmt(summary['overall']['direction_accuracy'], percent=True)} |" in text
    portfolio = report_portfolio.render_portfolio([evaluation], tmp_path / "p.md")
    assert "Opinion direction, generation on a small sample" in portfolio
    assert "baseline: majority direction (increase, learned on train)" in portfolio
    # A trained model's direction answers are kept when asked for, labelled as off-task.
    assert "| grail (test), off-task answers of a choice policy | 24 |" in portfolio
    assert report_portfolio.OPINION_OFF_TASK in portfolio and report_portfolio.OPINION_ONLY_BASE not in portfolio
    base = write_eval(tmp_path / "eval" / "base_gun" / "test", "base", None, None, opinion=summary)
    portfolio = report_portfolio.render_portfolio([base], tmp_path / "p.md")
    assert "| base (test) | 24 |" in portfolio and report_portfolio.OPINION_ONLY_BASE in portfolio


def test_index_opinion_shows_change_correlation_and_train_mean_change(tmp_path):
    evaluation = write_eval(tmp_path / "eval" / "grail_gun" / "test", "grail", None,
                            opinion_records(30, parsed=lambda i: 0.45 if i % 2 else 0.2))
    op = json.loads((evaluation / "metrics.json").read_text())["tasks"]["opinion"]
    text = _report(tmp_path, evaluation)
    fmt = report_model_report.fmt_ci
    assert fmt(op["overall"]["change_correlation"]) in text and "change correlation [95% CI]" in text
    assert "| train-mean change (before +0.100, learned on train) | 30 | " \
           f"{fmt(op['overall']['baselines']['train_mean_change']['mae'])} |" in text
    assert "majority direction of these rows" not in text
    assert "| majority direction (increase, learned on train) |" in text
    portfolio = report_portfolio.render_portfolio([evaluation], tmp_path / "p.md")
    assert "baseline: train-mean change (learned on train)" in portfolio


def test_portfolio_leads_with_likelihood_and_stars_only_a_clearing_model(tmp_path):
    records = scored_records()
    dirs = [
        write_eval(tmp_path / "base_gun" / "test", "base", constant_records(60), None,
                   likelihood=likelihood_block(records, uniform, valid_mass=1e-6)),
        write_eval(tmp_path / "grail_gun" / "test", "grail", perfect_records(60), None,
                   likelihood=likelihood_block(records, peaked(0.85))),
    ]
    text = report_portfolio.render_portfolio(dirs, tmp_path / "p.md")
    study = text.split("### all studies (study1 only)")[1]
    assert study.index("Next-video choice likelihood") < study.index("Next-video choice, generation on a small sample")
    grail = json.loads((dirs[1] / "metrics.json").read_text())["likelihood"]["next_video"]["overall"]["policy"]
    base = json.loads((dirs[0] / "metrics.json").read_text())["likelihood"]["next_video"]["overall"]["policy"]
    fmt = report_model_report.fmt_ci
    assert f"| grail (test) | 60 | **★ {fmt(grail['nll'])}** | **★ {fmt(grail['accuracy_at_1'], percent=True)}** |" in study
    assert f"| base (test) | 60 | {fmt(base['nll'])} | {fmt(base['accuracy_at_1'], percent=True)} |" in study
    assert "1.0e-06 **collapsed**" in study and "0.900 |" in study
    assert "| baseline: fitted choice model" in study and "| baseline: uniform 1/n" in study


def test_the_oracle_is_shown_as_the_ceiling_never_as_a_baseline_to_clear(tmp_path):
    records = scored_records()
    lik = likelihood_block(records, peaked(0.7), oracle=peaked(0.95))
    overall = lik["overall"]
    # Counted as a baseline, the oracle would take the policy's ★ away; it is the ceiling instead.
    assert not choice_metrics.clears_best_baseline(overall, "policy", [*overall.keys()], "nll")
    assert report_model_report.baselines_of(overall) == ["uniform", "position_prior", "choice_model"]
    evaluation = write_eval(tmp_path / "eval" / "grail_gun" / "test", "grail", None, None, likelihood=lik)
    text = _likelihood_part(_report(tmp_path, evaluation))
    fmt = report_model_report.fmt_ci
    share = overall["policy"]["recovered_share"]
    assert 0 < share["value"] < 1
    assert f"| **grail** | **★ {fmt(overall['policy']['nll'])}** |" in text
    assert f"**{fmt(share)}** |" in text and "recovered share of the oracle's gain |" in text
    assert f"| oracle (the demo's ceiling) | {fmt(overall['oracle']['nll'])} |" in text
    assert text.rstrip().count("1 (ceiling)") == 1 and "2 dropped: slate not displayed" in text
    assert "NLL oracle (the demo's ceiling)" in text  # the breakdowns carry the ceiling too

    portfolio = report_portfolio.render_portfolio([evaluation], tmp_path / "p.md")
    study = portfolio.split("### all studies (study1 only)")[1]
    assert f"| grail (test) | 60 | **★ {fmt(overall['policy']['nll'])}** |" in study
    assert f"| {fmt(share)} |" in study
    assert f"| ceiling: oracle (the demo's ceiling) | 60 | {fmt(overall['oracle']['nll'])} |" in study
    assert "baseline: oracle" not in study and "stance-match probability 0.70" in study


def test_without_an_oracle_no_recovered_share_is_shown(tmp_path):
    evaluation = write_eval(tmp_path / "eval" / "grail_gun" / "test", "grail", None, None,
                            likelihood=likelihood_block(scored_records(), peaked(0.7)))
    assert "recovered share" not in _report(tmp_path, evaluation)
    portfolio = report_portfolio.render_portfolio([evaluation], tmp_path / "p.md")
    assert "recovered share of the oracle's gain" not in portfolio and "ceiling:" not in portfolio


# --------------------------------------------------------------------------- the portfolio's summary
def _evaluation(model, lik):
    """An evaluation as `portfolio_context` reads it: the likelihood block only."""
    return {"model": model, "split": "test", "tasks": {}, "likelihood": {"next_video": lik}}


def _summary(*evaluations):
    section = report_portfolio.portfolio_context(list(evaluations))["sections"][0]
    return section["summary"]["likelihood"], section["summary"]["sentence"]


def _first_table(text):
    """The first Markdown table of `text`: its lines, header first."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_portfolio_opens_with_one_summary_table_and_its_sentence(tmp_path):
    records = scored_records()
    dirs = [write_eval(tmp_path / "base_gun" / "test", "base", None, None,
                       likelihood=likelihood_block(records, uniform, oracle=peaked(0.95))),
            write_eval(tmp_path / "grail_gun" / "test", "grail", None, None,
                       likelihood=likelihood_block(records, peaked(0.85), oracle=peaked(0.95)))]
    text = report_portfolio.render_portfolio(dirs, tmp_path / "p.md")
    table = _first_table(text)
    assert table[0] == "| issue | predictor | rows | NLL (nats) [95% CI] | accuracy@1 [95% CI] |"
    # Before the explanatory paragraphs, the evaluations table and every detailed section.
    assert text.index(table[0]) < text.index("Each study leads") < text.index("| model | split | folder |")
    assert text.index(table[0]) < text.index("\n## gun control")
    fmt = report_model_report.fmt_ci
    overall = {d.parent.name: json.loads((d / "metrics.json").read_text())["likelihood"]["next_video"]["overall"]
               for d in dirs}
    grail, base = overall["grail_gun"], overall["base_gun"]
    body = "\n".join(table[2:])
    assert f"| gun control | grail (test) | 60 | **★ {fmt(grail['policy']['nll'])}** | " \
           f"**★ {fmt(grail['policy']['accuracy_at_1'], percent=True)}** |" in body
    assert f"| gun control | base (test) | 60 | {fmt(base['policy']['nll'])} |" in body
    for label in ("uniform 1/n", "position prior (train shares per n)", "fitted choice model"):
        assert f"| gun control | baseline: {label}" in body
    assert f"| gun control | ceiling: oracle (the demo's ceiling) | 60 | {fmt(grail['oracle']['nll'])} |" in body
    assert len(table) == 2 + 2 + 3 + 1  # header, rule, two models, three baselines, the ceiling
    # Under the table, the one sentence of the issue, composed in portfolio.py.
    _, sentence = _summary(*[report_model_report.load_metrics(d) for d in dirs])
    after = text.split("\n".join(table), 1)[1]
    assert after.startswith(f"\n\n**gun control:** {sentence}\n")
    assert sentence.startswith(f"grail (NLL {fmt(grail['policy']['nll'])}) clears the best baseline")

    # Without an oracle the summary has no ceiling row.
    plain = write_eval(tmp_path / "sft_gun" / "test", "sft", None, None, likelihood=likelihood_block(records, uniform))
    table = _first_table(report_portfolio.render_portfolio([plain], tmp_path / "p2.md"))
    assert len(table) == 2 + 1 + 3 and "ceiling" not in "\n".join(table)


def test_summary_sentence_names_a_starred_model_and_the_baseline_it_clears():
    records = scored_records()
    lik = likelihood_block(records, peaked(0.85), oracle=peaked(0.95))
    table, sentence = _summary(_evaluation("grail", lik), _evaluation("base", likelihood_block(records, uniform)))
    fmt = report_model_report.fmt_ci
    best = next(b for b in table["baselines"] if "nll" in b["best"])
    assert best["name"] == "uniform"  # these fixtures' position prior misses the gold distribution
    overall = lik["overall"]
    assert sentence == (
        f"grail (NLL {fmt(overall['policy']['nll'])}) clears the best baseline (uniform 1/n, NLL {fmt(best['nll'])}); "
        f"on accuracy@1, grail clears the best baseline (position prior, "
        f"{fmt(overall['position_prior']['accuracy_at_1'], percent=True)}); "
        f"the oracle's {report_model_report.fmt_num(overall['oracle']['nll']['value'])} is the ceiling.")


def test_summary_sentence_when_no_model_clears_and_the_best_reaches_the_prior():
    records = scored_records()
    prior = lambda r: PRIOR[r["n_options"]]  # noqa: E731 - the position prior itself, as a policy
    strong = peaked(0.9)
    sft = likelihood_block(records, prior, choice_model=strong, oracle=peaked(0.95))
    base = likelihood_block(records, peaked(0.2), choice_model=strong, oracle=peaked(0.95))
    table, sentence = _summary(_evaluation("base", base), _evaluation("sft", sft))
    fmt = report_model_report.fmt_ci
    overall = sft["overall"]
    assert not any(row["star"]["nll"] for row in table["rows"])
    assert overall["policy"]["nll"]["ci_low"] <= overall["position_prior"]["nll"]["value"]
    assert sentence == (
        f"No model clears the best baseline (fitted choice model, NLL {fmt(overall['choice_model']['nll'])}); "
        f"the best model by NLL, sft, has {fmt(overall['policy']['nll'])}, whose interval reaches the position "
        f"prior's {fmt(overall['position_prior']['nll'])}; "
        f"the oracle's {report_model_report.fmt_num(overall['oracle']['nll']['value'])} is the ceiling.")


def test_summary_sentence_when_every_model_is_worse_than_the_prior():
    records = scored_records()
    worse = {name: likelihood_block(records, peaked(share)) for name, share in (("sft", 0.15), ("grpo", 0.1))}
    table, sentence = _summary(*(_evaluation(name, lik) for name, lik in worse.items()))
    fmt = report_model_report.fmt_ci
    overall = worse["sft"]["overall"]
    for lik in worse.values():
        assert lik["overall"]["policy"]["nll"]["ci_low"] > overall["position_prior"]["nll"]["ci_high"]
    assert sentence == (
        f"No model clears the best baseline (uniform 1/n, NLL {fmt(overall['uniform']['nll'])}); the best model "
        f"by NLL, sft, has {fmt(overall['policy']['nll'])}, worse than the position prior's "
        f"{fmt(overall['position_prior']['nll'])}.")


@pytest.mark.parametrize("low, value, high, relation", [
    (0.70, 0.75, 0.79, "better than the position prior's"),    # wholly below the prior's interval
    (0.80, 0.88, 0.95, "whose interval reaches the position prior's"),  # lower bound at or below its value
    (0.86, 0.92, 0.99, "whose interval overlaps but does not reach the position prior's"),
    (0.91, 0.97, 1.05, "worse than the position prior's"),    # wholly above the prior's interval
])
def test_summary_sentence_places_the_best_model_against_the_prior_by_its_interval(low, value, high, relation):
    stat = lambda v, lo, hi: {"value": v, "ci_low": lo, "ci_high": hi}  # noqa: E731
    accuracy = stat(0.3, 0.2, 0.4)
    table = {"n": 50, "oracle": None, "rows": [
        {"model": "sft", "split": "test", "nll": stat(value, low, high), "accuracy_at_1": accuracy,
         "star": {"nll": False, "accuracy_at_1": False}}],
        "baselines": [
            {"name": "uniform", "nll": stat(1.2, 1.2, 1.2), "accuracy_at_1": accuracy, "best": []},
            {"name": "position_prior", "nll": stat(0.85, 0.80, 0.90), "accuracy_at_1": accuracy, "best": []},
            {"name": "choice_model", "nll": stat(0.60, 0.55, 0.65), "accuracy_at_1": accuracy,
             "best": ["nll", "accuracy_at_1"]}]}
    sentence = report_portfolio.summary_sentence(table)
    assert sentence.startswith("No model clears the best baseline (fitted choice model, NLL 0.600 [0.550, 0.650]); "
                               f"the only model, sft, has {value:.3f} [{low:.3f}, {high:.3f}], ")
    assert sentence.endswith(f", {relation} 0.850 [0.800, 0.900].")
    assert report_portfolio.summary_sentence(None).startswith("Not scored")


def test_a_one_study_issue_prints_its_tables_once_and_a_two_study_issue_each(tmp_path):
    evaluation = write_eval(tmp_path / "grail_gun" / "test", "grail", perfect_records(8), None,
                            likelihood=likelihood_block(scored_records(), peaked(0.7)))
    text = report_portfolio.render_portfolio([evaluation], tmp_path / "p.md")
    assert text.count("Next-video choice likelihood (every scored row):") == 1
    assert text.count("Next-video choice, generation on a small sample") == 1
    assert "### all studies (study1 only)" in text and "### study1" not in text
    # Two studies: the "all" tables and each study's, as before.
    records = [_nv(i, 1, 3, 1, study="study2" if i % 2 else "study3") for i in range(8)]
    for r in records:
        r["issue"] = "minimum_wage"
    wage = write_eval(tmp_path / "base_wage" / "test", "base", records, None)
    text = report_portfolio.render_portfolio([wage], tmp_path / "p2.md")
    assert "### all studies\n" in text and "### study2\n" in text and "### study3\n" in text
    assert text.count("Next-video choice, generation on a small sample") == 3


def test_portfolio_opinion_shows_the_untrained_base_beside_the_baselines(tmp_path):
    dirs = [write_eval(tmp_path / "base_gun" / "test", "base", constant_records(20), opinion_records(30)),
            write_eval(tmp_path / "grail_gun" / "test", "grail", perfect_records(20), None)]  # next_video only
    text = report_portfolio.render_portfolio(dirs, tmp_path / "p.md")
    opinion = text.split("Opinion, generation on a small sample")[1]
    assert report_portfolio.OPINION_ONLY_BASE in opinion
    assert "| base (test) | 0 of 30 |" in opinion and "grail" not in opinion and "off-task" not in text
    assert "| baseline: no change |" in opinion
    # A trained model's opinion answers, when asked for, stay, labelled as off-task.
    dirs.append(write_eval(tmp_path / "sft_gun" / "test", "sft", perfect_records(20),
                           opinion_records(30, parsed=lambda i: 0.4)))
    opinion = report_portfolio.render_portfolio(dirs, tmp_path / "p.md").split("Opinion, generation on a small")[1]
    assert report_portfolio.OPINION_OFF_TASK in opinion and report_portfolio.OPINION_ONLY_BASE not in opinion
    assert "| sft (test), off-task answers of a choice policy | 30 of 30 |" in opinion
    assert opinion.index("| base (test) |") < opinion.index("| sft (test)")
    # No evaluation with opinion figures: said in one line.
    text = report_portfolio.render_portfolio(dirs[1:2], tmp_path / "p.md")
    assert f"Opinion, generation on a small sample: {report_portfolio.OPINION_NONE}" in text


def test_trained_model_report_without_opinion_says_so_in_one_line(tmp_path):
    evaluation = write_eval(tmp_path / "eval" / "sft_gun" / "test", "sft", perfect_records(8), None,
                            likelihood=likelihood_block(scored_records(20), peaked(0.6)))
    assert list(json.loads((evaluation / "metrics.json").read_text())["tasks"]) == ["next_video"]
    text = _report(tmp_path, evaluation, model="sft")
    assert f"### Opinion\n\n{report_model_report.OPINION_NOT_TRAINED}\n" in text
    assert report_model_report.OPINION_NOT_TRAINED == (
        "Opinion is not evaluated for trained models: no trainer is trained for opinion (the base model's report "
        "and the portfolio show the opinion baselines; `evaluate.trained_model_tasks` adds it).")
    assert "post-study index" not in text and "Not evaluated." not in text
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    # The untrained base model without the task keeps the plain "Not evaluated.".
    base = write_eval(tmp_path / "eval" / "base_gun" / "test", "base", perfect_records(8), None)
    assert report_model_report.OPINION_NOT_TRAINED not in _report(tmp_path, base, model="base")
