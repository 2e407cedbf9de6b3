"""The viewers a simulation lets choose: each gives a probability for every option of a step's
Contract-2 row (`probabilities(rows) -> list of vectors`), and the session samples from it.

- a model (base or trained): the evaluate stage's likelihood scorer, the probability of each
  option's answer renormalised over the options (its valid mass is recorded beside);
- `position_prior`, `choice_model`: the evaluation's baselines, fitted on the prompts' train split;
- `oracle` (demo only): the generator's own choice law, so its simulation is the truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from grail_sim.errors import SimulationError
from grail_sim.simulation.sources import BASELINES, ORACLE



class BaselinePredictor:
    """A fitted baseline of the evaluation (baselines.py), choosing from the same rows."""

    def __init__(self, name: str, train_rows: Sequence[Mapping[str, Any]], seed: int):
        from grail_sim.evaluation import baselines

        self.name = name
        if name == "position_prior":
            self.model = baselines.PositionPrior.fit(train_rows)
        elif name == "choice_model":
            self.model = baselines.ChoiceModel.fit(train_rows, seed=seed)
        else:
            raise SimulationError(f"unknown baseline {name!r} (one of {', '.join(BASELINES)})")

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        return [np.asarray(p, dtype=float) for p in self.model.probabilities(rows)]

    def describe(self) -> dict[str, Any]:
        described = self.model.describe()
        return {"name": self.name, "train_rows": described.get("train_rows")}


class OraclePredictor:
    """The demo generator's choice law for each simulated viewer (data/demo_oracle.py)."""

    name = ORACLE

    def __init__(self, truth: Mapping[str, Any]):
        from grail_sim.data.demo_oracle import Oracle

        self.oracle = Oracle(truth)

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        out = []
        for row in rows:
            vector, reason = self.oracle.vector(row)
            if vector is None:
                raise SimulationError(f"the demo truth cannot resolve simulated row {row.get('id')} ({reason}): "
                                      "is it the ground truth of the capsule the clean table came from?")
            out.append(vector)
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.oracle.describe()}


class ModelPredictor:
    """A model's choice distribution: the evaluation's scorer over the option answers."""

    def __init__(self, name: str, model_dir: Path, evaluate_section: Mapping[str, Any], device: str):
        from grail_sim.evaluation import scorers
        from grail_sim.model.loading import resolve_dtype, trained_system_prompt

        self.name = name
        # A model trained with its recipe's own system prompt is asked with it, as evaluation does.
        self.system_prompt = trained_system_prompt(model_dir)
        self.dtype = resolve_dtype(evaluate_section["dtype"], device)
        think = scorers.think_forcing(model_dir, evaluate_section["score_think"])
        self.scorer = scorers.make_scorer(model_dir, backend=evaluate_section["backend"],
                                          batch_size=evaluate_section["score_batch_size"], device=device,
                                          dtype=self.dtype, seed=evaluate_section["seed"], think=think)
        self.valid_mass: list[float] = []

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        from grail_sim.evaluation.likelihood import score_batch
        from grail_sim.rows import replace_system

        rows = [dict(row) for row in rows]
        if self.system_prompt:
            for row in rows:
                row["prompt"] = replace_system(list(row["prompt"]), self.system_prompt)
        records = score_batch(self.scorer, "next_video", rows)
        self.valid_mass += [float(r["valid_mass"]) for r in records]
        return [np.asarray(r["probabilities"], dtype=float) for r in records]

    def describe(self) -> dict[str, Any]:
        mass = float(np.mean(self.valid_mass)) if self.valid_mass else None
        return {"name": self.name, "backend": self.scorer.backend, "dtype": self.dtype,
                **self.scorer.think.describe(), "mean_valid_mass": mass}
