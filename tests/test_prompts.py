"""The prompts stage: exact rendering, leak guards, drops, stats and the rule-facing CLI."""

from __future__ import annotations

import dataclasses
import json
import math

import pandas as pd
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from grail_sim.errors import ConfigError, ProfileError, PromptError, RowError
from grail_sim.prompts import build as prompts_build
from grail_sim.prompts import guards as prompts_guards
from grail_sim.prompts import importer as prompts_importer
from grail_sim.prompts import render as prompts_render
from grail_sim.prompts import settings as prompts_settings
from grail_sim.prompts.profiles import (
    UNAVAILABLE,
    load_profile_table,
    profile_table_from_dict,
)
from grail_sim.prompts.render import build_next_video_messages, build_opinion_messages
from grail_sim.rows import opinion_direction

SPLIT_OF = ("train", "validation", "test")


def word_counter(batch):
    """A real, cheap token count (whitespace words of every message) for tests off the tokenizer."""
    return [sum(len(m["content"].split()) for m in messages) for messages in batch]


def vid(n: int) -> str:
    return f"vid{n:08d}"


def video(n: int, **overrides) -> dict:
    item = {"id": vid(n), "title": f"Video {n} title", "channel": f"Channel {n % 3}", "duration_s": 60.0 + n,
            "view_count": 1000 + n, "like_count": 10, "comment_count": None}
    item.update(overrides)
    return item


def session_rows(participant: int, steps: int = 3, *, issue="gun_control", study="study1", split="train",
                 profile=None, before=0.3, after=0.4) -> list[dict]:
    """Contract-1 rows of one session: step k watches video base+k and picks base+k+1 from a slate."""
    base = participant * 100
    rows = []
    history = []
    for step in range(steps):
        current = base + step
        chosen = current + 1
        decoys = [video(base + 50 + step * 4 + j) for j in range(2)]
        position = 1 + (participant + step) % 3
        slate = decoys[: position - 1] + [video(chosen)] + decoys[position - 1:]
        rows.append({
            "row_id": f"s{participant}:{step}", "session_id": f"s{participant}",
            "participant_id": f"{participant:016x}", "issue": issue, "participant_study": study,
            "treatment_arm": "pro" if participant % 2 else "anti", "step_index": step,
            "current_video_id": vid(current), "current_video_title": f"Video {current} title",
            "current_video_channel": f"Channel {current % 3}", "current_video_duration_s": 60.0 + current,
            "history": json.dumps(history), "current_watched_s": 30.0, "current_total_s": 60.0 + current,
            "slate_items": json.dumps(slate), "slate_source": "displayed", "n_options": len(slate),
            "gold_video_id": vid(chosen), "gold_index": position,
            "profile": json.dumps(profile if profile is not None else {"age": "49", "q26": "Female", "pid1": "Democrat",
                                                                      "ideo1": "Liberal", "gun_own": "No"}),
            "opinion_before": before, "opinion_after": after, "split": split,
        })
        history = history + [{"id": vid(current), "title": f"Video {current} title",
                              "channel": f"Channel {current % 3}", "watched_s": 30.0, "total_s": 60.0 + current}]
    return rows


def make_frame(participants: int = 6, steps: int = 3, **kwargs) -> pd.DataFrame:
    rows = []
    for p in range(participants):
        rows += session_rows(p, steps, split=SPLIT_OF[p % 3], **kwargs)
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def settings():
    return prompts_settings.load_settings({})


# ---------------------------------------------------------------------------------------- golden


GOLDEN_PROFILE = {"age": "49.0", "q26": "Female", "q29": "White", "q31": "$20,000-$24,999", "college": "0",
                  "pid1": "Democrat", "ideo1": "Moderate", "pol_interest": "Somewhat interested",
                  "gun_own": "No", "freq_youtube": "Several times a week", "gun_index": "0.3"}


def test_golden_next_video_rendering(settings):
    row = session_rows(1, 3, profile=GOLDEN_PROFILE, before=0.25)[2]
    messages = build_next_video_messages(row, settings)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == (
        "PROFILE: Demographics: 49 years old, woman, White, income $20,000-$24,999, no college degree. "
        "Politics: party: Democrat, ideology: moderate, political interest: somewhat interested. "
        "Issue views: owns a gun: no. Media use: watches YouTube several times a week. "
        "Pre-study gun control index 0.25 (0 = strongly supports stricter gun laws, "
        "1 = strongly opposes stricter gun laws).\n"
        "HISTORY (most recent first):\n"
        "1. Video 101 title (Channel 2; watched 30/161 s)\n"
        "2. Video 100 title (Channel 1; watched 30/160 s)\n"
        "CURRENT VIDEO: Video 102 title (channel: Channel 0; length: 2:42)\n"
        "OPTIONS:\n"
        "1. Video 103 title (channel: Channel 1; length: 2:43)\n"
        "2. Video 158 title (channel: Channel 2; length: 3:38)\n"
        "3. Video 159 title (channel: Channel 0; length: 3:39)"
    )
    assert row["gold_index"] == 1 and row["gold_video_id"] == vid(103)
    system = messages[0]["content"]
    assert system.startswith("You simulate one YouTube viewer in a study on gun control.")
    assert "<think>brief reasoning</think><answer>N</answer>" in system


def test_golden_opinion_rendering_states_the_scale(settings):
    row = session_rows(1, 2, profile={}, before=0.25, after=0.5)[1]
    messages = build_opinion_messages(row, settings)
    assert messages[1]["content"] == (
        "PROFILE: Pre-study gun control index 0.25 (0 = strongly supports stricter gun laws, "
        "1 = strongly opposes stricter gun laws).\n"
        "HISTORY (most recent first):\n"
        "1. Video 101 title (Channel 2; watched 30/161 s)\n"
        "2. Video 100 title (Channel 1; watched 30/160 s)\n"
        "CURRENT VIDEO: Video 102 title (channel: Channel 0; length: 2:42)\n"
        "OPINION: pre-study index 0.25 on the 0-1 scale; predict the post-study index."
    )
    system = messages[0]["content"]
    assert "0 = strongly supports stricter gun laws, 1 = strongly opposes stricter gun laws" in system
    assert "1-7" not in system and "1–7" not in system
    wage = dict(row, issue="minimum_wage")
    wage_messages = build_opinion_messages(wage, settings)
    assert "1 = strongly opposes raising the minimum wage" in wage_messages[0]["content"]
    assert wage_messages[1]["content"].startswith(
        "PROFILE: Pre-study minimum wage index 0.25 (0 = strongly supports raising the minimum wage, "
        "1 = strongly opposes raising the minimum wage).\n")


def test_direction_target_changes_system_prompt_and_answer(settings):
    direction = dataclasses.replace(settings, opinion_target="direction")
    system = build_opinion_messages(session_rows(1, 1)[0], direction)[0]["content"]
    assert "increase, decrease or no_change" in system
    assert opinion_direction(0.3, 0.3 + 1e-9, 1e-6) == "no_change"
    assert opinion_direction(0.3, 0.4, 1e-6) == "increase"
    assert opinion_direction(0.3, 0.2, 1e-6) == "decrease"
    assert opinion_direction(None, 0.2, 1e-6) == "unknown"


def test_max_history_and_show_ids(settings):
    row = session_rows(1, 5)[4]
    short = build_next_video_messages(row, dataclasses.replace(settings, max_history=2))[1]["content"]
    history = short.split("HISTORY (most recent first):\n")[1].split("\nCURRENT VIDEO:")[0].splitlines()
    assert history == ["1. Video 103 title (Channel 1; watched 30/163 s)",
                       "2. Video 102 title (Channel 0; watched 30/162 s)"]
    full = build_next_video_messages(row, dataclasses.replace(settings, max_history=0))[1]["content"]
    assert full.count("watched 30/") == 4
    with_ids = build_next_video_messages(row, dataclasses.replace(settings, show_ids=True))[1]["content"]
    assert f"1. [{vid(103)}] Video 103 title" in with_ids
    assert f"[{vid(105)}] Video 105 title (channel:" in with_ids


def test_environment_overrides_config_where_it_is_resolved(tmp_path, monkeypatch, tokenizer_dir):
    from grail_sim import config

    values = {"prompts": {"max_history": 12}}
    config.apply_environment(values, {"GRAIL_MAX_HISTORY": "3", "GRAIL_SHOW_IDS": "1"})
    chosen = prompts_settings.load_settings(values["prompts"])
    assert chosen.max_history == 3 and chosen.show_ids is True
    with pytest.raises(ConfigError, match="GRAIL_MAX_HISTORY"):
        config.apply_environment({}, {"GRAIL_MAX_HISTORY": "lots"})
    with pytest.raises(ConfigError, match="opinion_target"):
        prompts_settings.load_settings({"opinion_target": "vibes"})
    # Library code never reads the environment itself: only the CLI (by hand) and the Snakefile do.
    monkeypatch.setenv("GRAIL_MAX_HISTORY", "5")
    assert prompts_settings.load_settings({}).max_history == 12


def test_option_without_title_falls_back_to_id_with_same_fields(settings):
    row = session_rows(1, 1)[0]
    slate = json.loads(row["slate_items"])
    slate[0] = {"id": slate[0]["id"], "title": None, "channel": None, "duration_s": None}
    row["slate_items"] = json.dumps(slate)
    text = build_next_video_messages(row, settings)[1]["content"]
    assert f"1. video {slate[0]['id']} (channel: unknown channel; length: unknown)" in text


# -------------------------------------------------------------------------------------- profiles


def test_profile_rejects_unknown_and_post_treatment_keys(settings):
    row = session_rows(1, 1, profile={"age": "30", "favourite_colour": "blue"})[0]
    with pytest.raises(ProfileError, match=r"row s1:0: profile key 'favourite_colour' is not in the pre-treatment"):
        build_next_video_messages(row, settings)
    row = session_rows(1, 1, profile={"gun_index_2": "0.9"})[0]
    with pytest.raises(ProfileError, match=r"'gun_index_2' looks post-treatment"):
        build_next_video_messages(row, settings)


def test_phrase_table_refuses_post_treatment_column():
    data = {"post_treatment_patterns": ["_w2$"], "groups": {"issue": "Issue"},
            "fields": {"mw_index_w2": {"group": "issue"}},
            "opinion_scale": {"minimum_wage": {"topic": "t", "low": "l", "high": "h"}}}
    with pytest.raises(ProfileError, match="mw_index_w2 looks post-treatment"):
        profile_table_from_dict(data)


def test_shipped_table_is_pre_treatment_only():
    table = load_profile_table(prompts_settings.REPO_ROOT / "config/prompts/profile_fields.yaml")
    assert not [c for c in table.fields if table.post_treatment_match(c)]
    assert {"gun_control", "minimum_wage"} <= set(table.opinion_scale)


def test_empty_profile_says_unavailable(settings):
    row = session_rows(1, 1, profile={"age": "NA", "q26": ""}, before=float("nan"))[0]
    assert build_next_video_messages(row, settings)[1]["content"].startswith(f"PROFILE: {UNAVAILABLE}\n")


# ----------------------------------------------------------------------------------------- build


def test_build_counts_drops_and_reports_position_baselines(settings):
    frame = make_frame(participants=6, steps=3)
    broken = frame.copy()
    broken.loc[0, "slate_items"] = "[]"  # no usable slate
    broken.loc[1, "gold_video_id"] = vid(9999)  # gold not in slate
    slate = json.loads(broken.loc[2, "slate_items"])
    slate[0] = {"id": None, "title": "", "channel": "x"}
    broken.loc[2, "slate_items"] = json.dumps(slate)  # item without title and id
    broken.loc[3, "n_options"] = 7
    out, stats = prompts_build.build_issue(broken, "gun", settings, word_counter)
    nv = stats["next_video"]
    assert nv["drops"] == {"no_usable_slate": 1, "gold_not_in_slate": 1, "slate_item_without_title_or_id": 1,
                           "n_options_mismatch": 1}
    assert nv["rows_kept"] == 14 and stats["rows_read"] == 18
    assert sum(len(out["next_video"][s]) for s in SPLIT_OF) == 14
    train = out["next_video"]["train"]
    golds = [r["gold_index"] for r in train]
    split_stats = nv["splits"]["train"]
    assert split_stats["gold_position_counts"] == {str(k): golds.count(k) for k in sorted(set(golds))}
    baselines = split_stats["baselines"]
    assert baselines["always_last_accuracy"] == pytest.approx(sum(g == 3 for g in golds) / len(golds))
    assert baselines["random_expected_accuracy"] == pytest.approx(1 / 3)
    assert baselines["most_frequent_index_accuracy"] == max(golds.count(k) for k in set(golds)) / len(golds)
    assert stats["opinion"]["rows_kept"] == 6 and stats["opinion"]["splits"]["test"]["rows"] == 2
    for guard in ("option_rendering", "post_treatment", "future_history"):
        assert stats["leak_guards"][guard]["passed"] is True
    assert stats["leak_guards"]["post_treatment"]["profile_keys"] == ["age", "gun_own", "ideo1", "pid1", "q26"]


def test_rows_follow_contract_two(settings):
    out, _ = prompts_build.build_issue(make_frame(), "gun_control", settings, word_counter)
    row = out["next_video"]["validation"][0]
    for column in ("id", "prompt", "gold_index", "n_options", "slate_items", "viewer_profile", "history", "issue",
                   "participant_study", "participant_id", "opinion_before", "opinion_after", "opinion_direction",
                   "gold_id"):
        assert column in row, column
    assert json.loads(row["slate_items"])[row["gold_index"] - 1]["id"] == row["gold_id"]
    assert row["prompt"][1]["content"].startswith("PROFILE: " + row["viewer_profile"] + "\n")
    assert row["opinion_direction"] == "increase" and row["answer"] == str(row["gold_index"])
    opinion = out["opinion"]["train"][0]
    assert opinion["gold_index"] == 0 and opinion["answer"] == "0.400" and opinion["step_index"] == 2
    assert len(json.loads(opinion["history"])) == 3  # two earlier watches plus the last current video


def test_direction_target_answers_and_missing_opinions_are_counted(settings):
    frame = make_frame(participants=9)
    frame.loc[frame["participant_id"] == f"{3:016x}", "opinion_after"] = float("nan")
    frame.loc[frame["participant_id"] == f"{4:016x}", "opinion_after"] = 0.3  # unchanged
    out, stats = prompts_build.build_issue(frame, "gun", dataclasses.replace(settings, opinion_target="direction"), word_counter)
    assert stats["opinion"]["drops"] == {"opinion_missing": 1} and stats["opinion"]["rows_kept"] == 8
    answers = {r["participant_id"]: r["answer"] for s in SPLIT_OF for r in out["opinion"][s]}
    assert answers[f"{4:016x}"] == "no_change" and answers[f"{0:016x}"] == "increase"
    next_rows = [r for s in SPLIT_OF for r in out["next_video"][s] if r["participant_id"] == f"{3:016x}"]
    assert len(next_rows) == 3 and {r["opinion_direction"] for r in next_rows} == {"unknown"}


def test_history_truncated_oldest_first_for_token_budget(settings):
    frame = make_frame(participants=3, steps=6)
    full, _ = prompts_build.build_issue(frame, "gun", dataclasses.replace(settings, max_history=0), word_counter)
    longest = max(r["prompt_tokens"] for r in full["next_video"]["train"])
    tight = dataclasses.replace(settings, max_history=0, max_prompt_tokens=longest - 20)
    out, stats = prompts_build.build_issue(frame, "gun", tight, word_counter)
    truncation = stats["next_video"]["truncation"]
    assert truncation["rows_history_cut_for_tokens"] >= 1 and truncation["history_items_cut_for_tokens"] >= 1
    assert truncation["rows_over_limit_after_cutting_history"] == 0
    last = next(r for r in out["next_video"]["train"] if r["id"] == "s0:5")
    shown = [item["id"] for item in json.loads(last["history"])]
    assert shown == [vid(k) for k in range(5 - len(shown), 5)]  # the newest kept, the oldest cut
    assert last["prompt_tokens"] <= longest - 20
    assert "\nOPTIONS:\n1. " in last["prompt"][1]["content"] and last["prompt"][1]["content"].count("(channel:") == 4
    impossible = dataclasses.replace(settings, max_prompt_tokens=5)
    _, stats = prompts_build.build_issue(frame, "gun", impossible, word_counter)
    assert stats["next_video"]["truncation"]["rows_over_limit_after_cutting_history"] == 18


# ------------------------------------------------------------------------------------ leak guards


def test_future_video_in_history_fails_the_build(settings):
    frame = make_frame()
    history = json.loads(frame.loc[1, "history"])
    history.append({"id": frame.loc[1, "gold_video_id"], "title": "t", "channel": "c"})
    frame.loc[1, "history"] = json.dumps(history)
    with pytest.raises(PromptError, match=r"future video in history .*s0:1"):
        prompts_build.build_issue(frame, "gun", settings, word_counter)


def test_gold_without_metadata_fails_the_build(settings):
    frame = make_frame()
    for index, row in frame.iterrows():
        slate = json.loads(row["slate_items"])
        gold = slate[row["gold_index"] - 1]
        gold.update(title=None, channel=None, duration_s=None)
        frame.loc[index, "slate_items"] = json.dumps(slate)
    with pytest.raises(PromptError, match="gold option lacks metadata in 100.0% of rows"):
        prompts_build.build_issue(frame, "gun", settings, word_counter)


def test_option_guard_spots_an_option_rendered_differently():
    row = {"id": "r1", "gold_index": 2, "n_options": 2, "prompt": [{"role": "user", "content": (
        "PROFILE: x\nOPTIONS:\n1. A (channel: C; length: 1:00)\n2. B")}]}
    result = prompts_guards.check_option_rendering([row])
    assert result["violations"] == 1 and "option 2 rendered differently" in result["examples"][0]


# -------------------------------------------------------------------------------------- bad input


def test_bad_input_errors_name_the_culprit(settings):
    frame = make_frame()
    with pytest.raises(PromptError, match=r"missing column\(s\) \['profile'\]"):
        prompts_build.build_issue(frame.drop(columns=["profile"]), "gun", settings, word_counter)
    with pytest.raises(ValueError, match="unknown issue 'guns'"):
        prompts_build.build_issue(frame, "guns", settings, word_counter)
    with pytest.raises(PromptError, match="split 'test' is empty"):
        prompts_build.build_issue(frame[frame["split"] != "test"], "gun", settings, word_counter)
    with pytest.raises(PromptError, match="no rows for issue 'minimum_wage'"):
        prompts_build.build_issue(frame, "wage", settings, word_counter)
    corrupt = frame.copy()
    corrupt.loc[4, "history"] = "[{"
    with pytest.raises(RowError, match="row s1:1: column 'history' is not valid JSON"):
        prompts_build.build_issue(corrupt, "gun", settings, word_counter)


# ----------------------------------------------------------------------------------- properties

_text = st.one_of(st.none(), st.text(max_size=30), st.floats(allow_nan=True), st.integers())
_item = st.dictionaries(st.sampled_from(["id", "title", "channel", "duration_s", "watched_s", "total_s"]), _text)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(_item, max_size=5), slate=st.lists(_item, max_size=5),
       profile=st.dictionaries(st.sampled_from(["age", "q26", "pid1", "ideo1", "freq_youtube", "gun_index"]), _text),
       before=st.one_of(st.none(), st.floats()), title=_text, issue=st.sampled_from(["gun_control", "minimum_wage"]),
       show_ids=st.booleans(), max_history=st.integers(0, 3))
def test_builder_never_crashes_and_emits_every_section(settings, history, slate, profile, before, title, issue,
                                                       show_ids, max_history):
    row = {"row_id": "r", "issue": issue, "history": json.dumps(history, default=str),
           "slate_items": json.dumps(slate, default=str), "profile": json.dumps(profile, default=str),
           "opinion_before": before, "current_video_id": "abc", "current_video_title": title,
           "current_video_channel": None, "current_video_duration_s": float("nan"), "gold_index": 1,
           "gold_video_id": "abc"}
    chosen = dataclasses.replace(settings, show_ids=show_ids, max_history=max_history)
    for task, builder in prompts_render.BUILDERS.items():
        user = builder(row, chosen)[1]["content"]
        positions = [user.find(section) for section in prompts_render.SECTIONS[task]]
        assert -1 not in positions and positions == sorted(positions), (task, user)
        profile_line = user.split("\n", 1)[0]
        assert len(profile_line) > len("PROFILE: ") + 5
    options = prompts_guards.option_lines(build_next_video_messages(row, chosen)[1]["content"])
    if slate:
        assert len(options) == len(slate)
        assert all(prompts_guards._OPTION_LINE.match(line) for line in options)


# -------------------------------------------------------------------------------------- import


def test_import_corrupt_line_names_file_and_line(tmp_path):
    path = tmp_path / "ext.jsonl"
    good = {"id": "a", "messages": [{"role": "user", "content": "hi"}], "gold_index": 1, "n_options": 2}
    path.write_text(json.dumps(good) + "\n" + '{"id": "b", "messages": [\n')
    with pytest.raises(Exception, match=r"ext.jsonl:2"):
        prompts_importer.import_jsonl(path, prompts_settings.load_settings())
    path.write_text(json.dumps(dict(good, gold_index=3)) + "\n")
    with pytest.raises(PromptError, match=r"ext.jsonl:1: needs integer 'gold_index' in 1..'n_options'"):
        prompts_importer.import_jsonl(path, prompts_settings.load_settings())


def test_import_keeps_extra_fields_and_fills_empty_values(tmp_path):
    path = tmp_path / "ext.jsonl"
    rows = [{"id": "a", "messages": [{"role": "user", "content": "hi"}], "gold_index": 2, "n_options": 3,
             "issue": "minimum_wage", "source_note": "kept"},
            {"id": "o", "messages": [{"role": "user", "content": "op"}], "before": 0.2, "after": 0.1,
             "direction": "decrease", "step_index": 3}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    imported = prompts_importer.import_jsonl(path, prompts_settings.load_settings())
    assert imported[0]["task"] == "next_video" and imported[0]["slate_items"] == "[]"
    assert imported[0]["source_note"] == "kept" and math.isnan(imported[0]["opinion_before"])
    assert imported[1]["task"] == "opinion" and imported[1]["opinion_after"] == 0.1
    assert imported[1]["gold_index"] == 0 and imported[1]["opinion_direction"] == "decrease"
    assert imported[1]["participant_id"] == "" and imported[1]["step_index"] == 3


REAL = prompts_settings.REPO_ROOT.parent / "shared" / "real"


@pytest.mark.skipif(not (REAL / "next_video_study2.jsonl").exists(), reason="../shared/real not present")
def test_import_real_reference_rows_reproduces_published_baselines(tmp_path, capsys):
    from datasets import load_from_disk

    from grail_sim import cli

    assert cli.main(["prompts", "import", "--jsonl", str(REAL / "next_video_study2.jsonl"),
                     "--out", str(tmp_path / "nv")]) == 0
    test = load_from_disk(str(tmp_path / "nv"))["test"]
    assert len(test) == 364 and test[0]["prompt"][0]["role"] == "system"
    golds, sizes = test["gold_index"], test["n_options"]
    assert round(golds.count(1) / 364, 3) == 0.385  # most frequent index, ../shared/README.md
    assert round(sum(g == n for g, n in zip(golds, sizes)) / 364, 3) == 0.220  # always last
    assert round(sum(1 / n for n in sizes) / 364, 3) == 0.256  # random 1/n
    assert cli.main(["prompts", "import", "--jsonl", str(REAL / "opinion_study2.jsonl"), "--our-system-prompt",
                     "--out", str(tmp_path / "op")]) == 0
    opinion = load_from_disk(str(tmp_path / "op"))["test"]
    assert len(opinion) == 165
    mae = sum(abs(a - b) for a, b in zip(opinion["opinion_after"], opinion["opinion_before"])) / 165
    assert round(mae, 3) == 0.096  # the no-change baseline
    system = opinion[0]["prompt"][0]["content"]
    assert "1 = strongly opposes raising the minimum wage" in system and "1–7" not in system


def test_cli_build_and_show_with_the_model_tokenizer(tmp_path, tokenizer_dir, capsys):
    from datasets import load_from_disk

    from grail_sim import cli

    parquet = tmp_path / "interactions.parquet"
    make_frame(participants=6, steps=4).to_parquet(parquet)
    out_dir = tmp_path / "prompts" / "gun_control"
    assert cli.main(["prompts", "build", "--interactions", str(parquet), "--issue", "gun_control",
                     "--tokenizer", str(tokenizer_dir), "--out-dir", str(out_dir),
                     "--config-json", json.dumps({"prompts": {"max_history": 2}})]) == 0
    stats = json.loads((out_dir / "stats.json").read_text())
    tokens = stats["next_video"]["prompt_tokens"]["train"]
    assert 100 < tokens["mean"] <= tokens["p95"] <= tokens["max"] < 600
    assert stats["settings"]["max_history"] == 2 and stats["next_video"]["truncation"]["rows_history_cut_by_max_history"] == 6
    for task, rows in (("next_video", 24), ("opinion", 6)):
        data = load_from_disk(str(out_dir / task))
        assert sorted(data) == ["test", "train", "validation"]
        assert sum(len(data[s]) for s in data) == rows
    capsys.readouterr()
    assert cli.main(["prompts", "show", "--issue", "gun", "--n", "2", "--prompts-dir", str(tmp_path / "prompts")]) == 0
    shown = capsys.readouterr().out
    assert shown.count("--- system ---") == 2 and "OPTIONS:\n1. " in shown and "--- gold answer:" in shown
    parquet_bad = tmp_path / "bad.parquet"
    make_frame().drop(columns=["gold_index"]).to_parquet(parquet_bad)
    assert cli.main(["prompts", "build", "--interactions", str(parquet_bad), "--issue", "gun", "--tokenizer",
                     str(tokenizer_dir), "--out-dir", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_snakemake_rule_builds_prompts_and_fails_on_a_leak(tmp_path, tokenizer_dir):
    import os
    import shutil
    import subprocess
    import sys

    root = prompts_settings.REPO_ROOT
    for name in ("workflow", "config", "envs", "src"):
        shutil.copytree(root / name, tmp_path / name)
    # Only this stage's rule, with the real config and schema: the upstream rules stay out of the DAG.
    import yaml

    config = yaml.safe_load((root / "config/config.yaml").read_text())
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    # Only this stage's rules file (with common.smk and its upstream rule files for `rules.X`);
    # the upstream outputs exist already, so only `prompts` runs.
    (tmp_path / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n\n'
        + "".join(f'include: "workflow/rules/{name}.smk"\n' for name in ("common", "model", "clean", "prompts")))
    (tmp_path / "results" / "clean").mkdir(parents=True)
    (tmp_path / "results" / "models").mkdir()
    shutil.copytree(tokenizer_dir, tmp_path / "results" / "models" / "base")
    make_frame().to_parquet(tmp_path / "results" / "clean" / "interactions.parquet")
    env = dict(os.environ, PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "results/prompts/gun_control/stats.json"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((tmp_path / "results/prompts/gun_control/stats.json").read_text())
    assert stats["leak_guards"]["future_history"]["passed"] and stats["next_video"]["rows_kept"] == 18
    leaky = make_frame()
    leaky.loc[0, "profile"] = json.dumps({"age": "40", "gun_index_2": "0.9"})  # a wave-2 answer
    leaky.to_parquet(tmp_path / "results" / "clean" / "interactions.parquet")
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    log = (tmp_path / "results/logs/prompts_gun_control.log").read_text()
    assert "'gun_index_2' looks post-treatment" in log
