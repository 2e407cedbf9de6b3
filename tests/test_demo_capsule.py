"""The demo capsule: the real capsule's layout, its faults, and a behaviour model with a learnable signal."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from grail_sim.cli import main
from grail_sim.data.demo_capsule import GROUND_TRUTH_FILE, LEANING_SHARES, _choose, check_leaning_shares, write_demo_capsule

SURVEYS = {
    "gun control (issue 1)/guncontrol_qualtrics_w1_clean.csv",
    "gun control (issue 1)/guncontrol_qualtrics_w123_clean.csv",
    "minimum wage (issue 2)/qualtrics_w12_clean.csv",
    "minimum wage (issue 2)/yg_w12_clean.csv",
}


def _demo_config(**demo) -> str:
    return json.dumps({"data": {"demo": demo}})


@pytest.fixture(scope="module")
def capsule(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "capsule"
    assert main(["demo-capsule", "--out", str(out), "--config-json", _demo_config(participants=600, seed=5)]) == 0
    return out


def _csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_layout_matches_the_codeocean_capsule(capsule):
    assert (capsule / "data" / "platform session data" / "sessions.json").is_file()
    assert list((capsule / "data" / "recommendation trees" / "trees_gun").glob("*.csv"))
    assert list((capsule / "data" / "recommendation trees" / "trees_wage").glob("*.csv"))
    survey_root = capsule / "results" / "intermediate data"
    assert {str(p.relative_to(survey_root)) for p in survey_root.rglob("*.csv")} == SURVEYS


def test_sessions_have_the_real_schema(capsule):
    sessions = json.loads((capsule / "data" / "platform session data" / "sessions.json").read_text())
    keys = {"sessionID", "anonymousFirebaseAuthUID", "topicId", "urlid", "vids", "displayOrders", "vidWatchTimes",
            "vidTotalLengths", "vidStartTimes", "vidEndTimes", "percentVisible", "sessionFinished", "startTime", "endTime"}
    assert all(set(s) == keys for s in sessions)
    order_keys = {k for s in sessions for k in s["displayOrders"]}
    assert order_keys and all(k.endswith("-recs") and int(k.split("-")[0]) >= 2 for k in order_keys)
    slate_sizes = {len(v) for s in sessions for v in s["displayOrders"].values()}
    assert slate_sizes == {2, 3, 4, 5}
    # Both encodings of watch times occur (dict keyed by video id, list aligned with vids).
    assert {type(s["vidWatchTimes"]).__name__ for s in sessions} == {"dict", "list"}
    # Some logged ids carry a suffix past the 11-character id; some sessions are too short.
    assert any(len(v) > 11 for s in sessions for v in s["vids"])
    assert any(len(s["vids"]) < 2 for s in sessions)


def test_surveys_carry_both_waves_and_the_faults_the_filters_need(capsule):
    root = capsule / "results" / "intermediate data"
    w1 = _csv(root / "gun control (issue 1)/guncontrol_qualtrics_w1_clean.csv")
    w123 = _csv(root / "gun control (issue 1)/guncontrol_qualtrics_w123_clean.csv")
    mturk = _csv(root / "minimum wage (issue 2)/qualtrics_w12_clean.csv")
    yougov = _csv(root / "minimum wage (issue 2)/yg_w12_clean.csv")
    assert {"gun_index", "gun_index_2"} <= set(w123[0]) and {"mw_index_w1", "mw_index_w2"} <= set(mturk[0])
    assert "caseid" in yougov[0] and "worker_id" not in yougov[0]
    assert any(r["q87"] != "Quick and easy" for r in w1) and any(r["q89"] != "wikiHow" for r in mturk)
    assert any(int(r["survey_time"]) < 120 for r in w1 + mturk)
    assert any(not 0.05 <= float(r["gun_index"]) <= 0.95 for r in w1)
    assert all(any(r["treatment_arm"] == "control" for r in rows) for rows in (w123, mturk, yougov))
    keys = [r["worker_id"] for r in w123 + mturk] + [r["caseid"] for r in yougov]
    assert len(keys) > len(set(keys))  # duplicate survey rows
    assert any(r["gun_index_2"] == "" for r in w123) or any(r["mw_index_w2"] == "" for r in mturk + yougov)


def test_titles_and_profiles_state_the_stance_plainly(capsule):
    tree = _csv(next((capsule / "data" / "recommendation trees" / "trees_gun").glob("*.csv")))
    titles = " ".join(r["originTitle"] for r in tree)
    assert "Second Amendment" in titles and "Stricter Gun Laws" in titles
    rows = _csv(capsule / "results" / "intermediate data" / "gun control (issue 1)/guncontrol_qualtrics_w123_clean.csv")
    conservative = [float(r["gun_index"]) for r in rows if r["ideo1"] in {"Conservative", "Very conservative"}]
    liberal = [float(r["gun_index"]) for r in rows if r["ideo1"] in {"Liberal", "Very liberal"}]
    assert sum(conservative) / len(conservative) > sum(liberal) / len(liberal) + 0.2


def test_ground_truth_shows_a_learnable_signal_above_position_baselines(capsule):
    truth = json.loads((capsule / GROUND_TRUTH_FILE).read_text())
    # The stance rule (first option of the viewer's side) can only hit for the ~69% partisans: a
    # moderate has no side, so over all rows it sits a little above the most frequent position.
    assert 0.35 <= truth["stance_rule_accuracy_displayed"] <= 0.6
    assert truth["stance_rule_accuracy_displayed"] > truth["most_frequent_position_share"]
    assert truth["most_frequent_position_share"] < 0.5
    assert sum(truth["gold_position_counts"].values()) == truth["expected_rows"]


def test_same_seed_same_capsule_and_other_seed_differs(tmp_path):
    first = write_demo_capsule(tmp_path / "a", participants=30, seed=3)
    second = write_demo_capsule(tmp_path / "b", participants=30, seed=3)
    third = write_demo_capsule(tmp_path / "c", participants=30, seed=4)
    assert first == second and first != third
    for name in ("data/platform session data/sessions.json",
                 "results/intermediate data/minimum wage (issue 2)/yg_w12_clean.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_rewrite_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "capsule"
    write_demo_capsule(out, participants=30, seed=1)
    (out / "stale.txt").write_text("left over")
    write_demo_capsule(out, participants=30, seed=1)
    assert not (out / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_too_few_participants_fails_clearly(tmp_path, capsys):
    assert main(["demo-capsule", "--out", str(tmp_path / "x"), "--config-json", _demo_config(participants=2, seed=1)]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.demo.participants" in err and "\n" not in err and not (tmp_path / "x").exists()


def test_signal_and_position_weights_are_config_knobs_recorded_in_the_truth(tmp_path, capsys):
    weights = [2.0, 1.0, 1.0, 1.0, 1.0]
    out = tmp_path / "zero"
    assert main(["demo-capsule", "--out", str(out), "--config-json",
                 _demo_config(participants=30, seed=3, stance_match_prob=0.0, position_weights=weights)]) == 0
    truth = json.loads((out / GROUND_TRUTH_FILE).read_text())
    assert truth["behaviour_model"]["stance_match_prob"] == 0.0 and truth["behaviour_model"]["position_weights"] == weights
    assert set(truth["oracle"]["leaning_by_participant"].values()) == {"conservative", "liberal", "moderate"}
    assert len(truth["oracle"]["stance_by_video"]) == 4 * 60
    for bad in ({"stance_match_prob": 1.5}, {"position_weights": [1.0, 0.0, 1.0, 1.0, 1.0]},
                {"leaning_shares": {"liberal": 0.9}}):
        assert main(["demo-capsule", "--out", str(tmp_path / "bad"), "--config-json",
                     _demo_config(participants=30, seed=3, **bad)]) == 2
        assert next(iter(bad)) in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_the_population_has_the_real_viewers_shares_within_sampling_error(capsule):
    truth = json.loads((capsule / GROUND_TRUTH_FILE).read_text())
    counts = truth["behaviour_model"]["leaning_counts"]
    total = sum(counts.values())
    assert total == truth["participants"] and truth["behaviour_model"]["leaning_shares"] == LEANING_SHARES
    for leaning, share in LEANING_SHARES.items():
        # three binomial standard errors for this fixed seed's draw
        assert abs(counts[leaning] / total - share) <= 3 * (share * (1 - share) / total) ** 0.5, (leaning, counts)
    # A moderate's profile never states a party line on the issue it does not hold: its ideology is
    # a middle answer in nine of ten profiles (the tenth states a side by mistake, as for partisans).
    assert counts["moderate"] > 0


def test_a_moderate_chooses_by_position_only():
    rng = np.random.default_rng(0)
    # With the full signal a partisan always takes their side's option; a moderate, whatever the
    # signal, follows the position weights 1.0 : 0.8 over a two-option slate.
    picks = [_choose(rng, ["conservative", "liberal"], "moderate", match_prob=1.0) for _ in range(4000)]
    assert abs(picks.count(0) / len(picks) - 1.0 / 1.8) < 0.03
    assert {_choose(rng, ["conservative", "liberal"], "liberal", match_prob=1.0) for _ in range(50)} == {1}


def test_leaning_shares_are_checked_and_named():
    assert check_leaning_shares({"conservative": 0.5, "liberal": 0.5, "moderate": 0.0}) == {
        "liberal": 0.5, "moderate": 0.0, "conservative": 0.5}
    for bad in ({"liberal": 1.0}, {"liberal": 0.5, "moderate": 0.4, "conservative": 0.2},
                {"liberal": 0.5, "moderate": 0.5, "conservative": 0.0, "green": 0.0}):
        with pytest.raises(ValueError, match="leaning_shares"):
            check_leaning_shares(bad)
