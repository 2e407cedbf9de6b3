"""Adaptive KL control: move the KL coefficient beta toward a target KL, as PPO's adaptive
controller does (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences").

After each optimizer step with measured KL k:

    error = clip(k / kl_target - 1, -0.2, 0.2)
    beta <- beta * (1 + error / kl_horizon)

so beta rises while the policy drifts further from the reference than the target, and falls while
it stays closer. The clip bounds one step's change to a factor of 1 +- 0.2 / kl_horizon, and beta is
kept within [init / BOUND_FACTOR, init * BOUND_FACTOR]: it never reaches 0 (TRL would then stop
computing the reference) and never runs away on a KL estimate that spikes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

ERROR_CLIP = 0.2
BOUND_FACTOR = 1000.0


@dataclass
class AdaptiveKLController:
    """beta, and how it moves. `update(kl)` is called once per optimizer step."""

    init_kl_coeff: float
    kl_target: float
    kl_horizon: int
    value: float = math.nan

    def __post_init__(self) -> None:
        if not self.init_kl_coeff > 0:
            raise ValueError(f"adaptive KL control needs init_kl_coeff > 0, got {self.init_kl_coeff}")
        if not self.kl_target > 0:
            raise ValueError(f"kl_target must be > 0, got {self.kl_target}")
        if self.kl_horizon < 1:
            raise ValueError(f"kl_horizon must be >= 1, got {self.kl_horizon}")
        if math.isnan(self.value):
            self.value = float(self.init_kl_coeff)

    def update(self, kl: float, steps: int = 1) -> float:
        """beta after `steps` optimizer steps whose mean KL was `kl` (a NaN KL leaves it unchanged)."""
        if math.isnan(kl):
            return self.value
        error = min(max(kl / self.kl_target - 1.0, -ERROR_CLIP), ERROR_CLIP)
        moved = self.value * (1.0 + error * steps / self.kl_horizon)
        low, high = self.init_kl_coeff / BOUND_FACTOR, self.init_kl_coeff * BOUND_FACTOR
        self.value = min(max(moved, low), high)
        return self.value

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "AdaptiveKLController":
        return cls(**{key: state[key] for key in ("init_kl_coeff", "kl_target", "kl_horizon", "value")})
