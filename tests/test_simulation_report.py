"""`grail-sim report simulation`: the comparison's numbers from hand-built summaries with known
values, the page and its figure, and the errors a bad input raises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from grail_sim import cli, io
from grail_sim.errors import ReportError
from grail_sim.report import simulation_report

OUTCOMES = ["seed_stance_share", "own_leaning_share", "mean_position"]
STUDY_ARMS = ["pro_31", "pro_22", "anti_31", "anti_22"]
COUNTERFACTUAL_ARMS = ["pro_40", "anti_40"]
# The observed mix and seed effects, one per outcome, in OUTCOMES order.
OBSERVED = {"mix": [0.10, 0.00, 0.20], "seed": [-0.10, -0.05, 0.00]}


def stat(value, half_width=0.01):
    return {"value": value, "ci_low": None if value is None else value - half_width,
            "ci_high": None if value is None else value + half_width}


def summary(predictor, effects, *, issue="gun_control", split="test", half_width=0.01, valid_mass=None):
    """A simulate summary.json: `effects` maps an effect to its three outcome values."""
    arms = STUDY_ARMS if predictor == "observed" else STUDY_ARMS + COUNTERFACTUAL_ARMS
    settings = {"name": predictor}
    if valid_mass is not None:
        settings["mean_valid_mass"] = valid_mass
    return {
        "predictor": predictor, "issue": issue, "split": split, "outcomes": OUTCOMES,
        "participants": 10, "sessions": 10 if predictor == "observed" else 120,
        "replicates": 1 if predictor == "observed" else 2, "confidence": 0.95, "stance_source": "hand-made",
        "counterfactual": {"mix": "40", "same_stance_share": 1.0}, "predictor_settings": settings,
        "definitions": {"mix": ["pro_31 - pro_22", "anti_31 - anti_22"],
                        "seed": ["pro_31 - anti_31", "pro_22 - anti_22"],
                        **({} if predictor == "observed"
                           else {"counterfactual": ["pro_40 - pro_31", "anti_40 - anti_31"]})},
        "arms": {arm: {o: stat(0.5 + 0.01 * k) for k, o in enumerate(OUTCOMES)} for arm in arms},
        "effects": {effect: {o: stat(v, half_width) for o, v in zip(OUTCOMES, values)}
                    for effect, values in effects.items()},
    }


def shifted(values, by):
    return {effect: [v + by for v in vs] for effect, vs in values.items()}


def write(tmp_path: Path, data: dict, name: str | None = None) -> Path:
    folder = tmp_path / (name or f"{data['predictor']}_gun")
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(data), encoding="utf-8")
    return folder


def _row(comparison, predictor):
    return next(row for row in comparison["predictors"] if row["predictor"] == predictor)


# --------------------------------------------------------------------------- compare
def test_compare_errors_mae_correlation_and_reduction_vs_prior():
    prior = summary("position_prior", {**shifted(OBSERVED, 0.04), "counterfactual": [0.3, 0.0, -0.1]})
    model = summary("grail", {**shifted(OBSERVED, 0.01), "counterfactual": [0.2, 0.1, 0.0]}, valid_mass=0.9)
    comparison = simulation_report.compare([summary("observed", OBSERVED), model, prior])

    # The prior first whatever the input order; observed is the reference, never a row.
    assert [r["predictor"] for r in comparison["predictors"]] == ["position_prior", "grail"]
    assert comparison["compared"] == [(e, o) for e in ("mix", "seed") for o in OUTCOMES]
    grail = _row(comparison, "grail")
    assert [c["error"] for c in grail["comparisons"]] == pytest.approx([0.01] * 6)
    assert grail["mae"] == pytest.approx(0.01)
    assert grail["correlation"] == pytest.approx(1.0)  # a constant shift keeps r at 1
    assert grail["reduction_vs_prior"] == pytest.approx(1 - 0.01 / 0.04)
    assert _row(comparison, "position_prior")["reduction_vs_prior"] == pytest.approx(0.0)
    # Intervals of half-width 0.01 overlap at a 0.01 shift, not at 0.04 (over both half-widths).
    assert all(c["overlap"] for c in grail["comparisons"])
    assert not any(c["overlap"] for c in _row(comparison, "position_prior")["comparisons"])
    # No observed counterfactual: reported only.
    assert grail["counterfactual"]["seed_stance_share"]["value"] == pytest.approx(0.2)
    assert grail["mean_valid_mass"] == pytest.approx(0.9) and not grail["collapsed"]
    assert comparison["oracle"] is False and grail["mae_vs_oracle"] is None


def test_compare_scores_against_the_oracle_on_the_demo():
    truth = {**OBSERVED, "counterfactual": [0.3, 0.0, -0.1]}
    oracle = summary("oracle", truth)
    prior = summary("position_prior", shifted(truth, 0.06))
    model = summary("grail", shifted(truth, -0.02), valid_mass=0.2)
    comparison = simulation_report.compare([summary("observed", shifted(OBSERVED, 0.5)), oracle, model, prior])

    assert [r["predictor"] for r in comparison["predictors"]] == ["position_prior", "grail", "oracle"]
    assert len(comparison["oracle_compared"]) == 9  # the counterfactual's truth is known on the demo
    grail = _row(comparison, "grail")
    assert grail["mae_vs_oracle"] == pytest.approx(0.02)
    assert grail["reduction_vs_prior_vs_oracle"] == pytest.approx(1 - 0.02 / 0.06)
    assert _row(comparison, "oracle")["mae_vs_oracle"] == pytest.approx(0.0)
    assert grail["collapsed"]  # mean valid mass 0.2 < VALID_MASS_WARNING
    # Against observed (everything shifted by 0.5) the errors are large but perfectly correlated.
    assert grail["mae"] == pytest.approx(0.52)
    assert grail["correlation"] == pytest.approx(1.0)


def test_correlation_and_reduction_are_none_when_undefined():
    flat = summary("grail", {"mix": [0.1, 0.1, 0.1], "seed": [0.1, 0.1, 0.1]})
    sparse = summary("sft", {"mix": [0.1, None, None], "seed": [None, None, 0.3]})
    comparison = simulation_report.compare([summary("observed", OBSERVED), flat, sparse])
    assert _row(comparison, "grail")["correlation"] is None  # constant simulated effects
    sft = _row(comparison, "sft")
    assert sft["correlation"] is None  # only 2 defined pairs
    assert sft["mae"] == pytest.approx((0.0 + 0.3) / 2)
    assert [c["error"] for c in sft["comparisons"]].count(None) == 4
    assert sft["reduction_vs_prior"] is None  # no position prior given

    exact = simulation_report.compare([summary("observed", OBSERVED), summary("position_prior", OBSERVED),
                                       summary("grail", shifted(OBSERVED, 0.01))])
    assert _row(exact, "grail")["reduction_vs_prior"] is None  # the prior's MAE is 0


def test_pearson_matches_its_definition():
    xs, ys = [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0]
    assert simulation_report.pearson(xs, ys) == pytest.approx(0.6)
    assert simulation_report.pearson([1.0, None, 3.0, 4.0], [1.0, 5.0, 2.0, None]) is None


# --------------------------------------------------------------------------- the page
def test_render_writes_the_tables_and_the_figure(tmp_path):
    truth = {**OBSERVED, "counterfactual": [0.3, 0.0, -0.1]}
    dirs = [write(tmp_path, summary("observed", OBSERVED)),
            write(tmp_path, summary("position_prior", shifted(truth, 0.04))),
            write(tmp_path, summary("grail", shifted(truth, 0.01), valid_mass=0.3)),
            write(tmp_path, summary("oracle", truth))]
    config = tmp_path / "config.yaml"
    config.write_text("report: {}\n", encoding="utf-8")
    out, figures = tmp_path / "reports" / "simulation_gun.md", tmp_path / "reports" / "figures" / "simulation_gun"
    text = simulation_report.render_simulation_report(dirs, out, figures, config=config)

    assert out.read_text(encoding="utf-8") == text
    assert text.startswith("# In-silico experiment: gun control")
    assert (figures / "simulation_gun_effects.png").stat().st_size > 0
    assert "](figures/simulation_gun/simulation_gun_effects.png)" in text
    assert "| effect | outcome | observed | position_prior | grail (**collapsed**) | oracle |" in text
    assert "| mix | seed_stance_share | 0.100 [0.090, 0.110] | 0.140 [0.130, 0.150] |" in text
    assert "| counterfactual | seed_stance_share | not run |" in text  # no participant saw that arm
    assert "| pro_40 | mean_position | not run |" in text
    # Table 2: MAE, r, reduction vs the prior and, on the demo, the same against the oracle.
    assert "| grail (**collapsed**) | 120 (2) | 0.010 | 1.00 | 75.0% | 6 of 6 | 0.010 | 75.0% | 0.300 |" in text
    assert "| oracle | 120 (2) |" in text and "the truth | the truth | n/a |" in text
    assert "How to read this" in text and "no observed value" in text
    assert f"Config `{config}` sha256 `{io.file_sha256(config)}`" in text


def test_the_cli_renders_a_simulation_report(tmp_path):
    dirs = [write(tmp_path, summary("observed", OBSERVED)), write(tmp_path, summary("position_prior", OBSERVED))]
    out = tmp_path / "simulation_gun.md"
    code = cli.main(["report", "simulation", "--eval", *map(str, dirs), "--out", str(out),
                     "--figures", str(tmp_path / "figures")])
    assert code == 0
    assert "| position_prior | 120 (2) | 0.000 |" in out.read_text(encoding="utf-8")
    assert (tmp_path / "figures" / "simulation_gun_effects.png").is_file()


# --------------------------------------------------------------------------- errors
def test_a_missing_summary_fails_naming_the_file(tmp_path):
    empty = tmp_path / "grail_gun"
    empty.mkdir()
    with pytest.raises(ReportError, match=f"{empty / 'summary.json'} does not exist"):
        simulation_report.render_simulation_report([write(tmp_path, summary("observed", OBSERVED)), empty],
                                                   tmp_path / "out.md", tmp_path / "figures")


def test_a_malformed_summary_fails_naming_the_file_and_key(tmp_path):
    broken = summary("grail", OBSERVED)
    del broken["effects"]
    folder = write(tmp_path, broken)
    with pytest.raises(ReportError, match=rf"{folder / 'summary.json'} lacks key\(s\) \['effects'\]"):
        simulation_report.load_simulation(folder)
    bad_shape = write(tmp_path, {**summary("sft", OBSERVED), "arms": {"pro_31": [0.5]}})
    with pytest.raises(ReportError, match=rf"{bad_shape / 'summary.json'}: `arms`"):
        simulation_report.load_simulation(bad_shape)


def test_summaries_of_different_issues_fail_naming_both(tmp_path):
    gun = write(tmp_path, summary("observed", OBSERVED))
    wage = write(tmp_path, summary("grail", OBSERVED, issue="minimum_wage"), name="grail_wage")
    with pytest.raises(ReportError) as raised:
        simulation_report.render_simulation_report([gun, wage], tmp_path / "out.md", tmp_path / "figures")
    message = str(raised.value)
    assert str(gun / "summary.json") in message and str(wage / "summary.json") in message
    assert "'gun_control'" in message and "'minimum_wage'" in message
    assert not (tmp_path / "out.md").exists()


def test_a_predictor_given_twice_fails_naming_both(tmp_path):
    first = write(tmp_path, summary("grail", OBSERVED))
    second = write(tmp_path, summary("grail", OBSERVED), name="grail_again")
    with pytest.raises(ReportError, match="two simulations of predictor 'grail'.*grail_again"):
        simulation_report.render_simulation_report([first, second], tmp_path / "out.md", tmp_path / "figures")


def test_arms_read_in_the_study_order():
    assert simulation_report.arm_order(["anti_22", "pro_40", "anti_31", "pro_22", "anti_40", "pro_31"]) == [
        "pro_31", "anti_31", "pro_22", "anti_22", "pro_40", "anti_40"]
