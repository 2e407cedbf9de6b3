"""The clean stage: Contract 1 rows, every allow-list filter and drop reason, splits, bad input, datasets."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from grail_sim.cli import main
from grail_sim.data.clean import clean_capsule, resolve_config
from grail_sim.data.contract import (
    CONTRACT_COLUMNS,
    assign_splits,
    finalise,
    participant_hash,
)
from grail_sim.data.dataset import clean_dataset
from grail_sim.data.demo_capsule import write_demo_capsule
from grail_sim.errors import CapsuleError, CleanConfigError, ConfigError

V = [f"vid{i:08d}" for i in range(12)]  # 11-character ids
GUN = "gun control (issue 1)"
WAGE = "minimum wage (issue 2)"


# --- a hand-made capsule whose every row is known ---------------------------------------------

def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(c for row in rows for c in row))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _default_surveys() -> dict[str, list[dict]]:
    wave1 = {"age": "40", "q26": "Male", "ideo1": "Conservative", "pid1": "Republican"}
    return {
        f"{GUN}/guncontrol_qualtrics_w1_clean.csv": [
            {"worker_id": "W1", "q87": "Quick and easy", "q89": "wikiHow", "survey_time": "300", "gun_index": "0.7", **wave1}],
        f"{GUN}/guncontrol_qualtrics_w123_clean.csv": [
            {"worker_id": "W1", "start_time2": "2021-01-02 10:00:00", "urlid": "u1", "treatment_arm": "pro_31",
             "pro": V[0], "anti": V[3], "gun_index": "0.7", "gun_index_2": "0.74", "gun_importance_2": "Very", **wave1}],
        f"{WAGE}/qualtrics_w12_clean.csv": [
            {"worker_id": "W2", "start_time2": "2021-01-02 10:00:00", "q87": "Quick and easy", "q89": "wikiHow",
             "survey_time": "300", "urlid": "u2", "treatment_arm": "anti_22", "pro": V[6], "anti": V[7],
             "mw_index_w1": "0.4", "mw_index_w2": "0.38", "minwage15_w1": "Somewhat support", "minwage15_w2": "x",
             "ideo1": "Liberal"}],
        f"{WAGE}/yg_w12_clean.csv": [
            {"caseid": "C3", "starttime": "2021-01-02 10:00:00", "urlid": "u3", "treatment_arm": "pro_22",
             "pro": V[6], "anti": V[7], "mw_index_w1": "0.2", "mw_index_w2": "NA", "ideo": "Liberal"}],
    }


def _default_sessions() -> list[dict]:
    return [
        {"sessionID": "s1", "topicId": "gun_control", "urlid": "u1", "vids": [V[0], V[1], V[2]],
         "displayOrders": {"2-recs": [V[3], V[1]], "3-recs": [V[2], V[4], V[5]]},
         "vidWatchTimes": {V[0]: 30000, V[1]: 60000, V[2]: 1000}, "vidTotalLengths": [100000, 120000, 90000]},
        {"sessionID": "s2", "topicId": "MinWage", "urlid": "u2", "vids": [V[6], V[7]],
         "displayOrders": {"2-recs": [V[8], V[7]]}},
        {"sessionID": "s3", "topicId": "min_wage", "urlid": "u3", "vids": [V[6], V[8]],
         "displayOrders": {"2-recs": [V[8], V[9]]}},
    ]


def _trees() -> dict[str, list[dict]]:
    def row(i, recs):
        return {"originId": V[i], "originTitle": f"Title {i}", "originChannel": f"Channel {i}", "originChannelId": "UC",
                "originDescription": "", "originDuration": "PT1M40S", "originViewCount": "1000",
                "originLikeCount": "10", "originDislikeCount": "1", "originFavoriteCount": "0",
                "originCommentCount": "5", **{f"rec{k + 1}": V[r] for k, r in enumerate(recs)}}
    return {"trees_gun/gun.csv": [row(i, [1, 2, 3, 4]) for i in range(6)],
            "trees_wage/wage.csv": [row(i, [7, 8, 9]) for i in range(6, 10)]}


def build_capsule(root: Path, sessions=None, surveys=None, trees=None) -> Path:
    sessions_path = root / "data" / "platform session data" / "sessions.json"
    sessions_path.parent.mkdir(parents=True, exist_ok=True)
    sessions_path.write_text(json.dumps(_default_sessions() if sessions is None else sessions))
    for name, rows in (_trees() if trees is None else trees).items():
        _write_csv(root / "data" / "recommendation trees" / name, rows)
    for name, rows in (_default_surveys() if surveys is None else surveys).items():
        _write_csv(root / "results" / "intermediate data" / name, rows)
    return root


def _rows(root: Path, config=None) -> tuple[pd.DataFrame, dict]:
    rows, stats = clean_capsule(root, config)
    frame, stats = finalise(rows, stats, resolve_config(config))
    return frame, stats


# --- rows ---------------------------------------------------------------------------------------

def test_rows_follow_contract_1(tmp_path):
    frame, stats = _rows(build_capsule(tmp_path))
    assert list(frame.columns) == CONTRACT_COLUMNS
    assert frame["row_id"].tolist() == ["s1:0", "s1:1", "s2:0", "s3:0"]
    first, second = frame.iloc[0], frame.iloc[1]
    assert (first.gold_video_id, first.gold_index, first.n_options, first.slate_source) == (V[1], 2, 2, "displayed")
    assert (second.gold_video_id, second.gold_index, second.n_options) == (V[2], 1, 3)
    assert [item["id"] for item in json.loads(first.slate_items)] == [V[3], V[1]]
    item = json.loads(first.slate_items)[0]
    assert item == {"id": V[3], "title": "Title 3", "channel": "Channel 3", "duration_s": 100.0,
                    "view_count": 1000.0, "like_count": 10.0, "comment_count": 5.0}
    assert json.loads(first.history) == [] and [h["id"] for h in json.loads(second.history)] == [V[0]]
    assert json.loads(second.history)[0] == {"id": V[0], "title": "Title 0", "channel": "Channel 0",
                                             "watched_s": 30.0, "total_s": 100.0}
    assert (first.current_video_title, first.current_video_duration_s, first.current_watched_s) == ("Title 0", 100.0, 30.0)
    assert second.current_total_s == 120.0
    assert first.participant_id == participant_hash("study1", "W1") and len(first.participant_id) == 16
    assert (first.issue, first.participant_study, first.treatment_arm) == ("gun_control", "study1", "pro_31")
    assert frame.set_index("session_id").loc["s3", "participant_study"] == "study3"
    assert (first.opinion_before, first.opinion_after) == (0.7, 0.74)
    assert math.isnan(frame.iloc[3].opinion_after)  # "NA" in the survey
    assert frame["split"].isin(["train", "validation", "test"]).all()
    assert stats["rows"] == 4 and stats["participants_by_study"] == {"study1": 1, "study2": 1, "study3": 1}


def test_profile_holds_only_allow_listed_wave1_columns(tmp_path):
    frame, _ = _rows(build_capsule(tmp_path))
    gun = json.loads(frame.iloc[0].profile)
    assert gun == {"age": "40", "q26": "Male", "ideo1": "Conservative", "pid1": "Republican", "gun_index": "0.7"}
    wage = json.loads(frame.iloc[2].profile)
    assert wage == {"ideo1": "Liberal", "minwage15_w1": "Somewhat support", "mw_index_w1": "0.4"}
    assert not any(k.endswith(("_2", "_w2")) for p in frame["profile"] for k in json.loads(p))


def test_post_treatment_profile_column_is_a_config_error():
    config = resolve_config()
    config["studies"]["study2"]["profile_columns"].append("mw_index_w2")
    with pytest.raises(CleanConfigError, match=r"study2.*mw_index_w2"):
        resolve_config(config)


def test_index_direction_is_flipped_when_configured(tmp_path):
    config = resolve_config()
    config["studies"]["study1"]["higher_is_conservative"] = False  # a study is given whole
    frame, _ = _rows(build_capsule(tmp_path), config)
    assert frame.iloc[0].opinion_before == pytest.approx(0.3) and frame.iloc[0].opinion_after == pytest.approx(0.26)


def test_gold_outside_the_displayed_slate_is_dropped_never_appended(tmp_path):
    sessions = _default_sessions()
    sessions[0]["displayOrders"]["2-recs"] = [V[3], V[4]]  # V1 was chosen but not displayed
    frame, stats = _rows(build_capsule(tmp_path, sessions=sessions))
    assert "s1:0" not in set(frame.row_id) and stats["drops"]["step_gold_not_in_slate"] == 1
    for row in frame.itertuples():
        assert [i["id"] for i in json.loads(row.slate_items)][row.gold_index - 1] == row.gold_video_id
    # The later step still sees the full history.
    assert [h["id"] for h in json.loads(frame.set_index("row_id").loc["s1:1", "history"])] == [V[0]]


def test_tree_slate_only_when_no_displayed_slate_was_logged(tmp_path):
    sessions = _default_sessions()
    del sessions[0]["displayOrders"]["2-recs"]
    frame, _ = _rows(build_capsule(tmp_path, sessions=sessions))
    row = frame.set_index("row_id").loc["s1:0"]
    assert row.slate_source == "tree" and [i["id"] for i in json.loads(row.slate_items)] == [V[1], V[2], V[3], V[4]]
    assert row.gold_index == 1


def test_alternative_display_order_keys(tmp_path):
    sessions = _default_sessions()
    sessions[0]["displayOrders"] = {"step0": [V[3], V[1]], "3": [V[2], V[4], V[5]]}
    frame, _ = _rows(build_capsule(tmp_path, sessions=sessions))
    assert frame.set_index("row_id").loc[["s1:0", "s1:1"], "gold_index"].tolist() == [2, 1]


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s: s.append("not an object"), "session_not_an_object"),
        (lambda s: s[0].pop("sessionID"), "session_missing_id"),
        (lambda s: s[0].pop("vids"), "session_missing_vids"),
        (lambda s: s[0]["vids"].append("short"), "session_invalid_video_id"),
        (lambda s: s[0].update(vids=[V[0]]), "session_too_short"),
        (lambda s: s[0].update(vids=[]), "session_too_short"),
        (lambda s: s[0].update(displayOrders=["x"]), "session_malformed_display_orders"),
        (lambda s: s[0]["displayOrders"].update({"2-recs": "x"}), "session_malformed_display_orders"),
        (lambda s: s[0]["displayOrders"].update(step0=[V[4]]), "session_conflicting_display_orders"),
        (lambda s: s.append(copy.deepcopy(s[0])), "session_duplicate_id"),
        (lambda s: s[0].update(topicId="climate"), "session_unknown_topic"),
        (lambda s: s[0].update(urlid=""), "session_missing_urlid"),
        (lambda s: s[0].update(urlid="nobody"), "session_not_in_surveys"),
        (lambda s: s[0].update(urlid="u2"), "session_topic_disagrees_with_survey"),
        (lambda s: s[0].update(displayOrders={"2-recs": [V[3]], "3-recs": [V[4]]}), "session_too_few_usable_steps"),
    ],
)
def test_every_session_drop_reason_is_counted(tmp_path, mutate, reason):
    sessions = _default_sessions()
    mutate(sessions)
    rows, stats = clean_capsule(build_capsule(tmp_path, sessions=sessions))
    assert stats["drops"][reason] == 1
    kept_whole = reason in {"session_duplicate_id", "session_not_an_object"}
    assert {r["session_id"] for r in rows} == ({"s1", "s2", "s3"} if kept_whole else {"s2", "s3"})
    assert sum(stats["drops"].get(k, 0) for k in stats["drops"] if k.startswith("session_")) == 1


def test_step_drop_reasons(tmp_path):
    sessions = _default_sessions()
    sessions[0]["vids"] = [V[0], V[1], V[11], V[2]]  # V[11] has no tree row and no logged slate at step 2
    sessions[0]["displayOrders"] = {"2-recs": [V[3], V[1]], "3-recs": []}
    rows, stats = clean_capsule(build_capsule(tmp_path, sessions=sessions))
    assert stats["drops"]["step_empty_slate"] == 1 and stats["drops"]["step_no_slate"] == 1
    assert [r["row_id"] for r in rows if r["session_id"] == "s1"] == ["s1:0"]
    assert stats["counters"]["videos_without_metadata"] == 1


def test_min_steps_drops_short_sessions_and_counts_their_steps(tmp_path):
    rows, stats = clean_capsule(build_capsule(tmp_path), {"min_steps": 2})
    assert {r["session_id"] for r in rows} == {"s1"}
    assert stats["drops"]["session_too_few_usable_steps"] == 2 and stats["drops"]["step_in_dropped_session"] == 2


def _mutate_survey(name: str, **changes):
    def mutate(surveys):
        surveys[name][0].update(changes)
    return mutate


W1_FILE, W123_FILE = f"{GUN}/guncontrol_qualtrics_w1_clean.csv", f"{GUN}/guncontrol_qualtrics_w123_clean.csv"
MTURK_FILE, YOUGOV_FILE = f"{WAGE}/qualtrics_w12_clean.csv", f"{WAGE}/yg_w12_clean.csv"


@pytest.mark.parametrize(
    ("mutate", "study", "counter", "session"),
    [
        (_mutate_survey(W1_FILE, q87="Hard"), "study1", "failed_q87", "s1"),
        (_mutate_survey(W1_FILE, q89="Wikipedia"), "study1", "failed_q89", "s1"),
        (_mutate_survey(W1_FILE, survey_time="119"), "study1", "survey_time_too_short", "s1"),
        (_mutate_survey(W1_FILE, gun_index="0.96"), "study1", "opinion_out_of_range", "s1"),
        (_mutate_survey(W1_FILE, worker_id="OTHER"), "study1", "failed_screener", "s1"),
        (_mutate_survey(W123_FILE, treatment_arm="control"), "study1", "control_arm", "s1"),
        (_mutate_survey(W123_FILE, treatment_arm="NA"), "study1", "missing_treatment_arm", "s1"),
        (_mutate_survey(W123_FILE, anti=""), "study1", "missing_pro_or_anti", "s1"),
        (_mutate_survey(MTURK_FILE, q87="Hard"), "study2", "failed_q87", "s2"),
        (_mutate_survey(MTURK_FILE, survey_time="60"), "study2", "survey_time_too_short", "s2"),
        (_mutate_survey(MTURK_FILE, mw_index_w1="0.98"), "study2", "opinion_out_of_range", "s2"),
        (_mutate_survey(MTURK_FILE, treatment_arm="Control"), "study2", "control_arm", "s2"),
        (_mutate_survey(YOUGOV_FILE, pro="NA"), "study3", "missing_pro_or_anti", "s3"),
        (_mutate_survey(YOUGOV_FILE, caseid=""), "study3", "missing_participant_key", "s3"),
    ],
)
def test_every_allow_list_filter_is_counted(tmp_path, mutate, study, counter, session):
    surveys = _default_surveys()
    mutate(surveys)
    rows, stats = clean_capsule(build_capsule(tmp_path, surveys=surveys))
    assert stats["allow_list"][study][counter] == 1
    assert stats["allow_list"][study]["allowed_participants"] == 0
    assert session not in {r["session_id"] for r in rows}
    assert stats["drops"]["session_filtered_by_allow_list"] == 1


def test_earliest_survey_row_per_participant_wins(tmp_path):
    surveys = _default_surveys()
    later = dict(surveys[W123_FILE][0], urlid="u-later", start_time2="2021-03-01 10:00:00", treatment_arm="anti_22")
    surveys[W123_FILE].insert(0, later)  # file order must not matter
    sessions = _default_sessions() + [dict(_default_sessions()[0], sessionID="s9", urlid="u-later")]
    frame, stats = _rows(build_capsule(tmp_path, sessions=sessions, surveys=surveys))
    assert stats["allow_list"]["study1"]["duplicate_participant_rows"] == 1
    assert set(frame.session_id) == {"s1", "s2", "s3"} and stats["drops"]["session_filtered_by_allow_list"] == 1
    assert frame.set_index("row_id").loc["s1:0", "treatment_arm"] == "pro_31"


def test_urlid_in_two_studies_is_ambiguous(tmp_path):
    surveys = _default_surveys()
    surveys[YOUGOV_FILE][0]["urlid"] = "u2"
    rows, stats = clean_capsule(build_capsule(tmp_path, surveys=surveys))
    assert stats["drops"]["session_ambiguous_urlid"] == 1 and "s2" not in {r["session_id"] for r in rows}


# --- bad input ----------------------------------------------------------------------------------

def test_missing_capsule_folder(tmp_path):
    with pytest.raises(CapsuleError, match="capsule folder not found"):
        clean_capsule(tmp_path / "nowhere")


def test_missing_survey_file_names_it(tmp_path):
    root = build_capsule(tmp_path)
    (root / "results" / "intermediate data" / YOUGOV_FILE).unlink()
    with pytest.raises(CapsuleError, match=r"study3.*yg_w12_clean\.csv"):
        clean_capsule(root)


def test_missing_survey_column_names_file_and_column(tmp_path):
    surveys = _default_surveys()
    for row in surveys[MTURK_FILE]:
        del row["q89"]
    with pytest.raises(CapsuleError, match=r"qualtrics_w12_clean\.csv: missing column\(s\) q89"):
        clean_capsule(build_capsule(tmp_path, surveys=surveys))


def test_malformed_sessions_json_names_file_and_line(tmp_path):
    root = build_capsule(tmp_path)
    (root / "data" / "platform session data" / "sessions.json").write_text('[{"sessionID": "s1",\n oops}]')
    with pytest.raises(CapsuleError, match=r"sessions\.json: malformed JSON at line 2"):
        clean_capsule(root)


def test_sessions_json_must_be_an_array(tmp_path):
    root = build_capsule(tmp_path)
    (root / "data" / "platform session data" / "sessions.json").write_text('{"sessionID": "s1"}')
    with pytest.raises(CapsuleError, match="expected a JSON array"):
        clean_capsule(root)


def test_malformed_tree_csv_names_the_file(tmp_path):
    root = build_capsule(tmp_path)
    (root / "data" / "recommendation trees" / "trees_gun" / "gun.csv").write_text('originId,originTitle\n"a,b\n')
    with pytest.raises(CapsuleError, match=r"gun\.csv"):
        clean_capsule(root)


def test_tree_without_required_column(tmp_path):
    trees = _trees()
    for row in trees["trees_gun/gun.csv"]:
        del row["originDuration"]
    with pytest.raises(CapsuleError, match=r"gun\.csv: missing column\(s\) originDuration"):
        clean_capsule(build_capsule(tmp_path, trees=trees))


# --- the CLI, outputs and splits ---------------------------------------------------------------

def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_cli_writes_parquet_and_stats_atomically(tmp_path, capsys):
    root = build_capsule(tmp_path / "capsule")
    out, stats_path = tmp_path / "clean" / "interactions.parquet", tmp_path / "clean" / "stats.json"
    args = ["clean", "--capsule", str(root / "data"), "--out", str(out), "--stats", str(stats_path)]
    assert main(args) == 0
    frame = pd.read_parquet(out)
    assert list(frame.columns) == CONTRACT_COLUMNS and len(frame) == 4
    assert str(frame["gold_index"].dtype) == "int64" and str(frame["opinion_after"].dtype) == "float64"
    stats = json.loads(stats_path.read_text())
    assert stats["rows"] == 4 and stats["sessions_read"] == 3 and "elapsed_s" in stats
    before = out.read_bytes()
    (root / "data" / "platform session data" / "sessions.json").write_text("[oops")
    capsys.readouterr()
    assert main(args) == 2
    assert "malformed JSON" in _one_line_error(capsys)
    assert out.read_bytes() == before  # a failed run leaves the previous output whole
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_cli_bad_config_json_and_empty_capsule_path(tmp_path, capsys):
    base = ["--out", str(tmp_path / "o.parquet"), "--stats", str(tmp_path / "s.json")]
    assert main(["clean", "--capsule", str(tmp_path), "--config-json", "{nope", *base]) == 2
    assert "--config-json" in _one_line_error(capsys)
    assert main(["clean", "--capsule", "", *base]) == 2
    assert "data.capsule_dir" in _one_line_error(capsys)


def test_splits_are_participant_level_seeded_and_stratified():
    ids = {s: [f"{s}-{i}" for i in range(100)] for s in ("study1", "study2", "study3")}
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    first = assign_splits(ids, fractions, seed=1)
    assert first == assign_splits(ids, fractions, seed=1) and first != assign_splits(ids, fractions, seed=2)
    for study, members in ids.items():
        counts = pd.Series([first[m] for m in members]).value_counts().to_dict()
        assert counts == {"train": 80, "validation": 10, "test": 10}, study
    # Adding participants to one study never moves another study's participants.
    grown = assign_splits({**ids, "study3": ids["study3"] + ["study3-new"]}, fractions, seed=1)
    assert all(grown[m] == first[m] for m in ids["study1"] + ids["study2"])


def test_small_study_keeps_a_test_participant():
    assert "test" in assign_splits({"study1": ["a", "b", "c"]}, {"train": 0.8, "validation": 0.1, "test": 0.1}, 0).values()


def test_bad_split_fractions_fail_naming_the_key():
    with pytest.raises(CleanConfigError, match="split_fractions"):
        resolve_config({"split_fractions": {"train": 0.9, "validation": 0.1, "test": 0.1}})


def test_partial_study_override_fails_naming_the_missing_key():
    # A study given in the section replaces its defaults whole, so a key left out is an error
    # (not silently taken from the defaults of another layout).
    with pytest.raises(ConfigError, match=r"clean\.studies\.study1: '\w+' is a required property"):
        resolve_config({"studies": {"study1": {"higher_is_conservative": False}}})


def test_resolve_config_fills_the_schema_defaults():
    config = resolve_config()
    assert config["split_seed"] == 42 and config["min_steps"] == 1
    assert set(config["studies"]) == {"study1", "study2", "study3"}
    assert resolve_config(config) == config  # resolving a resolved section changes nothing


# --- the demo round trip -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "capsule"
    truth = write_demo_capsule(out, participants=400, seed=11)
    rows, stats = clean_capsule(out)
    frame, stats = finalise(rows, stats, resolve_config())
    return truth, frame, stats


def test_round_trip_recovers_the_generators_ground_truth(demo):
    truth, frame, stats = demo
    assert stats["rows"] == truth["expected_rows"]
    assert stats["gold_index_counts"] == truth["gold_position_counts"]
    assert stats["participants_by_study"] == truth["expected_participants_by_study"]
    by_size = {str(n): {str(k): int(v) for k, v in group.value_counts().sort_index().items()}
               for n, group in frame.groupby("n_options")["gold_index"]}
    assert by_size == truth["gold_position_counts_by_n_options"]
    assert stats["drops"]["step_gold_not_in_slate"] >= 1 and stats["slate_source_counts"].get("tree", 0) >= 1
    assert stats["drops"].get("session_duplicate_id", 0) == truth["faults"].get("duplicate_sessions", 0)


def test_round_trip_splits_and_leak_guards(demo):
    _, frame, _ = demo
    assert frame.groupby("participant_id")["split"].nunique().max() == 1
    for _, group in frame.groupby("participant_study"):
        assert set(group["split"]) == {"train", "validation", "test"}
    assert frame["row_id"].is_unique
    for row in frame.itertuples():
        history = [h["id"] for h in json.loads(row.history)]
        assert len(history) == row.step_index  # only the videos before the current one
        assert not any(k.endswith(("_w2", "_2")) for k in json.loads(row.profile))


def test_demo_opinions_are_on_the_conservative_high_scale(demo):
    _, frame, _ = demo
    profiles = frame["profile"].map(json.loads)
    ideology = profiles.map(lambda p: p.get("ideo1") or p.get("ideo") or "")
    conservative = frame.loc[ideology.str.contains("onservative"), "opinion_before"].mean()
    liberal = frame.loc[ideology.str.contains("iberal"), "opinion_before"].mean()
    assert conservative > liberal + 0.2
    assert frame["opinion_before"].between(0, 1).all()


# --- pre-cleaned datasets ----------------------------------------------------------------------

def _dataset_rows() -> list[dict]:
    slate = [{"id": V[1], "title": "a"}, {"id": V[2], "title": "b"}]
    return [
        {"pid": "p1", "issue": "gun_control", "options": json.dumps(slate), "answer": 2, "study": "study1",
         "profile": json.dumps({"ideo1": "Liberal", "gun_index_2": "0.9"}), "split": "train"},
        {"pid": "p2", "issue": "gun_control", "options": json.dumps(slate), "answer": 3, "study": "study1",
         "profile": "{}", "split": "test"},
        {"pid": "p3", "issue": "gun_control", "options": json.dumps(slate), "answer": 1, "study": "study1",
         "profile": "{}", "split": "test"},
    ]


COLUMNS = {"participant_id": "pid", "slate_items": "options", "gold_index": "answer", "participant_study": "study"}


def test_dataset_input_through_load_dataset_on_a_local_parquet(tmp_path):
    path = tmp_path / "precleaned.parquet"
    pd.DataFrame(_dataset_rows()).to_parquet(path)
    rows, stats = clean_dataset(str(path), COLUMNS)
    frame, stats = finalise(rows, stats, resolve_config())
    assert list(frame.columns) == CONTRACT_COLUMNS
    assert frame["participant_id"].tolist() == ["p1", "p3"] and frame["split"].tolist() == ["train", "test"]
    assert stats["drops"] == {"row_gold_index_out_of_range": 1}
    assert json.loads(frame.iloc[0].profile) == {"ideo1": "Liberal"}  # the wave-2 key is removed and counted
    assert stats["counters"]["profile_keys_removed_post_treatment"] == 1
    assert frame.iloc[0].gold_video_id == V[2] and frame.iloc[0].n_options == 2


def test_dataset_folder_of_jsonl_splits_and_cli(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    rows = [{k: v for k, v in r.items() if k != "split"} for r in _dataset_rows()]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:1]) + "\n")
    (folder / "test.jsonl").write_text("\n".join(json.dumps(r) for r in rows[2:]) + "\n")
    out = tmp_path / "i.parquet"
    sections = {"data": {"dataset": {"columns": COLUMNS}}}
    assert main(["clean", "--dataset", str(folder), "--config-json", json.dumps(sections), "--out", str(out),
                 "--stats", str(tmp_path / "s.json")]) == 0
    frame = pd.read_parquet(out)
    assert dict(zip(frame.participant_id, frame.split)) == {"p1": "train", "p3": "test"}


def test_dataset_missing_mapped_column_fails_naming_it(tmp_path):
    path = tmp_path / "d.parquet"
    pd.DataFrame(_dataset_rows()).to_parquet(path)
    with pytest.raises(CapsuleError, match="answer_typo"):
        clean_dataset(str(path), {**COLUMNS, "gold_index": "answer_typo"})
    with pytest.raises(CapsuleError, match=r"gold_index"):
        clean_dataset(str(path), {"participant_id": "pid", "slate_items": "options"})
    with pytest.raises(CapsuleError, match="dataset not found"):
        clean_dataset(str(tmp_path / "missing.parquet"), COLUMNS)


def test_hub_name_offline_fails_naming_the_dataset():
    with pytest.raises(CapsuleError, match="no-such-owner/grail-gun"):
        clean_dataset("no-such-owner/grail-gun", COLUMNS)
