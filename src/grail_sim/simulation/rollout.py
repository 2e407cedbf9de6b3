"""Simulated sessions: a viewer moves through the platform under an arm, one choice at a time.

For each held-out participant, each arm (their own and every other, the counterfactual one
included) and each replicate, a session:
1. starts at a seed video drawn from the arm's side's pool (world.py);
2. at each step, shows a slate drawn from the current video's tree row by the arm's slate rule
   (slates.py), its size drawn from the sizes the arm's mix displayed (world.py);
3. renders the step as the prompts stage renders a row (the participant's wave-1 profile, the
   simulated history, the current video, the slate) and asks the predictor for a probability per
   option;
4. samples the choice from those probabilities (not the most probable option), moves to it and
   extends the history;
5. stops after as many choices as the participant's logged session kept.

Each session draws from its own generator, seeded by (seed, participant, arm, replicate), so a
session's path does not depend on which others ran before it: a killed run resumes from the
sessions already on disk (the stream's fingerprint guards the settings) and ends identical.
Simulated history items carry no watch time (none was watched): they render as `watched ?/N s`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from grail_sim.prompts.build import prompt_row
from grail_sim.prompts.profiles import render_profile
from grail_sim.prompts.settings import PromptSettings, TokenCounter
from grail_sim.rows import json_object, viewer_leaning
from grail_sim.simulation.observed import ObservedSession
from grail_sim.simulation.slates import ARM_SAME_STANCE_SHARE, draw_slate
from grail_sim.simulation.world import World

log = logging.getLogger(__name__)

TASK = "simulate"  # the `task` of a session record (the record stream keys on (task, id))
SIDES = ("pro", "anti")


@dataclass(frozen=True)
class Arm:
    """An arm: the side its seed video is on and its recommendation mix (a same-stance share)."""

    side: str
    mix: str
    same_stance_share: float

    @property
    def name(self) -> str:
        return f"{self.side}_{self.mix}"


def experiment_arms(counterfactual_mix: str, counterfactual_share: float) -> list[Arm]:
    """The study's four arms, then the counterfactual mix on each side."""
    arms = [Arm(side, mix, share) for side in SIDES for mix, share in ARM_SAME_STANCE_SHARE.items()]
    return arms + [Arm(side, counterfactual_mix, counterfactual_share) for side in SIDES]


def session_key(participant_id: str, arm: str, replicate: int) -> str:
    return f"{participant_id}:{arm}:{replicate}"


def session_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one session: independent of every other session and of run order."""
    return np.random.default_rng([seed, int(hashlib.sha256(key.encode()).hexdigest()[:16], 16)])


def profile_text(session: ObservedSession, issue: str, settings: PromptSettings) -> str:
    """The participant's profile paragraph as a prompt shows it."""
    before = session.opinion_before if math.isfinite(session.opinion_before) else None
    return render_profile(json_object(session.profile, "profile", session.participant_id), settings.profile_table,
                          issue=issue, opinion_before=before, row_id=session.participant_id)


class _Session:
    """One session in progress."""

    def __init__(self, participant: ObservedSession, arm: Arm, replicate: int, world: World, seed: int,
                 leaning: str):
        self.participant, self.arm, self.replicate = participant, arm, replicate
        self.key = session_key(participant.participant_id, arm.name, replicate)
        self.rng = session_rng(seed, self.key)
        pool = world.seed_pools.get(arm.side) or []
        self.seed_video = str(self.rng.choice(pool))
        self.current, self.history, self.steps = self.seed_video, [], []
        self.slate: list[str] = []
        self.leaning = leaning

    @property
    def done(self) -> bool:
        return len(self.steps) >= len(self.participant.chosen)

    def next_record(self, world: World, issue: str) -> dict[str, Any]:
        """The Contract-1 record of the next step, with a freshly drawn slate."""
        size = int(self.rng.choice(world.sizes_for(self.arm.mix)))
        self.slate = draw_slate(self.rng, world.recommendations[self.current], world.stances, self.current,
                                self.arm.same_stance_share, size)
        item, participant, step = world.items[self.current], self.participant, len(self.steps)
        return {
            "row_id": f"{self.key}:{step}", "session_id": self.key, "participant_id": participant.participant_id,
            "issue": issue, "participant_study": participant.participant_study, "treatment_arm": self.arm.name,
            "step_index": step, "current_video_id": self.current, "current_video_title": item["title"] or "",
            "current_video_channel": item["channel"] or "", "current_video_duration_s": item["duration_s"],
            "history": list(self.history), "current_watched_s": None, "current_total_s": item["duration_s"],
            "slate_items": [world.items[v] for v in self.slate], "slate_source": "displayed",
            "n_options": len(self.slate), "gold_video_id": "", "gold_index": 0, "profile": participant.profile,
            "opinion_before": participant.opinion_before, "opinion_after": float("nan"), "split": participant.split,
        }

    def choose(self, probabilities: np.ndarray, world: World) -> None:
        p = np.clip(np.asarray(probabilities, dtype=float), 0.0, None)
        if len(p) != len(self.slate) or not p.sum() > 0:
            raise ValueError(f"session {self.key}: {len(p)} probabilities for {len(self.slate)} options")
        p = p / p.sum()
        index = int(self.rng.choice(len(p), p=p))
        chosen = self.slate[index]
        self.steps.append({"slate": list(self.slate), "stances": [world.stances[v] for v in self.slate],
                           "probabilities": [round(float(x), 6) for x in p], "chosen": index + 1,
                           "video": chosen, "stance": world.stances[chosen]})
        item = world.items[self.current]
        self.history.append({"id": self.current, "title": item["title"], "channel": item["channel"],
                             "watched_s": None, "total_s": item["duration_s"]})
        self.current = chosen

    def record(self, world: World) -> dict[str, Any]:
        return {"task": TASK, "id": self.key, "participant_id": self.participant.participant_id,
                "participant_study": self.participant.participant_study, "arm": self.arm.name,
                "side": self.arm.side, "mix": self.arm.mix, "replicate": self.replicate,
                "seed_video": self.seed_video, "seed_stance": world.stances[self.seed_video],
                "viewer_leaning": self.leaning, "steps": self.steps}


def plan(participants: Sequence[ObservedSession], arms: Sequence[Arm], replicates: int,
         done: set[str]) -> list[tuple[ObservedSession, Arm, int]]:
    """Every (participant, arm, replicate) whose session is not yet in `done` (keys)."""
    return [(p, arm, r) for p in participants for arm in arms for r in range(replicates)
            if session_key(p.participant_id, arm.name, r) not in done]


def simulate_sessions(todo: Sequence[tuple[ObservedSession, Arm, int]], world: World, predictor, *, issue: str,
                      settings: PromptSettings, count: TokenCounter | None, seed: int, batch: int,
                      write: Callable[[list[dict]], None], progress: Callable[[int], None] | None = None) -> dict:
    """Run `todo` in groups of `batch` sessions that step together (one predictor call per step of
    a group), handing each finished group's records to `write`. Returns counts and timing."""
    leanings: dict[str, str] = {}
    steps, began = 0, time.perf_counter()
    for start in range(0, len(todo), batch):
        group = []
        for participant, arm, replicate in todo[start:start + batch]:
            if participant.participant_id not in leanings:
                leanings[participant.participant_id] = viewer_leaning(profile_text(participant, issue, settings))
            group.append(_Session(participant, arm, replicate, world, seed, leanings[participant.participant_id]))
        while active := [s for s in group if not s.done]:
            rows = [prompt_row("next_video", s.next_record(world, issue), settings, count) for s in active]
            for session, probabilities in zip(active, predictor.probabilities(rows)):
                session.choose(probabilities, world)
            steps += len(active)
        write([s.record(world) for s in group])
        if progress is not None:
            progress(len(group))
    seconds = time.perf_counter() - began
    return {"sessions": len(todo), "steps": steps, "seconds": round(seconds, 3),
            "steps_per_second": round(steps / seconds, 3) if seconds > 0 else None}


def observed_records(participants: Sequence[ObservedSession], world_stances: Mapping[str, str], *, issue: str,
                     settings: PromptSettings) -> list[dict[str, Any]]:
    """The participants' own sessions as session records (their arm only; no slates or probabilities).

    A chosen video without a stance label keeps `stance: null` and is left out of the stance shares;
    a step whose slate is the tree row (the log lost the displayed one) has `displayed: false`, and its
    position, which is the video's place in the tree row, is left out of the mean position.
    """
    records = []
    for p in participants:
        steps = [{"chosen": position, "video": video, "stance": world_stances.get(video), "displayed": shown}
                 for video, position, shown in zip(p.chosen, p.positions, p.displayed)]
        records.append({"task": TASK, "id": session_key(p.participant_id, p.arm, 0),
                        "participant_id": p.participant_id, "participant_study": p.participant_study,
                        "arm": p.arm, "side": p.side, "mix": p.mix, "replicate": 0, "seed_video": p.seed_video,
                        "seed_stance": world_stances.get(p.seed_video),
                        "viewer_leaning": viewer_leaning(profile_text(p, issue, settings)), "steps": steps})
    return records
