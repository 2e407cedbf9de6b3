"""What a simulated session moves through: the videos (as slate items), each video's
recommendation-tree row and stance, and the seed videos of each arm's side.

- Videos and trees come from the capsule's `recommendation trees/` (the clean stage's reader).
- Stances: on the demo, the generator's ground truth; on the real capsule, a CSV that the user
  supplies (`simulate.video_stances`, columns `id` and `stance`), since the capsule's files that
  grail-sim reads label no video's stance. Without labels the stage stops, naming what is missing.
- Slate sizes: per mix, the sizes its logged sessions displayed (observed.py).
- Seed videos: an arm's side (`pro` / `anti`) starts at one of the first videos that sessions of
  that side logged, over every participant of the issue (an assignment, not an outcome).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from grail_sim.data.capsule import canonical_video_id, find_data_dir, load_trees
from grail_sim.data.clean import slate_item
from grail_sim.errors import CapsuleError, SimulationError

STANCES = ("liberal", "conservative")
STANCE_COLUMNS = ("id", "stance")


@dataclass(frozen=True)
class World:
    """The catalogue one issue's sessions are simulated in."""

    items: Mapping[str, dict]  # id -> slate item (Contract 1 `slate_items` entry)
    recommendations: Mapping[str, Sequence[str]]  # id -> its tree row
    stances: Mapping[str, str]  # id -> liberal / conservative
    seed_pools: Mapping[str, Sequence[str]]  # arm side -> seed videos, sorted
    slate_sizes: Mapping[str, Sequence[int]]  # mix (or `all`) -> the slate sizes to draw from

    def sizes_for(self, mix: str) -> Sequence[int]:
        """The slate sizes of `mix`, or of every mix for one the study never ran."""
        sizes = self.slate_sizes.get(mix) or self.slate_sizes.get("all")
        if not sizes:
            raise SimulationError("no displayed slate in the observed sessions: the slate sizes are unknown")
        return sizes


def read_stance_file(path: str | Path) -> dict[str, str]:
    """`{video id: stance}` from a CSV with columns `id` and `stance` (liberal / conservative)."""
    path = Path(path)
    if not path.is_file():
        raise SimulationError(f"simulate.video_stances: {path} does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in STANCE_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SimulationError(f"{path}: missing column(s) {', '.join(missing)} (needs {', '.join(STANCE_COLUMNS)})")
        stances = {}
        for line, row in enumerate(reader, start=2):
            vid, stance = canonical_video_id(row["id"]), str(row["stance"]).strip().lower()
            if vid is None or stance not in STANCES:
                raise SimulationError(f"{path}:{line}: needs an 11-character video id and a stance in "
                                      f"{', '.join(STANCES)} (got {row['id']!r}, {row['stance']!r})")
            stances[vid] = stance
    return stances


def load_world(capsule_dir: str | Path, stances: Mapping[str, str], seed_videos: Mapping[str, Sequence[str]],
               slate_sizes: Mapping[str, Sequence[int]], stance_source: str) -> World:
    """The world of the sessions whose first videos are `seed_videos` (side -> ids).

    Every video a session can reach (the seeds and every tree row below them) must have a stance;
    otherwise the stage stops, naming how many lack one and `stance_source`.
    """
    try:
        meta, recommendations = load_trees(find_data_dir(Path(capsule_dir)), Counter())
    except CapsuleError as err:
        raise SimulationError(f"the slate rule needs the capsule's recommendation trees: {err}") from None
    reachable = _reachable([vid for pool in seed_videos.values() for vid in pool], recommendations)
    unlabelled = sorted(vid for vid in reachable if vid not in stances)
    if unlabelled:
        raise SimulationError(f"{len(unlabelled)} of the {len(reachable)} videos the sessions can reach have no "
                              f"stance in {stance_source} (first: {', '.join(unlabelled[:3])}); the slate rule and "
                              "the outcomes need each video's stance")
    without_row = sorted(vid for vid in reachable if not recommendations.get(vid))
    if without_row:
        raise SimulationError(f"{len(without_row)} reachable videos have no recommendation-tree row in "
                              f"{capsule_dir} (first: {', '.join(without_row[:3])})")
    return World(items={vid: slate_item(vid, meta) for vid in reachable},
                 recommendations={vid: list(recommendations[vid]) for vid in reachable},
                 stances={vid: stances[vid] for vid in reachable},
                 seed_pools={side: sorted(set(pool)) for side, pool in seed_videos.items()},
                 slate_sizes={mix: list(sizes) for mix, sizes in slate_sizes.items()})


def _reachable(seeds: Sequence[str], recommendations: Mapping[str, Sequence[str]]) -> set[str]:
    """The seeds and every video their tree rows lead to."""
    seen, frontier = set(), list(seeds)
    while frontier:
        vid = frontier.pop()
        if vid not in seen:
            seen.add(vid)
            frontier.extend(recommendations.get(vid, ()))
    return seen
