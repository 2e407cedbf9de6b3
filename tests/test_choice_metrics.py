"""Likelihood, calibration and distribution scores of probability vectors, on rows computed by hand."""

from __future__ import annotations

import json
import math

import pytest

from grail_sim.evaluation import choice_metrics as cm


def row(gold, n_options, participant="", row_id=None, **keys):
    return {"id": row_id or f"r{gold}{n_options}{participant}", "gold": gold, "n_options": n_options,
            "participant_id": participant, **keys}


# Three rows: gold 1 of 3, gold 3 of 3, gold 2 of 2.
RECORDS = [row(1, 3, "a", "1"), row(3, 3, "b", "2"), row(2, 2, "c", "3")]
POLICY = [[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.6, 0.4]]
UNIFORM = [[1 / 3] * 3, [1 / 3] * 3, [0.5, 0.5]]


def overall(records, sources, **options):
    options.setdefault("samples", 0)
    return cm.distribution_metrics(records, sources, **options)["overall"]


def test_every_figure_on_three_rows_by_hand():
    figures = overall(RECORDS, {"policy": POLICY, "uniform": UNIFORM}, reference="uniform")["policy"]
    nll = (math.log(2) + math.log(10 / 3) + math.log(2.5)) / 3  # -ln 0.5, -ln 0.3, -ln 0.4
    assert figures["nll"]["value"] == pytest.approx(nll)
    assert figures["pseudo_r2"]["value"] == pytest.approx(1 - 3 * nll / (2 * math.log(3) + math.log(2)))
    # (0.25 + 0.09 + 0.04) + (0.04 + 0.25 + 0.49) + (0.36 + 0.36)
    assert figures["brier"]["value"] == pytest.approx(1.88 / 3)
    assert figures["accuracy_at_1"]["value"] == pytest.approx(1 / 3)  # only row 1's argmax is gold
    assert figures["accuracy_at_2"]["value"] == pytest.approx(1.0)
    # Rows 1 and 2 share the 0.5 bin and cancel (+0.5, -0.5); row 3 sits in the 0.6 bin, wrong: 0.6 / 3.
    assert figures["ece"]["value"] == pytest.approx(0.2)
    # Mean predicted (1.3, 1.2, 0.5) / 3 against gold shares (1, 1, 1) / 3: TV = ½ (0.3 + 0.2 + 0.5) / 3.
    assert figures["total_variation"]["value"] == pytest.approx(1 / 6)
    assert figures["mean_distribution"] == pytest.approx({"1": 1.3 / 3, "2": 1.2 / 3, "3": 0.5 / 3})
    assert figures["gold_distribution"] == pytest.approx({"1": 1 / 3, "2": 1 / 3, "3": 1 / 3})
    bins = {tuple(b["bin"]): b for b in figures["reliability"] if b["count"]}
    assert bins[(0.5, 0.6)] == {"bin": [0.5, 0.6], "count": 2, "confidence": 0.5, "accuracy": 0.5}
    assert bins[(0.6, 0.7)]["count"] == 1 and bins[(0.6, 0.7)]["accuracy"] == 0.0
    assert len(figures["reliability"]) == 10 and figures["n"] == 3 and figures["n_participants"] == 3


def test_tied_options_share_a_hit_and_zero_is_clipped():
    records = [row(2, 3, "a", "1"), row(3, 3, "b", "2")]
    figures = overall(records, {"p": [[0.4, 0.4, 0.2], [1.0, 0.0, 0.0]]}, reference=None)["p"]
    # Row 1: options 1 and 2 tie at the top, so gold (2) is the top pick half the time; row 2 misses.
    assert figures["accuracy_at_1"]["value"] == 0.25
    # Row 1: both tied options fit in the top 2; row 2: gold (3) ties with option 2 for the second slot.
    assert figures["accuracy_at_2"]["value"] == 0.75
    assert figures["nll"]["value"] == pytest.approx((-math.log(0.4) - math.log(1e-12)) / 2)
    assert figures["pseudo_r2"]["value"] is None  # no reference given


def test_reference_scores_zero_and_a_perfect_model_one():
    perfect = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0]]
    figures = overall(RECORDS, {"position_prior": UNIFORM, "perfect": perfect}, samples=200)
    ref, best = figures["position_prior"], figures["perfect"]
    assert ref["pseudo_r2"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0, "n": 3}
    assert best["pseudo_r2"]["value"] == 1.0 and best["nll"]["value"] == 0.0
    assert best["brier"]["value"] == 0.0 and best["ece"]["value"] == 0.0
    assert best["accuracy_at_1"]["value"] == 1.0 and best["total_variation"]["value"] == 0.0


def test_a_participant_with_many_rows_widens_the_interval():
    # Half the rows get p(gold) = 0.9, half 0.1. As 40 separate participants the rows average out;
    # as 4 participants whose rows all agree, only 4 independent draws remain.
    probs = [[0.9, 0.1] if i < 20 else [0.1, 0.9] for i in range(40)]
    alone = [row(1, 2, f"p{i}", str(i)) for i in range(40)]
    clustered = [row(1, 2, f"p{i // 10}", str(i)) for i in range(40)]
    width = {}
    for name, records in (("alone", alone), ("clustered", clustered)):
        nll = overall(records, {"position_prior": probs}, samples=500)["position_prior"]["nll"]
        assert nll["value"] == pytest.approx((-math.log(0.9) - math.log(0.1)) / 2)
        width[name] = nll["ci_high"] - nll["ci_low"]
    assert width["clustered"] > 1.5 * width["alone"]


def test_rows_without_participant_id_are_their_own_participants():
    records = [row(1, 2, "", "x"), row(1, 2, "", "y"), row(1, 2, "z", "w")]
    result = cm.distribution_metrics(records, {"position_prior": [[0.5, 0.5]] * 3}, samples=0)
    assert result["n_participants"] == 3


def test_breakdowns_have_the_right_keys_and_counts():
    records = [
        row(1, 2, "a", "1", participant_study="study1", treatment_arm="pro_31", viewer_leaning="liberal"),
        row(2, 3, "a", "2", participant_study="study1", treatment_arm="pro_31", viewer_leaning="liberal"),
        row(3, 3, "b", "3", participant_study="study2", treatment_arm=None),
        row(1, 3, "c", "4", participant_study="study2", viewer_leaning="conservative"),
    ]
    sources = {"position_prior": [[0.5, 0.5]] + [[0.2, 0.3, 0.5]] * 3, "uniform": [[0.5, 0.5]] + [[1 / 3] * 3] * 3}
    result = cm.distribution_metrics(records, sources, samples=50)
    assert result["n_rows"] == result["n_eligible"] == 4 and result["n_participants"] == 3
    assert set(result["by_study"]) == {"study1", "study2"}
    assert set(result["by_treatment_arm"]) == {"pro_31", "unknown"}
    assert set(result["by_viewer_leaning"]) == {"liberal", "conservative", "unknown"}
    assert list(result["by_n_options"]) == ["2", "3"]
    assert result["by_treatment_arm"]["unknown"]["uniform"]["n"] == 2
    assert result["by_study"]["study1"]["uniform"]["n_participants"] == 1
    assert set(result["overall"]) == set(result["by_study"]["study2"]) == {"position_prior", "uniform"}
    two = result["by_n_options"]["2"]["uniform"]
    assert two["mean_distribution"] == {"1": 0.5, "2": 0.5}  # positions beyond the group's slates drop
    assert two["accuracy_at_1"]["value"] == 0.5  # a 50/50 tie: half a hit, the random 1/n rule
    json.dumps(result, allow_nan=False)


def test_groups_are_paired_same_source_same_interval():
    records = [row(1 + i % 3, 3, f"p{i % 7}", str(i), participant_study=f"s{i % 2}") for i in range(30)]
    probs = [[0.6, 0.3, 0.1]] * 30
    result = cm.distribution_metrics(records, {"position_prior": probs, "copy": [list(p) for p in probs]},
                                     samples=100, seed=3)
    for group in [result["overall"], *result["by_study"].values()]:
        assert group["copy"]["nll"] == group["position_prior"]["nll"]
        assert group["copy"]["pseudo_r2"]["ci_low"] == group["copy"]["pseudo_r2"]["ci_high"] == 0.0


def test_empty_input_and_undefined_ratios_give_none_never_nan():
    result = cm.distribution_metrics([], {"position_prior": [], "policy": []}, samples=50)
    figures = result["overall"]["policy"]
    assert figures["nll"] == {"value": None, "ci_low": None, "ci_high": None, "n": 0}
    assert figures["mean_distribution"] == {} and all(b["count"] == 0 for b in figures["reliability"])
    assert result["by_study"] == {} and result["n_participants"] == 0
    json.dumps(result, allow_nan=False)
    # A perfect reference has total NLL 0: pseudo-R² is undefined, so None.
    perfect = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0]]
    undefined = overall(RECORDS, {"position_prior": perfect, "uniform": UNIFORM}, samples=20)
    assert undefined["uniform"]["pseudo_r2"]["value"] is None
    json.dumps(undefined, allow_nan=False)


def test_gold_outside_the_slate_is_dropped_from_every_source():
    records = [*RECORDS, row(4, 3, "d", "4")]
    result = cm.distribution_metrics(records, {"position_prior": [*UNIFORM, [1 / 3] * 3]}, samples=0)
    assert result["dropped"] == {"gold_outside_slate": 1} and result["overall"]["position_prior"]["n"] == 3


def test_vectors_that_are_not_distributions_are_refused():
    with pytest.raises(ValueError, match="'policy', row 2: 3 probabilities for 2 options"):
        overall(RECORDS, {"position_prior": UNIFORM, "policy": [*POLICY[:2], [0.2, 0.3, 0.5]]})
    with pytest.raises(ValueError, match="not a probability vector"):
        overall(RECORDS, {"position_prior": UNIFORM, "policy": [*POLICY[:2], [0.6, 0.6]]})
    with pytest.raises(ValueError, match="2 vectors for 3 records"):
        overall(RECORDS, {"position_prior": UNIFORM[:2]})
    with pytest.raises(ValueError, match="reference 'position_prior'"):
        overall(RECORDS, {"uniform": UNIFORM})
    # float32 rounding is tolerated and renormalised
    assert overall(RECORDS, {"position_prior": [[0.5, 0.3, 0.20001], *UNIFORM[1:]]})["position_prior"]["n"] == 3


def test_clears_best_baseline_needs_the_best_baselines_interval_cleared():
    def fig(value, low, high):
        return {"value": value, "ci_low": low, "ci_high": high, "n": 100}

    figures = {"policy": {"nll": fig(0.55, 0.50, 0.60), "accuracy_at_1": fig(0.6, 0.55, 0.65)},
               "uniform": {"nll": fig(1.05, 1.00, 1.10), "accuracy_at_1": fig(0.3, 0.25, 0.35)},
               "position_prior": {"nll": fig(0.62, 0.58, 0.70), "accuracy_at_1": fig(0.4, 0.35, 0.45)},
               "choice_model": {"nll": fig(None, None, None)}}
    baselines = ["uniform", "position_prior", "choice_model"]
    # The prior has the best (lowest) NLL and overlaps the policy, so no star, though uniform is cleared.
    assert not cm.clears_best_baseline(figures, "policy", baselines, "nll")
    assert cm.clears_best_baseline(figures, "policy", ["uniform"], "nll")
    assert cm.clears_best_baseline(figures, "policy", baselines, "accuracy_at_1")
    assert not cm.clears_best_baseline(figures, "policy", baselines, "accuracy_at_1", higher_is_better=False)
    assert not cm.clears_best_baseline(figures, "policy", ["choice_model"], "nll")  # no baseline value
    assert not cm.clears_best_baseline(figures, "missing", baselines, "nll")


def test_a_thousand_rows_four_sources_five_groupings_are_fast():
    import time

    import numpy as np

    rng = np.random.default_rng(0)
    records, sources = [], {name: [] for name in ("policy", "uniform", "position_prior", "choice_model")}
    for i in range(1000):
        n = int(rng.integers(2, 6))
        records.append(row(int(rng.integers(1, n + 1)), n, f"p{i // 3}", str(i), participant_study=f"s{i % 3}",
                           treatment_arm=f"arm{i % 4}", viewer_leaning=("liberal", "conservative")[i % 2]))
        for vectors in sources.values():
            vectors.append(rng.dirichlet(np.ones(n)).tolist())
    start = time.perf_counter()
    cm.distribution_metrics(records, sources, samples=1000)
    assert time.perf_counter() - start < 5.0
