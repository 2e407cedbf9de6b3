"""The demo capsule's files: the CodeOcean capsule 5416997 paths and the writers of its
sessions.json, recommendation-tree CSVs, survey CSVs, README and ground truth.

`demo_capsule.py` decides what is in them; this module only lays it out as the real capsule does.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from grail_sim.io import atomic_dir, write_json

SESSIONS_PATH = Path("data/platform session data/sessions.json")
TREES_DIR = Path("data/recommendation trees")
SURVEY_DIR = Path("results/intermediate data")
GUN_DIR = "gun control (issue 1)"
WAGE_DIR = "minimum wage (issue 2)"
GROUND_TRUTH_FILE = "demo_ground_truth.json"


def _iso_duration(seconds: int) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"PT{minutes}M{secs}S" if minutes else f"PT{secs}S"


def _trees_csv(videos: dict[str, dict], issue: str, n_recs: int) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["originId", "originTitle", "originChannel", "originChannelId", "originDescription",
                     "originDuration", "originViewCount", "originLikeCount", "originDislikeCount",
                     "originFavoriteCount", "originCommentCount", *[f"rec{i + 1}" for i in range(n_recs)]])
    for video in videos.values():
        if video["issue"] != issue:
            continue
        views = video["views"]
        writer.writerow([video["id"], video["title"], video["channel"], "UC" + video["channel"].replace(" ", "")[:20],
                         f"{video['title']}. Synthetic demo description.", _iso_duration(video["duration_s"]),
                         views, views // 40, views // 900, 0, views // 300, *video["recs"]])
    return buffer.getvalue()


def _csv_text(rows: list[dict]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="NA" if rows else "")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_capsule_files(out: str | Path, videos: dict, sessions: list[dict], surveys: dict, truth: dict, *,
                        n_recs: int) -> None:
    """Write every file of the capsule into `out` at once: a reader never sees half a capsule."""
    with atomic_dir(out) as tmp:
        (tmp / SESSIONS_PATH).parent.mkdir(parents=True)
        (tmp / SESSIONS_PATH).write_text(json.dumps(sessions), encoding="utf-8")
        for issue, short in (("gun_control", "gun"), ("minimum_wage", "wage")):
            folder = tmp / TREES_DIR / f"trees_{short}"
            folder.mkdir(parents=True)
            (folder / f"{short}_tree_demo.csv").write_text(_trees_csv(videos, issue, n_recs), encoding="utf-8")
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
