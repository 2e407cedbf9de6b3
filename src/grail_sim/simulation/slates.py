"""The platform's slate rule: which of the current video's tree recommendations a participant sees.

The experiment (docs/clean.md, docs/simulate.md) shows each participant, after every video, a slate
drawn from that video's recommendation-tree row, leaning 3:1 toward the current video's stance in
the `31` arms and balanced in the `22` arms. One rule serves both the demo generator (which plays
the platform when it writes a capsule) and the simulate stage (which plays it again for arms a
participant was never in), so that a simulated session of a demo viewer is drawn from the very law
their logged session was.

The rule, for a slate of `size` options and a same-stance share `s`:
- same-stance options: round(size * s) (Python's round, half to even), at least 1, at most the
  row's same-stance recommendations (none when the row holds none), and, for a study arm (s < 1), at most size - 1 so that both
  stances are always on offer;
- other-stance options fill the rest, as far as the row holds them (for s < 1: a share of 1 shows
  none, and a shorter slate when the row holds fewer same-stance videos than `size`);
- both are drawn without replacement and shown in a random order.

A share of 1 is the counterfactual "only the current video's stance" arm.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

# The study's recommendation mixes: the share of each slate that keeps the current video's stance.
ARM_SAME_STANCE_SHARE = {"31": 0.75, "22": 0.5}
STUDY_MIXES = tuple(ARM_SAME_STANCE_SHARE)


def same_stance_count(size: int, share: float, available_same: int) -> int:
    """How many of a `size`-option slate keep the current stance (rule in the module doc)."""
    count = round(size * share)
    if share < 1.0:
        count = min(count, size - 1)
    return min(max(1, count), available_same)


def draw_slate(rng: np.random.Generator, recommendations: Sequence[str], stances: Mapping[str, str], current: str,
               share: float, size: int) -> list[str]:
    """The slate shown after `current`: ids from its `recommendations`, in display order.

    `stances` maps every id to its stance; the draws are made from `rng` in a fixed order (same
    stance, other stance, display order), so a seed gives the same slate.
    """
    stance = stances[current]
    same = [video for video in recommendations if stances[video] == stance]
    other = [video for video in recommendations if stances[video] != stance]
    n_same = same_stance_count(size, share, len(same))
    # A study arm fills the slate from the other stance when its row runs short of its own; the
    # counterfactual "only the current stance" shows a shorter slate instead.
    n_other = 0 if share >= 1.0 else min(len(other), size - n_same)
    picked = list(rng.choice(same, n_same, replace=False)) if n_same else []
    if n_other:
        picked += list(rng.choice(other, n_other, replace=False))
    return [str(video) for video in rng.permutation(picked)]
