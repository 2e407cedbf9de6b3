"""Metrics on small hand-made prediction sets whose answers are known, and on the real rows."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from grail_sim.evaluation import metrics

REAL = Path(__file__).resolve().parents[2] / "shared" / "real"
GOOD = "<think>because</think><answer>{}</answer>"


def nv(gold, n_options, parsed, participant="p", study="study1", raw=None, row_id=None):
    return {"id": row_id or f"{participant}:{gold}:{parsed}", "task": "next_video", "gold": gold,
            "n_options": n_options, "parsed": parsed,
            "raw_output": raw if raw is not None else (GOOD.format(parsed) if parsed is not None else "no answer"),
            "issue": "gun_control", "participant_study": study, "participant_id": participant}


def op(before, after, parsed, participant, study="study1", raw=None):
    return {"id": participant, "task": "opinion", "gold": after, "n_options": 0, "parsed": parsed,
            "raw_output": raw if raw is not None else (GOOD.format(parsed) if parsed is not None else "<answer>x"),
            "issue": "gun_control", "participant_study": study, "participant_id": participant,
            "opinion_before": before, "opinion_after": after}


# --------------------------------------------------------------------------- next video
def test_constant_position_predictor_scores_exactly_its_position_baseline():
    golds = [1, 2, 1, 4, 3, 1, 2, 1]
    records = [nv(g, 4, 1, participant=f"p{i}", row_id=str(i)) for i, g in enumerate(golds)]
    result = metrics.next_video_metrics(records, train_gold_indices=[1, 1, 2], samples=200)
    overall = result["overall"]
    assert overall["accuracy"]["value"] == pytest.approx(4 / 8)
    assert overall["baselines"]["most_frequent"]["value"] == pytest.approx(4 / 8)
    assert overall["baselines"]["always_last"]["value"] == pytest.approx(1 / 8)
    assert overall["baselines"]["random"]["value"] == pytest.approx(0.25)
    dist = result["position_distribution"]
    assert dist["predicted"] == {"1": 8, "2": 0, "3": 0, "4": 0}
    assert dist["gold"] == {"1": 4, "2": 2, "3": 1, "4": 1}
    assert dist["top_position"] == "1" and dist["top_share"] == 1.0 and dist["unparsed"] == 0
    assert overall["parsed_rate"]["value"] == 1.0 and overall["format_rate"]["value"] == 1.0


def test_parse_failure_is_a_wrong_answer_not_a_fallback():
    records = [nv(1, 3, 1, "a", row_id="1"), nv(1, 3, None, "b", raw="<answer>one</answer>", row_id="2"),
               nv(2, 3, 2, "c", raw="2", row_id="3")]
    overall = metrics.next_video_metrics(records, samples=0)["overall"]
    assert overall["accuracy"]["value"] == pytest.approx(2 / 3)
    assert overall["parsed_rate"]["value"] == pytest.approx(2 / 3)
    # Only the first row has the strict <think>...</think><answer>...</answer> layout.
    assert overall["format_rate"]["value"] == pytest.approx(1 / 3)
    assert overall["accuracy"]["ci_low"] is None  # samples=0: no interval
    assert metrics.next_video_metrics(records, samples=0)["position_distribution"]["unparsed"] == 1


def test_most_frequent_is_learned_on_train_and_applied_to_eval():
    records = [nv(g, 3, None, f"p{i}", row_id=str(i)) for i, g in enumerate([1, 1, 1, 2])]
    learned = metrics.next_video_metrics(records, train_gold_indices=[2, 2, 3], samples=0)
    assert learned["most_frequent_index"] == 2 and learned["most_frequent_learned_on"] == "train"
    assert learned["overall"]["baselines"]["most_frequent"]["value"] == pytest.approx(0.25)
    own = metrics.next_video_metrics(records, samples=0)
    assert own["most_frequent_index"] == 1 and "no train split" in own["most_frequent_learned_on"]
    assert own["overall"]["baselines"]["most_frequent"]["value"] == pytest.approx(0.75)


def test_most_frequent_ties_go_to_the_smaller_index():
    assert metrics.most_frequent_index([3, 2, 3, 2]) == 2
    assert metrics.most_frequent_index([]) is None


def test_rows_with_gold_outside_the_slate_are_dropped_and_counted():
    records = [nv(1, 3, 1, "a", row_id="1"), nv(5, 3, 1, "b", row_id="2")]
    result = metrics.next_video_metrics(records, samples=0)
    assert result["n_rows"] == 2 and result["n_eligible"] == 1
    assert result["dropped"] == {"gold_outside_slate": 1}
    assert result["overall"]["accuracy"]["value"] == 1.0


def test_breakdowns_by_study_options_and_gold_position():
    records = [nv(1, 3, 1, "a", "study2", row_id="1"), nv(2, 4, 1, "b", "study3", row_id="2"),
               nv(4, 4, 4, "c", "study3", row_id="3")]
    result = metrics.next_video_metrics(records, samples=0)
    assert set(result["by_study"]) == {"study2", "study3"}
    assert result["by_study"]["study3"]["accuracy"]["value"] == pytest.approx(0.5)
    assert result["by_n_options"]["3"]["n"] == 1 and result["by_n_options"]["4"]["n"] == 2
    assert result["by_gold_position"]["4"]["accuracy"]["value"] == 1.0
    assert result["by_gold_position"]["4"]["baselines"]["always_last"]["value"] == 1.0


def test_empty_evaluation_gives_none_never_nan():
    result = metrics.next_video_metrics([], samples=50)
    assert result["overall"]["n"] == 0
    assert result["overall"]["accuracy"]["value"] is None
    assert result["overall"]["baselines"]["most_frequent"]["value"] is None
    assert result["by_study"] == {} and result["position_distribution"]["top_share"] is None
    json.dumps(result, allow_nan=False)  # writable by io.write_json


def test_bootstrap_resamples_participants_not_rows():
    # One participant: every resample is that participant, so the interval collapses to the value.
    records = [nv(g, 4, 1, "only", row_id=str(i)) for i, g in enumerate([1, 2, 1, 3])]
    acc = metrics.next_video_metrics(records, samples=100)["overall"]["accuracy"]
    assert acc["ci_low"] == acc["ci_high"] == acc["value"] == 0.5
    # Many participants: a proper interval around the value, identical for the same seed.
    records = [nv(1 + i % 2, 2, 1, f"p{i}", row_id=str(i)) for i in range(40)]
    first = metrics.next_video_metrics(records, samples=300, seed=7)["overall"]["accuracy"]
    again = metrics.next_video_metrics(records, samples=300, seed=7)["overall"]["accuracy"]
    assert first == again
    assert first["ci_low"] < first["value"] == 0.5 < first["ci_high"]


def test_clears_needs_non_overlapping_intervals():
    model = {"value": 0.6, "ci_low": 0.5, "ci_high": 0.7}
    assert metrics.clears(model, {"value": 0.4, "ci_low": 0.35, "ci_high": 0.45})
    assert not metrics.clears(model, {"value": 0.45, "ci_low": 0.4, "ci_high": 0.55})
    assert not metrics.clears({"value": 0.6, "ci_low": None, "ci_high": None}, {"value": 0.1, "ci_low": 0, "ci_high": 0.2})
    assert metrics.clears({"value": 0.05, "ci_low": 0.04, "ci_high": 0.06},
                          {"value": 0.1, "ci_low": 0.08, "ci_high": 0.12}, higher_is_better=False)


# --------------------------------------------------------------------------- opinion
def test_opinion_errors_directions_and_baselines_on_known_rows():
    records = [
        op(0.2, 0.4, 0.3, "a"),    # error 0.1; increase predicted, increase true
        op(0.5, 0.5, 0.5, "b"),    # error 0;   no_change predicted and true
        op(0.6, 0.3, 0.9, "c"),    # error 0.6; increase predicted, decrease true
        op(0.4, 0.1, None, "d"),   # unparsed: not in MAE, wrong direction
    ]
    result = metrics.opinion_metrics(records, train_after_values=[0.2, 0.4], tolerance=1e-6, samples=0)
    o = result["overall"]
    assert o["n"] == 4 and o["n_parsed"] == 3
    assert o["mae"]["value"] == pytest.approx((0.1 + 0 + 0.6) / 3)
    assert o["rmse"]["value"] == pytest.approx(math.sqrt((0.01 + 0 + 0.36) / 3))
    assert o["direction_accuracy"]["value"] == pytest.approx(2 / 4)
    assert o["parsed_rate"]["value"] == pytest.approx(0.75)
    assert o["gold_directions"] == {"increase": 1, "no_change": 1, "decrease": 2}
    no_change = o["baselines"]["no_change"]
    assert no_change["mae"]["value"] == pytest.approx((0.2 + 0 + 0.3 + 0.3) / 4)
    assert no_change["direction_accuracy"]["value"] == pytest.approx(1 / 4)
    assert o["baselines_on_parsed_rows"]["no_change"]["mae"]["value"] == pytest.approx((0.2 + 0 + 0.3) / 3)
    assert result["global_mean"] == pytest.approx(0.3) and result["global_mean_learned_on"] == "train"
    glob = o["baselines"]["global_mean"]
    assert glob["mae"]["value"] == pytest.approx((0.1 + 0.2 + 0.0 + 0.2) / 4)
    # global mean 0.3 vs before: a increase (true), b decrease (false), c decrease (true), d decrease (true)
    assert glob["direction_accuracy"]["value"] == pytest.approx(3 / 4)


def test_constant_index_predictor_only_matches_the_majority_direction_baseline():
    # Half the participants move up, half down: "no change" is never right, so a model that answers
    # 1.0 for everyone (every arrow up) would look far better than it is without this baseline.
    records = [op(0.3, 0.5, 1.0, "a"), op(0.4, 0.6, 1.0, "b"), op(0.5, 0.2, 1.0, "c"), op(0.6, 0.4, 1.0, "d")]
    o = metrics.opinion_metrics(records, tolerance=1e-6, samples=0)["overall"]
    assert o["baselines"]["no_change"]["direction_accuracy"]["value"] == 0.0
    assert o["direction_accuracy"]["value"] == pytest.approx(0.5)
    assert o["majority_direction"] in {"increase", "decrease"}
    assert o["baselines"]["majority_direction"]["direction_accuracy"]["value"] == pytest.approx(0.5)
    assert o["baselines"]["majority_direction"]["mae"]["value"] is None


def test_direction_tolerance_is_configurable():
    records = [op(0.50, 0.52, 0.51, "a")]
    assert metrics.opinion_metrics(records, tolerance=1e-6, samples=0)["overall"]["direction_accuracy"]["value"] == 1.0
    wide = metrics.opinion_metrics(records, tolerance=0.05, samples=0)["overall"]
    assert wide["gold_directions"] == {"no_change": 1}
    assert wide["baselines"]["no_change"]["direction_accuracy"]["value"] == 1.0


def test_opinion_rows_without_scores_are_dropped_and_counted_and_empty_study_is_none():
    records = [op(0.2, float("nan"), 0.3, "a"), op(None, 0.4, 0.3, "b"), op(0.1, 0.2, 0.2, "c", study="study2")]
    result = metrics.opinion_metrics(records, samples=20)
    assert result["dropped"] == {"missing_opinion_before": 1, "missing_opinion_after": 1}
    assert result["n_scored"] == 1 and list(result["by_study"]) == ["study2"]
    empty = metrics.opinion_metrics([], samples=20)
    assert empty["overall"]["mae"]["value"] is None and empty["global_mean"] is None
    assert empty["overall"]["baselines"]["global_mean"]["mae"]["value"] is None
    json.dumps(empty, allow_nan=False)


def test_opinion_with_nothing_parsed_has_no_mae_and_zero_direction():
    records = [op(0.2, 0.4, None, "a"), op(0.3, 0.1, None, "b")]
    o = metrics.opinion_metrics(records, samples=10)["overall"]
    assert o["mae"]["value"] is None and o["n_parsed"] == 0
    assert o["direction_accuracy"]["value"] == 0.0
    assert o["baselines"]["no_change"]["mae"]["value"] == pytest.approx(0.2)


def test_change_correlation_by_hand():
    # Predicted changes (0.2, 0, -0.1), actual (0.1, 0, -0.2); centred, in 30ths: (5, -1, -4) and (4, 1, -5),
    # so r = (20 - 1 + 20) / 42 = 13/14. The unparsed row is not in the correlation.
    records = [op(0.5, 0.6, 0.7, "a"), op(0.5, 0.5, 0.5, "b"), op(0.5, 0.3, 0.4, "c"), op(0.5, 0.9, None, "d")]
    r = metrics.opinion_metrics(records, samples=0)["overall"]["change_correlation"]
    assert r["value"] == pytest.approx(13 / 14) and r["n"] == 3
    many = [op(0.5, 0.5 + 0.01 * i, 0.5 + 0.012 * i + 0.01 * (i % 3), f"p{i}") for i in range(30)]
    r = metrics.opinion_metrics(many, samples=200)["overall"]["change_correlation"]
    assert -1.0 <= r["ci_low"] < r["value"] < r["ci_high"] <= 1.0


def test_change_correlation_is_none_with_too_few_rows_or_no_variance():
    two = [op(0.5, 0.6, 0.7, "a"), op(0.5, 0.3, 0.4, "b")]
    assert metrics.opinion_metrics(two, samples=10)["overall"]["change_correlation"]["value"] is None
    constant = [op(0.5, 0.6, 0.6, "a"), op(0.4, 0.3, 0.5, "b"), op(0.2, 0.1, 0.3, "c")]  # every prediction +0.1
    result = metrics.opinion_metrics(constant, samples=10)
    assert result["overall"]["change_correlation"] == {"value": None, "ci_low": None, "ci_high": None, "n": 3}
    json.dumps(result, allow_nan=False)


def test_train_mean_change_baseline_by_hand():
    # Train changes +0.1 and +0.3: every prediction is before + 0.2, kept on the 0-1 scale.
    records = [op(0.2, 0.5, 0.3, "a"),    # predicts 0.4: error 0.1, increase (right)
               op(0.6, 0.5, 0.3, "b"),    # predicts 0.8: error 0.3, increase (wrong)
               op(0.5, 0.7, None, "c"),   # predicts 0.7: error 0, increase (right)
               op(0.9, 1.0, 0.3, "d")]    # predicts 1.0 (not 1.1): error 0, increase (right)
    result = metrics.opinion_metrics(records, train_before_values=[0.2, 0.4], train_after_values=[0.3, 0.7],
                                     samples=0)
    assert result["mean_change"] == pytest.approx(0.2) and result["mean_change_learned_on"] == "train"
    baseline = result["overall"]["baselines"]["train_mean_change"]
    assert baseline["mae"]["value"] == pytest.approx(0.4 / 4)
    assert baseline["rmse"]["value"] == pytest.approx(math.sqrt(0.10 / 4))
    assert baseline["direction_accuracy"]["value"] == pytest.approx(3 / 4)
    on_parsed = result["overall"]["baselines_on_parsed_rows"]["train_mean_change"]
    assert on_parsed["mae"]["value"] == pytest.approx(0.4 / 3)
    # Without train values the change is learned on the evaluated rows, and says so.
    own = metrics.opinion_metrics(records, samples=0)
    assert own["mean_change"] == pytest.approx((0.3 - 0.1 + 0.2 + 0.1) / 4)
    assert "no train split" in own["mean_change_learned_on"]


def test_majority_direction_is_learned_on_train_when_given():
    # The evaluated rows mostly increase, train mostly decreases: the baseline must not peek.
    records = [op(0.3, 0.5, 0.5, "a"), op(0.4, 0.6, 0.6, "b"), op(0.5, 0.2, 0.2, "c")]
    learned = metrics.opinion_metrics(records, train_before_values=[0.6, 0.7, 0.2],
                                      train_after_values=[0.4, 0.5, 0.3], samples=0)
    assert learned["majority_direction"] == "decrease" and learned["majority_direction_learned_on"] == "train"
    majority = learned["overall"]["baselines"]["majority_direction"]["direction_accuracy"]
    assert majority["value"] == pytest.approx(1 / 3)
    assert learned["by_study"]["study1"]["majority_direction"] == "decrease"
    own = metrics.opinion_metrics(records, samples=0)
    assert own["overall"]["majority_direction"] == "increase"
    assert "no train split" in own["majority_direction_learned_on"]
    assert own["overall"]["baselines"]["majority_direction"]["direction_accuracy"]["value"] == pytest.approx(2 / 3)
    # A train split without a usable pair gives no majority at all, never the evaluated rows' one.
    empty = metrics.opinion_metrics(records, train_before_values=[None], train_after_values=[0.4], samples=0)
    assert empty["majority_direction"] is None and empty["mean_change"] is None
    assert empty["overall"]["baselines"]["majority_direction"]["direction_accuracy"]["value"] is None
    assert empty["overall"]["baselines"]["train_mean_change"]["mae"]["value"] is None
    with pytest.raises(ValueError, match="train_before_values has 2 values"):
        metrics.opinion_metrics(records, train_before_values=[0.1, 0.2], train_after_values=[0.3], samples=0)


def test_majority_direction_ties_follow_the_label_order():
    assert metrics.majority_direction(["decrease", "increase", "no_change", "decrease", "increase"]) == "increase"
    assert metrics.majority_direction(["no_change", "unknown", "unknown"]) == "no_change"
    assert metrics.majority_direction([]) is None


def test_bootstrap_statistics_of_a_ratio_resamples_participants():
    groups = ["a", "a", "b", "c"]
    columns = {"num": [1.0, 1.0, 0.0, 2.0], "den": [1.0, 1.0, 2.0, 2.0], "pair": [[1, 0], [1, 0], [0, 1], [0, 1]]}
    stats = metrics.bootstrap_statistics(
        groups, columns, {"ratio": lambda t: t["num"] / t["den"], "share": lambda t: t["pair"][:, 0] / t["pair"].sum(1),
                          "undefined": lambda t: t["num"] * float("nan")}, samples=300, seed=1)
    assert stats["ratio"]["value"] == pytest.approx(4 / 6) and stats["share"]["value"] == 0.5
    assert stats["share"]["ci_low"] == 0.0 and stats["share"]["ci_high"] == 1.0  # {a,a,..} vs {b,c,..} resamples
    assert stats["undefined"] == {"value": None, "ci_low": None, "ci_high": None, "n": 4}
    assert metrics.bootstrap_statistics([], {}, {"x": lambda t: t}, samples=5)["x"]["value"] is None
    with pytest.raises(ValueError, match="column 'num'"):
        metrics.bootstrap_statistics(groups, {"num": [1.0]}, {}, samples=5)


# --------------------------------------------------------------------------- real rows
@pytest.mark.skipif(not (REAL / "next_video_study2.jsonl").exists(), reason="../shared/real not present")
def test_real_rows_reproduce_the_published_baselines():
    rows = [json.loads(line) for line in (REAL / "next_video_study2.jsonl").read_text().splitlines() if line.strip()]
    records = [{"id": r["id"], "gold": r["gold_index"], "n_options": r["n_options"], "parsed": None,
                "raw_output": "", "participant_study": r["participant_study"], "issue": r["issue"]} for r in rows]
    baselines = metrics.next_video_metrics(records, samples=100)["overall"]["baselines"]
    assert round(baselines["most_frequent"]["value"], 3) == 0.385
    assert round(baselines["random"]["value"], 3) == 0.256
    assert round(baselines["always_last"]["value"], 3) == 0.220

    opinions = [json.loads(line) for line in (REAL / "opinion_study2.jsonl").read_text().splitlines() if line.strip()]
    records = [op(o["before"], o["after"], None, o["participant_id"], study=o["participant_study"]) for o in opinions]
    result = metrics.opinion_metrics(records, samples=100)
    assert result["n_scored"] == 165
    assert round(result["overall"]["baselines"]["no_change"]["mae"]["value"], 3) == 0.096
    assert result["overall"]["gold_directions"] == {"increase": 90, "decrease": 65, "no_change": 10}


def test_rows_without_participant_id_are_counted():
    records = [nv(1, 3, 1, "a", row_id="1"), {**nv(2, 3, 1, "b", row_id="2"), "participant_id": ""}]
    overall = metrics.next_video_metrics(records, samples=0)["overall"]
    assert overall["n_without_participant_id"] == 1 and overall["n_participants"] == 2
