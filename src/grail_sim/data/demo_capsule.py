"""A synthetic capsule in the exact layout of CodeOcean capsule 5416997, with a known behaviour model.

The demo exists so that the default workflow (and every test) runs the clean stage exactly as on the
real data, and so that a small model trained on it can visibly learn something on a laptop CPU.
Its figures are properties of the generator below, never findings about people: README.md
documents the behaviour model.

Behaviour model (all probabilities are module constants, echoed into the ground truth file):
- Every video has a stance on its issue ("conservative": pro-gun / against raising the wage, or
  "liberal": for stricter gun laws / for raising the wage) that its title and channel state plainly.
- Every participant leans one way; their wave-1 profile (ideology, party, issue attitude, pre-study
  index) states that leaning most of the time.
- Each step shows 2-5 options drawn from the current video's recommendation-tree row, always mixing
  both stances. The viewer picks, with probability STANCE_MATCH_PROB, among the options matching
  their leaning and otherwise among all options; within the candidates, by POSITION_WEIGHTS.
- The wave-2 index moves a little toward the stance of what was watched, plus noise.

The capsule also carries the faults the clean stage must handle (attention-check failures, short
surveys, out-of-range indices, control-arm rows, duplicate survey rows, missing values, sessions with
no logged slate for a step, choices outside the displayed slate, too-short and duplicate sessions).
`demo_ground_truth.json` beside the data records what was generated, for the round-trip test.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from grail_sim.io import atomic_dir, write_json

log = logging.getLogger(__name__)


SESSIONS_PATH = Path("data/platform session data/sessions.json")


TREES_DIR = Path("data/recommendation trees")


SURVEY_DIR = Path("results/intermediate data")


GUN_DIR = "gun control (issue 1)"


WAGE_DIR = "minimum wage (issue 2)"


GROUND_TRUTH_FILE = "demo_ground_truth.json"


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


_ID_ALPHABET = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))


# Stance-bearing vocabulary: the stance is readable from the title and from the channel name.
_TITLES = {
    ("gun_control", "conservative"): [
        "Why the Second Amendment Protects Every Family",
        "Gun Control Laws Do Not Stop Criminals",
        "Armed Citizens Stop Crime: The Facts",
        "Defend Your Gun Rights Before They Are Gone",
        "The Truth About Concealed Carry Saving Lives",
        "Gun Bans Fail: What the Data Shows",
    ],
    ("gun_control", "liberal"): [
        "Stricter Gun Laws Save Lives",
        "Universal Background Checks Now",
        "Ban Assault Weapons: The Case for Reform",
        "How Gun Control Reduced Deaths in Other Countries",
        "We Need Common-Sense Gun Safety Laws",
        "Too Many Guns, Too Many Funerals",
    ],
    ("minimum_wage", "conservative"): [
        "A $15 Minimum Wage Kills Small Business Jobs",
        "Why Raising the Minimum Wage Hurts Workers",
        "Minimum Wage Hikes Mean Automation and Layoffs",
        "The Economics Against a Higher Minimum Wage",
        "Let the Market Set Wages, Not Washington",
        "Small Business Owners Say No to $15",
    ],
    ("minimum_wage", "liberal"): [
        "Workers Deserve a Living Wage: Raise It to $15",
        "Raising the Minimum Wage Lifts Families Out of Poverty",
        "Fight for $15: Why Higher Pay Helps Everyone",
        "No One Working Full Time Should Be Poor",
        "The Case for Raising the Minimum Wage Now",
        "Higher Wages Boost the Whole Economy",
    ],
}


_CHANNELS = {
    ("gun_control", "conservative"): ["Gun Rights Defenders", "Second Amendment Channel", "Armed Citizen Report"],
    ("gun_control", "liberal"): ["Safer Streets Now", "Gun Safety Coalition", "End Gun Violence TV"],
    ("minimum_wage", "conservative"): ["Free Market Economics", "Small Business Voice", "Job Creators Network"],
    ("minimum_wage", "liberal"): ["Living Wage Alliance", "Fair Pay Now", "Workers First Media"],
}


_TITLE_SUFFIXES = ["", " (Part 2)", " | Full Interview", " - Explained", " | Debate Highlights",
                   " - Documentary", " | News Report", " (Must Watch)", " - Town Hall", " | Podcast Clip"]


_IDEOLOGY = {"liberal": ["Very liberal", "Liberal", "Somewhat liberal"],
             "conservative": ["Very conservative", "Conservative", "Somewhat conservative"]}


_PARTY = {"liberal": "Democrat", "conservative": "Republican"}


_GUN_PRIORITY = {"liberal": "Reducing gun violence", "conservative": "Protecting gun rights"}


_GUN_OWN = {"liberal": "No", "conservative": "Yes"}


_MINWAGE_VIEW = {"liberal": ["Strongly support", "Somewhat support"],
                 "conservative": ["Strongly oppose", "Somewhat oppose"]}


_OTHER_SIDE = {"liberal": "conservative", "conservative": "liberal"}


# Arm names as in the experiment; in the demo `pro` seeds a video on the issue's "pro" side
# (pro-gun for gun control, pro-raise for the minimum wage), `31` / `22` is the recommendation mix.
_ARM_SEED_STANCE = {
    "gun_control": {"pro": "conservative", "anti": "liberal"},
    "minimum_wage": {"pro": "liberal", "anti": "conservative"},
}


_STUDY_ISSUE = {"study1": "gun_control", "study2": "minimum_wage", "study3": "minimum_wage"}


_TOPIC_IDS = {"gun_control": ["gun_control", "GunControl-v2", "guns"], "minimum_wage": ["min_wage", "minimum_wage", "MinWage-2"]}


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
    for (issue, stance), titles in _TITLES.items():
        for k in range(VIDEOS_PER_STANCE):
            vid = ids.new()
            title = titles[k % len(titles)] + _TITLE_SUFFIXES[(k // len(titles)) % len(_TITLE_SUFFIXES)]
            channel = _CHANNELS[(issue, stance)][k % len(_CHANNELS[(issue, stance)])]
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


def _iso_duration(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"PT{minutes}M{secs}S" if minutes else f"PT{secs}S"


def _trees_csv(videos: dict[str, dict], issue: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["originId", "originTitle", "originChannel", "originChannelId", "originDescription",
                     "originDuration", "originViewCount", "originLikeCount", "originDislikeCount",
                     "originFavoriteCount", "originCommentCount", *[f"rec{i + 1}" for i in range(TREE_RECS)]])
    for video in videos.values():
        if video["issue"] != issue:
            continue
        views = video["views"]
        writer.writerow([video["id"], video["title"], video["channel"], "UC" + video["channel"].replace(" ", "")[:20],
                         f"{video['title']}. Synthetic demo description.", _iso_duration(video["duration_s"]),
                         views, views // 40, views // 900, 0, views // 300, *video["recs"]])
    return buffer.getvalue()


def _choose(rng: np.random.Generator, slate_stances: list[str], leaning: str) -> int:
    """0-based index of the chosen option under the behaviour model."""
    weights = np.array(POSITION_WEIGHTS[: len(slate_stances)])
    matching = np.array([s == leaning for s in slate_stances], dtype=float)
    if matching.any() and rng.random() < STANCE_MATCH_PROB:
        weights = weights * matching
    return int(rng.choice(len(slate_stances), p=weights / weights.sum()))


def _display_slate(rng: np.random.Generator, videos: dict, current: str, arm_mix: str) -> list[str]:
    """2-5 of the current video's tree recommendations, always mixing both stances."""
    recs = videos[current]["recs"]
    stance = videos[current]["stance"]
    size = int(rng.choice(SLATE_SIZES))
    same = [r for r in recs if videos[r]["stance"] == stance]
    other = [r for r in recs if videos[r]["stance"] != stance]
    n_same = max(1, min(len(same), size - 1, round(size * (0.75 if arm_mix == "31" else 0.5))))
    n_other = min(len(other), size - n_same)
    picked = list(rng.choice(same, n_same, replace=False)) + list(rng.choice(other, n_other, replace=False))
    return [str(v) for v in rng.permutation(picked)]


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def _profile(rng: np.random.Generator, leaning: str, issue: str, study: str) -> tuple[dict, float]:
    """Wave-1 answers and the pre-study index (higher = more conservative)."""
    shown = leaning if rng.random() < 0.9 else _OTHER_SIDE[leaning]  # profiles are informative, not exact
    center = 0.7 if leaning == "conservative" else 0.3
    index = _clip01(rng.normal(center, 0.15))
    age = str(int(rng.integers(18, 80)))
    ideology = str(rng.choice(_IDEOLOGY[shown])) if rng.random() > 0.08 else "Moderate"
    party = _PARTY[shown] if rng.random() > 0.15 else "Independent"
    interest = str(rng.choice(["Very interested", "Somewhat interested", "Not very interested"]))
    youtube = str(rng.choice(["Every day", "Several times a week", "About once a week", "Less often"]))
    race = str(rng.choice(["White", "Black", "Hispanic", "Asian", "Other"], p=[0.62, 0.13, 0.13, 0.07, 0.05]))
    income = str(rng.choice(["Less than $30,000", "$30,000 - $59,999", "$60,000 - $99,999", "$100,000 or more"]))
    gender = str(rng.choice(["Male", "Female"]))
    if study == "study3":  # YouGov column names
        profile = {"age": age, "gender": gender, "race": race, "income": income,
                   "educ": str(rng.choice(["High school graduate", "Some college", "4-year", "Post-grad"])),
                   "pid": party, "ideo": ideology, "pol_interest": interest, "freq_youtube": youtube,
                   "minwage15_w1": str(rng.choice(_MINWAGE_VIEW[shown]))}
    else:
        profile = {"age": age, "q26": gender, "q29": race, "q31": income, "college": str(int(rng.random() < 0.45)),
                   "pid1": party, "ideo1": ideology, "pol_interest": interest, "freq_youtube": youtube}
        if issue == "gun_control":
            profile |= {"gun_own": _GUN_OWN[shown] if rng.random() > 0.2 else _GUN_OWN[_OTHER_SIDE[shown]],
                        "gun_priority": _GUN_PRIORITY[shown],
                        "gun_importance": str(rng.choice(["Very important", "Somewhat important", "Not important"]))}
        else:
            profile |= {"minwage15_w1": str(rng.choice(_MINWAGE_VIEW[shown])),
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


def write_demo_capsule(out: str | Path, *, participants: int, seed: int) -> dict:
    """Write the capsule to `out` (atomically, replacing it) and return the ground truth."""
    rng = np.random.default_rng(seed)
    ids = _Ids(rng)
    videos = _make_videos(rng, ids)
    by_issue_stance: dict[tuple[str, str], list[str]] = {}
    for vid, video in videos.items():
        by_issue_stance.setdefault((video["issue"], video["stance"]), []).append(vid)

    total_share = sum(STUDY_SHARES.values())
    counts = {s: max(1, round(participants * n / total_share)) for s, n in STUDY_SHARES.items()}
    sessions: list[dict] = []
    surveys: dict[str, list[dict]] = {"study1_w1": [], "study1": [], "study2": [], "study3": []}
    truth_positions: Counter = Counter()
    truth_positions_by_size: dict[int, Counter] = {}
    stance_rule_hits = 0
    displayed_rows = 0
    faults: Counter = Counter()
    expected_rows = 0
    expected_participants: Counter = Counter()
    start_ms = 1_600_000_000_000

    for study, n_people in counts.items():
        issue = _STUDY_ISSUE[study]
        for person in range(n_people):
            leaning = "conservative" if rng.random() < 0.5 else "liberal"
            profile, index_w1 = _profile(rng, leaning, issue, study)
            arm = "control" if rng.random() < CONTROL_SHARE else str(rng.choice(["pro_31", "pro_22", "anti_31", "anti_22"]))
            worker = f"{'YG' if study == 'study3' else 'A'}{rng.integers(10**9, 10**10)}"
            urlid = f"u{ids.new()}"
            attention_ok = rng.random() > 0.05
            q89_ok = rng.random() > 0.03
            survey_time = int(rng.integers(60, 119)) if rng.random() < 0.04 else int(rng.integers(120, 1800))
            pro_missing = rng.random() < 0.01
            seed_stance = _ARM_SEED_STANCE[issue][arm.split("_")[0]] if arm != "control" else str(rng.choice(["liberal", "conservative"]))
            seed_video = str(rng.choice(by_issue_stance[(issue, seed_stance)]))
            mix = arm.split("_")[1] if arm != "control" else "22"

            # One session: the seed video, then 0-6 choices (a few sessions are too short).
            n_choices = int(rng.choice([0, 2, 3, 4, 5, 6], p=[0.03, 0.07, 0.18, 0.30, 0.25, 0.17]))
            vids, display_orders = [seed_video], {}
            watched_stances = []
            session_rows: list[tuple[int, int]] = []  # (gold position 1-based, slate size) per kept step
            session_stance_hits = 0
            session_displayed_rows = 0
            for step in range(n_choices):
                current = vids[-1]
                slate = _display_slate(rng, videos, current, mix)
                choice = _choose(rng, [videos[v]["stance"] for v in slate], leaning)
                chosen = slate[choice]
                off_slate = rng.random() < OFF_SLATE_CHOICE_PROB
                if off_slate:  # e.g. the participant used the back button: a video not on offer
                    chosen = str(rng.choice([v for v in by_issue_stance[(issue, leaning)] if v not in slate]))
                unlogged = rng.random() < UNLOGGED_SLATE_PROB
                if unlogged:
                    # The platform served the tree's row; the log lost it. Clean falls back to the tree.
                    seen_slate = videos[current]["recs"]
                else:
                    key = f"{step + 2}-recs"
                    display_orders[key] = slate
                    seen_slate = slate
                vids.append(chosen)
                watched_stances.append(videos[chosen]["stance"])
                if chosen in seen_slate:
                    session_rows.append((seen_slate.index(chosen) + 1, len(seen_slate)))
                    if not unlogged:
                        session_displayed_rows += 1
                        first_match = next((i for i, v in enumerate(slate) if videos[v]["stance"] == leaning), None)
                        session_stance_hits += int(first_match == choice and not off_slate)
                else:
                    faults["off_slate_choice"] += 1

            shift = OPINION_SHIFT * (sum(s == "conservative" for s in watched_stances) - sum(s == "liberal" for s in watched_stances)) / max(1, len(watched_stances))
            index_w2 = _clip01(index_w1 + shift + rng.normal(0, OPINION_NOISE))
            after_missing = rng.random() < 0.02

            # Survey rows (all strings), including wave-2 outcome columns the clean stage must ignore.
            start = f"2021-0{int(rng.integers(1, 9))}-{int(rng.integers(10, 28))} {int(rng.integers(10, 23))}:00:00"
            base = {"urlid": urlid, "treatment_arm": arm, "pro": "" if pro_missing else seed_video,
                    "anti": str(rng.choice(by_issue_stance[(issue, _OTHER_SIDE[seed_stance])])), **profile}
            if study == "study1":
                surveys["study1_w1"].append({"worker_id": worker, "q87": "Quick and easy" if attention_ok else "Difficult",
                                             "q89": "wikiHow" if q89_ok else "Wikipedia", "survey_time": str(survey_time),
                                             "gun_index": _fmt(index_w1), **profile})
                row = {"worker_id": worker, "start_time2": start, **base, "gun_index": _fmt(index_w1),
                       "gun_index_2": "" if after_missing else _fmt(index_w2),
                       "gun_importance_2": str(rng.choice(["Very important", "Somewhat important"])),
                       "pol_interest_w2": "Very interested"}
                surveys["study1"].append(row)
            elif study == "study2":
                row = {"worker_id": worker, "start_time2": start, "q87": "Quick and easy" if attention_ok else "Difficult",
                       "q89": "wikiHow" if q89_ok else "Wikipedia", "survey_time": str(survey_time), **base,
                       "mw_index_w1": _fmt(index_w1), "mw_index_w2": "" if after_missing else _fmt(index_w2),
                       "minwage15_w2": str(rng.choice(_MINWAGE_VIEW[leaning]))}
                surveys["study2"].append(row)
            else:
                attention_ok = q89_ok = True
                survey_time = 999
                row = {"caseid": worker, "starttime": start, **base, "mw_index_w1": _fmt(index_w1),
                       "mw_index_w2": "" if after_missing else _fmt(index_w2),
                       "minwage15_w2": str(rng.choice(_MINWAGE_VIEW[leaning]))}
                surveys["study3"].append(row)
            # A duplicate survey row (a retake): later start, its own urlid; the earliest row wins.
            if rng.random() < 0.02:
                dup = dict(row, urlid=f"u{ids.new()}")
                dup["start_time2" if study != "study3" else "starttime"] = "2021-12-31 23:00:00"
                surveys[study].append(dup)
                faults["duplicate_survey_rows"] += 1

            watch, total = _ms_times(rng, vids, videos, as_list=bool(rng.random() < 0.5))
            session = {
                "sessionID": f"s{ids.new()}", "anonymousFirebaseAuthUID": f"fb{ids.new()}",
                "topicId": str(rng.choice(_TOPIC_IDS[issue])), "urlid": urlid,
                # Logged ids sometimes carry a suffix after the 11-character id.
                "vids": [v + ("&t=0s" if rng.random() < 0.05 else "") for v in vids],
                "displayOrders": display_orders, "vidWatchTimes": watch, "vidTotalLengths": total,
                "vidStartTimes": {v: start_ms + 1000 * k for k, v in enumerate(vids)},
                "vidEndTimes": {v: start_ms + 1000 * k + 500 for k, v in enumerate(vids)},
                "percentVisible": round(float(rng.uniform(0.6, 1.0)), 3),
                "sessionFinished": bool(len(vids) > 1), "startTime": start_ms, "endTime": start_ms + 600_000,
            }
            sessions.append(session)
            if rng.random() < 0.01:  # the platform logged the same session twice
                sessions.append(json.loads(json.dumps(session)))
                faults["duplicate_sessions"] += 1

            index_in_range = (0.05 <= index_w1 <= 0.95) if study == "study1" else (0.025 <= index_w1 <= 0.975) if study == "study2" else True
            allowed = (arm != "control" and not pro_missing and attention_ok and q89_ok and survey_time >= 120 and index_in_range)
            if allowed and session_rows:
                expected_participants[study] += 1
                expected_rows += len(session_rows)
                stance_rule_hits += session_stance_hits
                displayed_rows += session_displayed_rows
                for position, size in session_rows:
                    truth_positions[position] += 1
                    truth_positions_by_size.setdefault(size, Counter())[position] += 1
            elif not session_rows:
                faults["too_short_sessions"] += 1

    truth = {
        "participants": sum(counts.values()), "participants_by_study": counts, "seed": seed,
        "sessions_written": len(sessions), "expected_rows": expected_rows,
        "expected_participants_by_study": dict(expected_participants),
        "gold_position_counts": {str(k): v for k, v in sorted(truth_positions.items())},
        "gold_position_counts_by_n_options": {str(n): {str(k): v for k, v in sorted(c.items())}
                                              for n, c in sorted(truth_positions_by_size.items())},
        # The "stance rule" predicts the first displayed option matching the viewer's true leaning.
        "stance_rule_hits_displayed": stance_rule_hits,
        "displayed_rows": displayed_rows,
        "faults": dict(faults),
        "behaviour_model": {"stance_match_prob": STANCE_MATCH_PROB, "position_weights": list(POSITION_WEIGHTS),
                            "slate_sizes": list(SLATE_SIZES), "unlogged_slate_prob": UNLOGGED_SLATE_PROB,
                            "off_slate_choice_prob": OFF_SLATE_CHOICE_PROB, "opinion_shift": OPINION_SHIFT,
                            "opinion_noise": OPINION_NOISE, "control_share": CONTROL_SHARE},
    }
    if expected_rows:
        truth["most_frequent_position_share"] = max(truth_positions.values()) / expected_rows
        truth["stance_rule_accuracy_displayed"] = stance_rule_hits / max(1, displayed_rows)
        truth["random_baseline"] = sum(c / int(n) for n, counts in truth["gold_position_counts_by_n_options"].items()
                                       for c in counts.values()) / expected_rows
    _write(out, videos, sessions, surveys, truth)
    return truth


def _csv_text(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="NA" if rows else "")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write(out: str | Path, videos: dict, sessions: list[dict], surveys: dict, truth: dict) -> None:
    with atomic_dir(out) as tmp:
        (tmp / SESSIONS_PATH).parent.mkdir(parents=True)
        (tmp / SESSIONS_PATH).write_text(json.dumps(sessions), encoding="utf-8")
        for issue, short in (("gun_control", "gun"), ("minimum_wage", "wage")):
            folder = tmp / TREES_DIR / f"trees_{short}"
            folder.mkdir(parents=True)
            (folder / f"{short}_tree_demo.csv").write_text(_trees_csv(videos, issue), encoding="utf-8")
        gun, wage = tmp / SURVEY_DIR / GUN_DIR, tmp / SURVEY_DIR / WAGE_DIR
        gun.mkdir(parents=True)
        wage.mkdir(parents=True)
        (gun / "guncontrol_qualtrics_w1_clean.csv").write_text(_csv_text(surveys["study1_w1"]), encoding="utf-8")
        (gun / "guncontrol_qualtrics_w123_clean.csv").write_text(_csv_text(surveys["study1"]), encoding="utf-8")
        (wage / "qualtrics_w12_clean.csv").write_text(_csv_text(surveys["study2"]), encoding="utf-8")
        (wage / "yg_w12_clean.csv").write_text(_csv_text(surveys["study3"]), encoding="utf-8")
        (tmp / "README.md").write_text(
            "Synthetic demo capsule written by `grail-sim demo-capsule`: NOT real participants.\n"
            "Layout of CodeOcean capsule 5416997; behaviour model in grail-sim's README.md.\n", encoding="utf-8")
        write_json(tmp / GROUND_TRUTH_FILE, truth)
