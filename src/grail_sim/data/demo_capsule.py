"""A synthetic capsule in the exact layout of CodeOcean capsule 5416997, with a known behaviour model.

The demo exists so that the default workflow (and every test) runs the clean stage exactly as on the
real data, and so that a small model trained on it can visibly learn something on a laptop CPU.
Its figures are properties of the generator below, never findings about people: README.md
documents the behaviour model.

Behaviour model (module constants, echoed into the ground truth file; the population, the signal
strength and the position weights are knobs, `data.demo.leaning_shares`, `data.demo.stance_match_prob`
and `data.demo.position_weights`):
- Every video has a stance on its issue ("conservative": pro-gun / against raising the wage, or
  "liberal": for stricter gun laws / for raising the wage) that its title and channel state plainly.
- Every participant is liberal, moderate or conservative, drawn in LEANING_SHARES by default: the
  real study-2 viewers' stated ideologies (docs/clean.md), used for every study since the real rows
  cover study 2 only. Their wave-1 profile (ideology, party, issue attitude, pre-study index)
  states that leaning most of the time; a moderate's states no side.
- Each step shows 2-5 options drawn from the current video's recommendation-tree row, always mixing
  both stances. A liberal or conservative viewer picks, with probability `stance_match_prob`
  (STANCE_MATCH_PROB by default; 0 = no signal), among the options matching their leaning and
  otherwise among all options; within the candidates, by the position weights (POSITION_WEIGHTS by
  default). A moderate has no stance to match: their choice depends on position only.
- The wave-2 index moves a little toward the stance of what was watched, plus noise.

The capsule also carries the faults the clean stage must handle (attention-check failures, short
surveys, out-of-range indices, control-arm rows, duplicate survey rows, missing values, sessions with
no logged slate for a step, choices outside the displayed slate, too-short and duplicate sessions).
`demo_ground_truth.json` beside the data records what was generated, for the round-trip test, and
what an oracle needs (each video's stance, each participant's leaning under the hashed id the clean
stage writes): `demo_oracle.py` turns it into each row's Bayes-optimal choice probabilities.

This module holds the behaviour model and the generator; the stance-bearing vocabulary is in
`demo_vocabulary.py` and the capsule's paths and file writers in `demo_layout.py`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from grail_sim.data.contract import participant_hash

# GROUND_TRUTH_FILE is re-exported: readers of the ground truth import it from the generator.
from grail_sim.data.demo_layout import GROUND_TRUTH_FILE, write_capsule_files  # noqa: F401
from grail_sim.data.demo_vocabulary import (
    ARM_SEED_STANCE,
    CHANNELS,
    GUN_OWN,
    GUN_PRIORITY,
    IDEOLOGY,
    MINWAGE_VIEW,
    MODERATE_PARTIES,
    OTHER_SIDE,
    PARTY,
    SIDES,
    STUDY_ISSUE,
    TITLE_SUFFIXES,
    TITLES,
    TOPIC_IDS,
)
from grail_sim.simulation.slates import ARM_SAME_STANCE_SHARE, draw_slate

# The behaviour model.
# The real study-2 rows (../shared/real/next_video_study2.jsonl, 364 rows) state ideology liberal in
# 160, moderate in 103, conservative in 92 and "haven't thought much about it" in 9: 45% / 29% / 25%
# / 2.5%. Those who state none join the moderates (their profile names no side), hence 31%.
LEANING_SHARES = {"liberal": 0.45, "moderate": 0.31, "conservative": 0.24}
INDEX_CENTER = {"liberal": 0.3, "moderate": 0.5, "conservative": 0.7}  # pre-study index (1 = conservative)
STANCE_MATCH_PROB = 0.70
POSITION_WEIGHTS = (1.0, 0.8, 0.6, 0.45, 0.35)  # position bias over displayed slots 1..5
SLATE_SIZES = (2, 3, 4, 5)
TREE_RECS = 5
VIDEOS_PER_STANCE = 60
STUDY_SHARES = {"study1": 1650, "study2": 1679, "study3": 2715}  # the paper's allowed counts
CONTROL_SHARE = 0.15
UNLOGGED_SLATE_PROB = 0.03  # a step whose displayOrders entry is missing (tree fallback)
OFF_SLATE_CHOICE_PROB = 0.02  # the next video was not among the displayed options
OPINION_SHIFT = 0.06  # maximum move of the index toward the watched stance (all one side)
OPINION_NOISE = 0.02

_START_MS = 1_600_000_000_000  # the logged sessions' start time (epoch ms)

_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


class _Ids:
    """Unique 11-character YouTube-like ids."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.seen = rng, set()

    def new(self) -> str:
        while True:
            vid = "".join(self.rng.choice(_ID_ALPHABET, 11))
            if vid not in self.seen:
                self.seen.add(vid)
                return vid


def _make_videos(rng: np.random.Generator, ids: _Ids) -> dict[str, dict]:
    videos: dict[str, dict] = {}
    for (issue, stance), titles in TITLES.items():
        for k in range(VIDEOS_PER_STANCE):
            vid = ids.new()
            title = titles[k % len(titles)] + TITLE_SUFFIXES[(k // len(titles)) % len(TITLE_SUFFIXES)]
            channel = CHANNELS[(issue, stance)][k % len(CHANNELS[(issue, stance)])]
            videos[vid] = {
                "id": vid, "issue": issue, "stance": stance, "title": title, "channel": channel,
                "duration_s": int(rng.integers(90, 1500)), "views": int(rng.lognormal(11, 1.5)),
            }
    for vid, video in videos.items():
        same = [v for v, o in videos.items() if o["issue"] == video["issue"] and o["stance"] == video["stance"] and v != vid]
        other = [v for v, o in videos.items() if o["issue"] == video["issue"] and o["stance"] != video["stance"]]
        recs = list(rng.choice(same, 3, replace=False)) + list(rng.choice(other, TREE_RECS - 3, replace=False))
        video["recs"] = [str(r) for r in rng.permutation(recs)]
    return videos


def _choose(rng: np.random.Generator, slate_stances: list[str], leaning: str,
            match_prob: float = STANCE_MATCH_PROB, position_weights: tuple = POSITION_WEIGHTS) -> int:
    """0-based index of the chosen option under the behaviour model.

    The uniform draw is made whenever an option matches, whatever `match_prob` is, so a different
    signal strength changes the choices but never shifts the rest of the random stream.
    """
    weights = np.array(position_weights[: len(slate_stances)], dtype=float)
    matching = np.array([s == leaning for s in slate_stances], dtype=float)
    if matching.any() and rng.random() < match_prob:
        weights = weights * matching
    return int(rng.choice(len(slate_stances), p=weights / weights.sum()))


def _display_slate(rng: np.random.Generator, videos: dict, current: str, arm_mix: str) -> list[str]:
    """2-5 of the current video's tree recommendations under the platform's slate rule for the arm's mix."""
    size = int(rng.choice(SLATE_SIZES))
    stances = {vid: videos[vid]["stance"] for vid in [current, *videos[current]["recs"]]}
    return draw_slate(rng, videos[current]["recs"], stances, current, ARM_SAME_STANCE_SHARE[arm_mix], size)


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _stated_side(rng: np.random.Generator, leaning: str) -> str:
    """The leaning a profile states: the true one 90% of the time (profiles are informative, not
    exact); otherwise the other side for a partisan and a side drawn at random for a moderate."""
    if rng.random() < 0.9:
        return leaning
    return OTHER_SIDE[leaning] if leaning in OTHER_SIDE else str(rng.choice(SIDES))


def _profile(rng: np.random.Generator, leaning: str, issue: str, study: str) -> tuple[dict, float]:
    """Wave-1 answers and the pre-study index (higher = more conservative)."""
    shown = _stated_side(rng, leaning)
    center = INDEX_CENTER[leaning]
    index = _clip01(rng.normal(center, 0.15))
    age = str(int(rng.integers(18, 80)))
    ideology = str(rng.choice(IDEOLOGY[shown])) if rng.random() > 0.08 else "Moderate"
    party_draw = rng.random()
    if shown == "moderate":
        party = str(rng.choice(MODERATE_PARTIES))
    else:
        party = PARTY[shown] if party_draw > 0.15 else "Independent"
    # A moderate's issue answers come from either side: an answer never states a leaning they lack.
    side = shown if shown in OTHER_SIDE else str(rng.choice(SIDES))
    interest = str(rng.choice(["Very interested", "Somewhat interested", "Not very interested"]))
    youtube = str(rng.choice(["Every day", "Several times a week", "About once a week", "Less often"]))
    race = str(rng.choice(["White", "Black", "Hispanic", "Asian", "Other"], p=[0.62, 0.13, 0.13, 0.07, 0.05]))
    income = str(rng.choice(["Less than $30,000", "$30,000 - $59,999", "$60,000 - $99,999", "$100,000 or more"]))
    gender = str(rng.choice(["Male", "Female"]))
    if study == "study3":  # YouGov column names
        profile = {"age": age, "gender": gender, "race": race, "income": income,
                   "educ": str(rng.choice(["High school graduate", "Some college", "4-year", "Post-grad"])),
                   "pid": party, "ideo": ideology, "pol_interest": interest, "freq_youtube": youtube,
                   "minwage15_w1": str(rng.choice(MINWAGE_VIEW[shown]))}
    else:
        profile = {"age": age, "q26": gender, "q29": race, "q31": income, "college": str(int(rng.random() < 0.45)),
                   "pid1": party, "ideo1": ideology, "pol_interest": interest, "freq_youtube": youtube}
        if issue == "gun_control":
            profile |= {"gun_own": GUN_OWN[side] if rng.random() > 0.2 else GUN_OWN[OTHER_SIDE[side]],
                        "gun_priority": GUN_PRIORITY[side],
                        "gun_importance": str(rng.choice(["Very important", "Somewhat important", "Not important"]))}
        else:
            profile |= {"minwage15_w1": str(rng.choice(MINWAGE_VIEW[shown])),
                        "minwage_importance_w1": str(rng.choice(["Very important", "Somewhat important"]))}
    for key in list(profile):  # scattered missing answers, as in the real exports
        if key != "age" and rng.random() < 0.03:
            profile[key] = ""
    return profile, index


def _ms_times(rng: np.random.Generator, vids: list[str], videos: dict, as_list: bool) -> tuple:
    watched = {v: int(rng.uniform(0.2, 1.0) * videos[v]["duration_s"] * 1000) for v in vids}
    total = {v: int(videos[v]["duration_s"] * 1000) for v in vids}
    if as_list:
        return [watched[v] for v in vids], [total[v] for v in vids]
    return watched, total


@dataclass
class _World:
    """What every participant draws from: the one random stream, the id maker and the videos.

    Every draw goes through `rng` in a fixed order, so a seed gives the same capsule byte for byte.
    """

    rng: np.random.Generator
    ids: _Ids
    videos: dict[str, dict]
    by_issue_stance: dict[tuple[str, str], list[str]]
    match_prob: float = STANCE_MATCH_PROB
    position_weights: tuple = POSITION_WEIGHTS
    leaning_shares: dict = field(default_factory=lambda: dict(LEANING_SHARES))


@dataclass
class _Person:
    """One participant's drawn traits: leaning, wave-1 answers, arm, ids and survey-quality outcomes."""

    study: str
    issue: str
    leaning: str
    profile: dict
    index_w1: float
    arm: str
    worker: str
    urlid: str
    attention_ok: bool
    q89_ok: bool
    survey_time: int
    pro_missing: bool
    seed_stance: str
    seed_video: str
    mix: str


@dataclass
class _Walk:
    """One simulated session: the watched videos, the logged slates and what clean should keep."""

    vids: list[str]
    display_orders: dict[str, list[str]] = field(default_factory=dict)
    watched_stances: list[str] = field(default_factory=list)
    rows: list[tuple[int, int]] = field(default_factory=list)  # (gold position 1-based, slate size) per kept step
    stance_hits: int = 0
    displayed_rows: int = 0


@dataclass
class _Tally:
    """The ground truth as it accumulates: the rows clean must produce and the faults written."""

    positions: Counter = field(default_factory=Counter)
    positions_by_size: dict[int, Counter] = field(default_factory=dict)
    stance_rule_hits: int = 0
    displayed_rows: int = 0
    faults: Counter = field(default_factory=Counter)
    expected_rows: int = 0
    expected_participants: Counter = field(default_factory=Counter)
    leanings: dict[str, str] = field(default_factory=dict)  # hashed participant id -> true leaning


def write_demo_capsule(out: str | Path, *, participants: int, seed: int, stance_match_prob: float = STANCE_MATCH_PROB,
                       position_weights: tuple | list = POSITION_WEIGHTS,
                       leaning_shares: Mapping[str, float] | None = None) -> dict:
    """Write the capsule to `out` (atomically, replacing it) and return the ground truth.

    `stance_match_prob` is the signal strength (0: choices depend on position only),
    `position_weights` the weights of display slots 1..5 and `leaning_shares` the population's
    liberal / moderate / conservative shares (LEANING_SHARES by default); all are recorded in the
    ground truth.
    """
    shares = check_leaning_shares(LEANING_SHARES if leaning_shares is None else leaning_shares)
    position_weights = tuple(float(w) for w in position_weights)
    if not 0.0 <= stance_match_prob <= 1.0:
        raise ValueError(f"stance_match_prob must lie in [0, 1] (got {stance_match_prob})")
    if len(position_weights) < max(SLATE_SIZES) or min(position_weights) <= 0:
        raise ValueError(f"position_weights needs {max(SLATE_SIZES)} positive weights (got {list(position_weights)})")
    rng = np.random.default_rng(seed)
    ids = _Ids(rng)
    videos = _make_videos(rng, ids)
    by_issue_stance: dict[tuple[str, str], list[str]] = {}
    for vid, video in videos.items():
        by_issue_stance.setdefault((video["issue"], video["stance"]), []).append(vid)
    world = _World(rng, ids, videos, by_issue_stance, float(stance_match_prob), position_weights, shares)

    total_share = sum(STUDY_SHARES.values())
    counts = {s: max(1, round(participants * n / total_share)) for s, n in STUDY_SHARES.items()}
    sessions: list[dict] = []
    surveys: dict[str, list[dict]] = {"study1_w1": [], "study1": [], "study2": [], "study3": []}
    tally = _Tally()
    for study, n_people in counts.items():
        for _ in range(n_people):
            _simulate_participant(world, study, sessions, surveys, tally)
    truth = _ground_truth(counts, seed, len(sessions), tally, world)
    write_capsule_files(out, videos, sessions, surveys, truth, n_recs=TREE_RECS)
    return truth


def check_leaning_shares(shares: Mapping[str, float]) -> dict[str, float]:
    """`shares` as a dict in LEANING_SHARES' order, or ValueError naming what is wrong.

    Exactly the keys liberal, moderate and conservative, each in [0, 1], summing to 1 (within 1e-6).
    """
    shares = dict(shares)
    if set(shares) != set(LEANING_SHARES):
        raise ValueError(f"data.demo.leaning_shares needs exactly the keys {', '.join(LEANING_SHARES)} "
                         f"(got {', '.join(sorted(shares)) or 'none'})")
    values = {name: float(shares[name]) for name in LEANING_SHARES}
    if any(not 0.0 <= v <= 1.0 for v in values.values()) or abs(sum(values.values()) - 1.0) > 1e-6:
        raise ValueError(f"data.demo.leaning_shares must be shares in [0, 1] summing to 1 (got {values})")
    return values


def _simulate_participant(world: _World, study: str, sessions: list[dict], surveys: dict, tally: _Tally) -> None:
    """One participant: traits, one session, wave-2 index, survey rows and the session log entry."""
    person = _draw_person(world, study)
    walk = _walk_session(world, person, tally.faults)
    index_w2, after_missing = _index_after(world.rng, person.index_w1, walk.watched_stances)
    _add_survey_rows(world, person, index_w2, after_missing, surveys, tally.faults)
    _add_session(world, person, walk, sessions, tally.faults)
    _count_expected(person, walk, tally)
    # The key clean hashes is the study's participant key: worker_id (studies 1-2) or caseid (3).
    tally.leanings[participant_hash(study, person.worker)] = person.leaning


def _draw_person(world: _World, study: str) -> _Person:
    rng, issue = world.rng, STUDY_ISSUE[study]
    leanings = list(world.leaning_shares)
    leaning = leanings[int(rng.choice(len(leanings), p=[world.leaning_shares[name] for name in leanings]))]
    profile, index_w1 = _profile(rng, leaning, issue, study)
    arm = "control" if rng.random() < CONTROL_SHARE else str(rng.choice(["pro_31", "pro_22", "anti_31", "anti_22"]))
    worker = f"{'YG' if study == 'study3' else 'A'}{rng.integers(10**9, 10**10)}"
    urlid = f"u{world.ids.new()}"
    attention_ok = rng.random() > 0.05
    q89_ok = rng.random() > 0.03
    survey_time = int(rng.integers(60, 119)) if rng.random() < 0.04 else int(rng.integers(120, 1800))
    pro_missing = rng.random() < 0.01
    seed_stance = ARM_SEED_STANCE[issue][arm.split("_")[0]] if arm != "control" else str(rng.choice(["liberal", "conservative"]))
    seed_video = str(rng.choice(world.by_issue_stance[(issue, seed_stance)]))
    mix = arm.split("_")[1] if arm != "control" else "22"
    if study == "study3":
        # The YouGov study has no attention checks or survey-time filter; the draws above are
        # still made so that every study consumes the random stream alike.
        attention_ok = q89_ok = True
        survey_time = 999
    return _Person(study, issue, leaning, profile, index_w1, arm, worker, urlid, attention_ok, q89_ok,
                   survey_time, pro_missing, seed_stance, seed_video, mix)


def _walk_session(world: _World, person: _Person, faults: Counter) -> _Walk:
    """The seed video, then 0-6 choices under the behaviour model (a few sessions are too short)."""
    rng, videos = world.rng, world.videos
    n_choices = int(rng.choice([0, 2, 3, 4, 5, 6], p=[0.03, 0.07, 0.18, 0.30, 0.25, 0.17]))
    walk = _Walk(vids=[person.seed_video])
    for step in range(n_choices):
        current = walk.vids[-1]
        slate = _display_slate(rng, videos, current, person.mix)
        choice = _choose(rng, [videos[v]["stance"] for v in slate], person.leaning, world.match_prob,
                         world.position_weights)
        chosen = slate[choice]
        off_slate = rng.random() < OFF_SLATE_CHOICE_PROB
        if off_slate:  # e.g. the participant used the back button: a video not on offer
            # a video of the viewer's side; a moderate's of either side
            sides = [person.leaning] if person.leaning in OTHER_SIDE else list(SIDES)
            on_side = [v for side in sides for v in world.by_issue_stance[(person.issue, side)]]
            chosen = str(rng.choice([v for v in on_side if v not in slate]))
        unlogged = rng.random() < UNLOGGED_SLATE_PROB
        if unlogged:
            # The platform served the tree's row; the log lost it. Clean falls back to the tree.
            seen_slate = videos[current]["recs"]
        else:
            walk.display_orders[f"{step + 2}-recs"] = slate
            seen_slate = slate
        walk.vids.append(chosen)
        walk.watched_stances.append(videos[chosen]["stance"])
        if chosen in seen_slate:
            walk.rows.append((seen_slate.index(chosen) + 1, len(seen_slate)))
            if not unlogged:
                walk.displayed_rows += 1
                first_match = next((i for i, v in enumerate(slate) if videos[v]["stance"] == person.leaning), None)
                walk.stance_hits += int(first_match == choice and not off_slate)
        else:
            faults["off_slate_choice"] += 1
    return walk


def _index_after(rng: np.random.Generator, index_w1: float, watched_stances: list[str]) -> tuple[float, bool]:
    """The wave-2 index (moved toward the watched stance, plus noise) and whether it is missing."""
    lean = sum(s == "conservative" for s in watched_stances) - sum(s == "liberal" for s in watched_stances)
    shift = OPINION_SHIFT * lean / max(1, len(watched_stances))
    index_w2 = _clip01(index_w1 + shift + rng.normal(0, OPINION_NOISE))
    return index_w2, rng.random() < 0.02


def _add_survey_rows(world: _World, person: _Person, index_w2: float, after_missing: bool, surveys: dict,
                     faults: Counter) -> None:
    """Survey rows (all strings), including wave-2 outcome columns the clean stage must ignore."""
    rng, study = world.rng, person.study
    start = f"2021-0{int(rng.integers(1, 9))}-{int(rng.integers(10, 28))} {int(rng.integers(10, 23))}:00:00"
    other_side = world.by_issue_stance[(person.issue, OTHER_SIDE[person.seed_stance])]
    base = {"urlid": person.urlid, "treatment_arm": person.arm, "pro": "" if person.pro_missing else person.seed_video,
            "anti": str(rng.choice(other_side)), **person.profile}
    after = "" if after_missing else _fmt(index_w2)
    q87 = "Quick and easy" if person.attention_ok else "Difficult"
    q89 = "wikiHow" if person.q89_ok else "Wikipedia"
    if study == "study1":
        surveys["study1_w1"].append({"worker_id": person.worker, "q87": q87, "q89": q89,
                                     "survey_time": str(person.survey_time), "gun_index": _fmt(person.index_w1),
                                     **person.profile})
        row = {"worker_id": person.worker, "start_time2": start, **base, "gun_index": _fmt(person.index_w1),
               "gun_index_2": after, "gun_importance_2": str(rng.choice(["Very important", "Somewhat important"])),
               "pol_interest_w2": "Very interested"}
    elif study == "study2":
        row = {"worker_id": person.worker, "start_time2": start, "q87": q87, "q89": q89,
               "survey_time": str(person.survey_time), **base, "mw_index_w1": _fmt(person.index_w1),
               "mw_index_w2": after, "minwage15_w2": str(rng.choice(MINWAGE_VIEW[person.leaning]))}
    else:
        row = {"caseid": person.worker, "starttime": start, **base, "mw_index_w1": _fmt(person.index_w1),
               "mw_index_w2": after, "minwage15_w2": str(rng.choice(MINWAGE_VIEW[person.leaning]))}
    surveys[study].append(row)
    # A duplicate survey row (a retake): later start, its own urlid; the earliest row wins.
    if rng.random() < 0.02:
        dup = dict(row, urlid=f"u{world.ids.new()}")
        dup["start_time2" if study != "study3" else "starttime"] = "2021-12-31 23:00:00"
        surveys[study].append(dup)
        faults["duplicate_survey_rows"] += 1


def _add_session(world: _World, person: _Person, walk: _Walk, sessions: list[dict], faults: Counter) -> None:
    """The session's sessions.json entry in the platform's format (now and then logged twice)."""
    rng, ids, vids = world.rng, world.ids, walk.vids
    started = _START_MS + 60_000 * len(sessions)
    watch, total = _ms_times(rng, vids, world.videos, as_list=bool(rng.random() < 0.5))
    session = {
        "sessionID": f"s{ids.new()}", "anonymousFirebaseAuthUID": f"fb{ids.new()}",
        "topicId": str(rng.choice(TOPIC_IDS[person.issue])), "urlid": person.urlid,
        # Logged ids sometimes carry a suffix after the 11-character id.
        "vids": [v + ("&t=0s" if rng.random() < 0.05 else "") for v in vids],
        "displayOrders": walk.display_orders, "vidWatchTimes": watch, "vidTotalLengths": total,
        "vidStartTimes": {v: started + 1000 * k for k, v in enumerate(vids)},
        "vidEndTimes": {v: started + 1000 * k + 500 for k, v in enumerate(vids)},
        "percentVisible": round(float(rng.uniform(0.6, 1.0)), 3),
        # Sessions start a minute apart in the order they are logged (no random draw: the stream is unchanged).
        "sessionFinished": bool(len(vids) > 1), "startTime": started, "endTime": started + 600_000,
    }
    sessions.append(session)
    if rng.random() < 0.01:  # the platform logged the same session twice
        sessions.append(json.loads(json.dumps(session)))
        faults["duplicate_sessions"] += 1


def _count_expected(person: _Person, walk: _Walk, tally: _Tally) -> None:
    """Add the rows clean must keep: an allow-listed participant's usable steps (the same filters)."""
    ranges = {"study1": (0.05, 0.95), "study2": (0.025, 0.975)}
    low, high = ranges.get(person.study, (0.0, 1.0))
    index_in_range = person.study not in ranges or low <= person.index_w1 <= high
    allowed = (person.arm != "control" and not person.pro_missing and person.attention_ok and person.q89_ok
               and person.survey_time >= 120 and index_in_range)
    if allowed and walk.rows:
        tally.expected_participants[person.study] += 1
        tally.expected_rows += len(walk.rows)
        tally.stance_rule_hits += walk.stance_hits
        tally.displayed_rows += walk.displayed_rows
        for position, size in walk.rows:
            tally.positions[position] += 1
            tally.positions_by_size.setdefault(size, Counter())[position] += 1
    elif not walk.rows:
        tally.faults["too_short_sessions"] += 1


def _ground_truth(counts: dict[str, int], seed: int, sessions_written: int, tally: _Tally, world: _World) -> dict:
    expected_rows = tally.expected_rows
    truth = {
        "participants": sum(counts.values()), "participants_by_study": counts, "seed": seed,
        "sessions_written": sessions_written, "expected_rows": expected_rows,
        "expected_participants_by_study": dict(tally.expected_participants),
        "gold_position_counts": {str(k): v for k, v in sorted(tally.positions.items())},
        "gold_position_counts_by_n_options": {str(n): {str(k): v for k, v in sorted(c.items())}
                                              for n, c in sorted(tally.positions_by_size.items())},
        # The "stance rule" predicts the first displayed option matching the viewer's true leaning.
        "stance_rule_hits_displayed": tally.stance_rule_hits,
        "displayed_rows": tally.displayed_rows,
        "faults": dict(tally.faults),
        "behaviour_model": {"stance_match_prob": world.match_prob, "position_weights": list(world.position_weights),
                            "leaning_shares": dict(world.leaning_shares),
                            "leaning_counts": dict(sorted(Counter(tally.leanings.values()).items())),
                            "slate_sizes": list(SLATE_SIZES), "unlogged_slate_prob": UNLOGGED_SLATE_PROB,
                            "off_slate_choice_prob": OFF_SLATE_CHOICE_PROB, "opinion_shift": OPINION_SHIFT,
                            "opinion_noise": OPINION_NOISE, "control_share": CONTROL_SHARE},
        # What demo_oracle.py needs for each row's Bayes-optimal choice probabilities.
        "oracle": {"participant_id": "sha256('{study}:{participant key}')[:16], as the clean stage writes it",
                   "leaning_by_participant": dict(sorted(tally.leanings.items())),
                   "stance_by_video": {vid: video["stance"] for vid, video in sorted(world.videos.items())}},
    }
    if expected_rows:
        truth["most_frequent_position_share"] = max(tally.positions.values()) / expected_rows
        truth["stance_rule_accuracy_displayed"] = tally.stance_rule_hits / max(1, tally.displayed_rows)
        truth["random_baseline"] = sum(c / int(n) for n, by_position in truth["gold_position_counts_by_n_options"].items()
                                       for c in by_position.values()) / expected_rows
    return truth
