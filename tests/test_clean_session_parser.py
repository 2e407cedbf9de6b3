"""Property tests of the session parser (grail_sim.capsule): ids, display-order keys, steps, times."""

from __future__ import annotations

import math
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from grail_sim.data.capsule import (
    SessionDrop,
    canonical_video_id,
    display_order_step,
    duration_seconds,
    issue_from_topic,
    parse_session,
)

ID_CHARS = string.ascii_letters + string.digits + "-_"
video_ids = st.text(alphabet=ID_CHARS, min_size=11, max_size=11)
suffixes = st.sampled_from(["", "&t=3s", "?list=x", "#t=1"])
KEY_STYLES = ("recs", "int", "digits", "step")


def _key(step: int, style: str):
    return {"recs": f"{step + 2}-recs", "int": step + 2, "digits": str(step + 2), "step": f"step{step}"}[style]


@given(video_ids, suffixes)
def test_canonical_id_is_the_first_eleven_characters(vid, suffix):
    assert canonical_video_id(vid + suffix) == vid
    assert canonical_video_id(f"  {vid}{suffix} ") == vid


@given(st.text(max_size=30))
def test_canonical_id_is_none_or_a_valid_id(text):
    result = canonical_video_id(text)
    assert result is None or (len(result) == 11 and all(c in ID_CHARS for c in result))
    if len(text.strip()) < 11:
        assert result is None


@given(st.integers(min_value=0, max_value=500), st.sampled_from(KEY_STYLES))
def test_every_key_style_names_the_same_step(step, style):
    assert display_order_step(_key(step, style)) == step


@given(st.one_of(st.text(max_size=12), st.integers(), st.none(), st.booleans(), st.floats()))
def test_unrecognised_keys_give_none_or_a_step(key):
    result = display_order_step(key)
    assert result is None or (isinstance(result, int) and result >= 0)


@st.composite
def sessions(draw):
    vids = draw(st.lists(video_ids, min_size=2, max_size=8))
    style = draw(st.sampled_from(KEY_STYLES))
    logged = {}
    for step in range(len(vids) - 1):
        if draw(st.booleans()):
            logged[step] = draw(st.lists(video_ids, min_size=0, max_size=5))
    raw_vids = [v + draw(suffixes) for v in vids]
    watch = draw(st.lists(st.integers(min_value=0, max_value=10**7), min_size=len(vids), max_size=len(vids)))
    as_dict = draw(st.booleans())
    session = {
        "sessionID": "s" + draw(st.text(alphabet=ID_CHARS, max_size=12)),  # "NA"-like ids read as missing
        "urlid": draw(st.text(alphabet=ID_CHARS, max_size=8)),
        "topicId": draw(st.sampled_from(["gun", "min_wage", "GunControl"])),
        "vids": raw_vids,
        "displayOrders": {_key(step, style): slate for step, slate in logged.items()},
        "vidWatchTimes": dict(zip(raw_vids, watch)) if as_dict else watch,
    }
    return session, vids, logged, watch


@settings(max_examples=150, deadline=None)
@given(sessions())
def test_steps_follow_vids_and_the_logged_slates(case):
    session, vids, logged, watch = case
    parsed = parse_session(session)
    assert parsed.vids == vids
    assert len(parsed.steps) == len(vids) - 1
    for step in parsed.steps:
        assert step.current_id == vids[step.step_index] and step.gold_id == vids[step.step_index + 1]
        if step.step_index in logged:
            assert step.slate == list(dict.fromkeys(logged[step.step_index]))  # order kept, repeats removed
            assert len(step.slate) == len(set(step.slate))
        else:
            assert step.slate is None
    if isinstance(session["vidWatchTimes"], list) or len(set(session["vids"])) == len(vids):
        assert parsed.watched_s == [w / 1000 for w in watch]


@settings(max_examples=100, deadline=None)
@given(sessions(), st.sampled_from(KEY_STYLES))
def test_key_style_does_not_change_the_result(case, other_style):
    session, _, logged, _ = case
    restyled = dict(session, displayOrders={_key(step, other_style): slate for step, slate in logged.items()})
    assert [s.slate for s in parse_session(session).steps] == [s.slate for s in parse_session(restyled).steps]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=15),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries(
    {"sessionID": json_values, "vids": json_values, "displayOrders": json_values, "vidWatchTimes": json_values})))
def test_arbitrary_input_parses_or_raises_a_named_drop(obj):
    try:
        parsed = parse_session(obj)
    except SessionDrop as drop:
        assert drop.reason.startswith("session_")
    else:
        assert len(parsed.steps) == len(parsed.vids) - 1 >= 1


@given(st.integers(min_value=0, max_value=10), st.integers(min_value=0, max_value=59), st.integers(min_value=0, max_value=59))
def test_iso_durations(hours, minutes, seconds):
    text = "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + f"{seconds}S"
    assert duration_seconds(text) == hours * 3600 + minutes * 60 + seconds
    assert duration_seconds(str(seconds)) == seconds
    assert math.isnan(duration_seconds("")) and math.isnan(duration_seconds("PT"))


@given(st.text(max_size=20))
def test_topic_names_one_issue_or_none(topic):
    issue = issue_from_topic(topic)
    low = topic.lower()
    if issue == "gun_control":
        assert "gun" in low and "wage" not in low
    elif issue == "minimum_wage":
        assert "wage" in low and "gun" not in low
    else:
        assert ("gun" in low) == ("wage" in low)


def test_session_start_is_read_in_seconds_and_nan_when_unknown():
    session = {"sessionID": "s1", "vids": ["AAAAAAAAAAA", "BBBBBBBBBBB"], "startTime": 1_600_000_060_000}
    assert parse_session(session).started_s == 1_600_000_060.0
    for missing in (None, "NA", "soon"):
        started = parse_session(dict(session, startTime=missing)).started_s
        assert math.isnan(started)
