"""The names of what chooses in a simulation, and the evaluate keys the stage reads.

Kept apart from predictors.py (which reaches the scorers, torch and the baselines) so that the
workflow's planning and the report stage can name the sources without depending on that code.
"""

BASELINES = ("position_prior", "choice_model")
ORACLE = "oracle"
OBSERVED = "observed"  # not a predictor: the participants' own sessions
# The evaluate keys the simulate stage reads (scoring and bootstrap): the rule passes only these, so
# editing the others does not rerun a simulation.
EVALUATE_KEYS = ("dtype", "score_think", "backend", "score_batch_size", "seed", "bootstrap_samples", "confidence")
