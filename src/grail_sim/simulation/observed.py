"""The logged sessions the simulation starts from and is compared with (Contract 1 rows).

One session per participant of the issue: their earliest (`session_start_s`, then `session_id`).
Its kept steps, in order, give what the participant chose; their count is how many choices every
simulated session of that participant makes. The sizes of the displayed slates of a mix's sessions
(every split) are the sizes that mix's simulated slates are drawn with: the platform's size is not
logged, only what its rule then showed (a balanced slate of 5 shows 4 when a tree row holds 2
other-stance videos), so each mix keeps its own. Its
first video is the session's seed (the first history item of its first kept step, else that step's
current video). Arms are `{pro|anti}_{31|22}`; a session in another arm is counted and left out.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from grail_sim.errors import SimulationError
from grail_sim.rows import SPLITS, json_list

ARM_PATTERN = re.compile(r"^(pro|anti)_(31|22)$")
REQUIRED_COLUMNS = ("participant_id", "participant_study", "issue", "session_id", "treatment_arm", "step_index",
                    "current_video_id", "history", "n_options", "gold_video_id", "gold_index", "profile",
                    "opinion_before", "split")


@dataclass(frozen=True)
class ObservedSession:
    """A participant's logged session, as far as the simulation needs it."""

    participant_id: str
    participant_study: str
    side: str  # pro / anti
    mix: str  # 31 / 22
    split: str
    seed_video: str
    profile: str  # Contract 1 `profile` JSON
    opinion_before: float
    chosen: tuple[str, ...]  # video chosen at each kept step
    positions: tuple[int, ...]  # its 1-based position
    slate_sizes: tuple[int, ...]
    displayed: tuple[bool, ...]  # whether each step's slate is the displayed one (not a tree fallback)

    @property
    def arm(self) -> str:
        return f"{self.side}_{self.mix}"


def read_clean_table(path: str | Path):
    """The clean stage's interactions.parquet, checked for the columns the simulation reads."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise SimulationError(f"clean table not found: {path} (written by `grail-sim clean`)")
    frame = pd.read_parquet(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise SimulationError(f"{path}: missing column(s) {', '.join(missing)} (Contract 1, docs/DESIGN.md)")
    return frame


def observed_sessions(frame, issue: str, counters: Counter) -> list[ObservedSession]:
    """Each participant's earliest session of `issue` (every split), in participant order."""
    rows = frame[frame["issue"] == issue]
    if rows.empty:
        raise SimulationError(f"the clean table holds no rows of issue {issue!r}")
    start = rows["session_start_s"] if "session_start_s" in rows.columns else 0.0
    rows = rows.assign(_start=start).sort_values(["participant_id", "_start", "session_id", "step_index"])
    sessions = []
    for participant, group in rows.groupby("participant_id", sort=True):
        first = group[group["session_id"] == group["session_id"].iloc[0]]
        counters["participants_with_several_sessions"] += int(group["session_id"].nunique() > 1)
        session = _session(str(participant), first.to_dict("records"), counters)
        if session is not None:
            sessions.append(session)
    if not sessions:
        raise SimulationError(f"no session of issue {issue!r} is in an arm named like pro_31 or anti_22 "
                              f"(treatment_arm values: {dict(counters)})")
    return sessions


def _session(participant: str, steps: list[dict[str, Any]], counters: Counter) -> ObservedSession | None:
    first = steps[0]
    arm = ARM_PATTERN.match(str(first["treatment_arm"]))
    if arm is None:
        counters[f"arm_not_simulated:{first['treatment_arm']}"] += 1
        return None
    history = json_list(first["history"], "history", str(first.get("row_id")))
    seed = str(history[0]["id"]) if history and isinstance(history[0], dict) else str(first["current_video_id"])
    opinion = first.get("opinion_before")
    return ObservedSession(
        participant_id=participant, participant_study=str(first["participant_study"]), side=arm.group(1),
        mix=arm.group(2), split=str(first["split"]), seed_video=seed, profile=str(first.get("profile") or "{}"),
        opinion_before=float(opinion) if opinion is not None else float("nan"),
        chosen=tuple(str(s["gold_video_id"]) for s in steps), positions=tuple(int(s["gold_index"]) for s in steps),
        slate_sizes=tuple(int(s["n_options"]) for s in steps),
        displayed=tuple(str(s.get("slate_source") or "displayed") == "displayed" for s in steps))


def seed_pools(sessions: Iterable[ObservedSession]) -> dict[str, list[str]]:
    """Each side's seed videos, as the sessions of every split started."""
    pools: dict[str, list[str]] = {}
    for session in sessions:
        pools.setdefault(session.side, []).append(session.seed_video)
    return pools


def slate_size_pools(sessions: Iterable[ObservedSession]) -> dict[str, list[int]]:
    """Each mix's displayed slate sizes, and under `all` every mix's (for a mix the study never ran)."""
    pools: dict[str, list[int]] = {"all": []}
    for session in sessions:
        sizes = [n for n, shown in zip(session.slate_sizes, session.displayed) if shown]
        pools.setdefault(session.mix, []).extend(sizes)
        pools["all"].extend(sizes)
    return {mix: sorted(sizes) for mix, sizes in pools.items()}


def held_out(sessions: Iterable[ObservedSession], split: str) -> list[ObservedSession]:
    """The sessions of `split` (`all`: every split)."""
    if split != "all" and split not in SPLITS:
        raise SimulationError(f"simulate.split must be one of {', '.join(SPLITS)} or all (got {split!r})")
    return [s for s in sessions if split == "all" or s.split == split]
