"""The baselines of `grail_sim.evaluation.baselines` on the 364 real study-2 next-video rows.

The real rows (`../shared/real/next_video_study2.jsonl`, imported with
`grail_sim.prompts.importer`) carry their options only in the prompt text and have no participant
id, so every row counts as its own participant in the bootstrap. Each baseline is cross-fitted:
the rows are shuffled (seeded) into 5 folds, each fold is scored by baselines fitted on the other
4, and the 364 held-out scores are pooled. Printed as a Markdown table (NLL of the gold option and
accuracy of the most probable option, with 95% bootstrap intervals; the most-frequent-position
rule beside them) and written to `benchmarks/baselines_real.md`.

    python benchmarks/baselines_real.py [--path ../shared/real/next_video_study2.jsonl]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATH = ROOT.parent / "shared" / "real" / "next_video_study2.jsonl"


def cross_fitted(rows: list[dict], folds: int, seed: int) -> dict[str, list[np.ndarray]]:
    """Held-out probabilities of every row for every baseline (and the cross-fitted modal rule)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from grail_sim.evaluation.baselines import ChoiceModel, PositionPrior, Uniform
    from grail_sim.evaluation.metrics import most_frequent_index

    def boosting():  # the alternative estimator, for comparison only (the default is the logistic model)
        return HistGradientBoostingClassifier(learning_rate=0.05, max_iter=100, max_depth=3, min_samples_leaf=80,
                                              early_stopping=False, random_state=seed)

    order = np.random.default_rng(seed).permutation(len(rows))
    fold_of = np.empty(len(rows), dtype=int)
    fold_of[order] = np.arange(len(rows)) % folds
    names = ("uniform", "position_prior", "choice_model (logistic)", "choice_model (boosting)",
             "most_frequent_position")
    out: dict[str, list] = {name: [None] * len(rows) for name in names}
    for fold in range(folds):
        train = [r for r, f in zip(rows, fold_of) if f != fold]
        held = [i for i, f in enumerate(fold_of) if f == fold]
        test = [rows[i] for i in held]
        fitted = {"uniform": Uniform(), "position_prior": PositionPrior.fit(train),
                  "choice_model (logistic)": ChoiceModel.fit(train, seed=seed),
                  "choice_model (boosting)": ChoiceModel.fit(train, seed=seed, estimator=boosting())}
        modal = most_frequent_index(r["gold_index"] for r in train)
        for name, model in fitted.items():
            for i, p in zip(held, model.probabilities(test)):
                out[name][i] = p
        for i in held:  # a point mass: its accuracy only (its NLL is infinite off the mode)
            n = rows[i]["n_options"]
            out["most_frequent_position"][i] = np.eye(n)[min(modal, n) - 1]
    return out


def table(rows: list[dict], probabilities: dict[str, list[np.ndarray]], seed: int) -> str:
    from grail_sim.evaluation.baselines import gold_scores
    from grail_sim.evaluation.metrics import bootstrap_means

    groups = [r["id"] for r in rows]  # no participant id: each row is its own participant
    lines = ["| baseline | NLL (95% CI) | accuracy@1 (95% CI) |", "|---|---|---|"]
    for name, probs in probabilities.items():
        scores = gold_scores(probs, rows)
        if not np.isfinite(scores["nll"]).all():
            del scores["nll"]
        stats = bootstrap_means(groups, scores, samples=2000, seed=seed)
        cell = {k: f"{v['value']:.3f} ({v['ci_low']:.3f}-{v['ci_high']:.3f})" for k, v in stats.items()}
        lines.append(f"| {name} | {cell.get('nll', 'n/a (a point mass)')} | {cell['accuracy']} |")
    paired = {name: np.subtract(gold_scores(probabilities[name], rows)["nll"],
                                gold_scores(probabilities["position_prior"], rows)["nll"])
              for name in probabilities if name.startswith("choice_model")}
    lines.append("\nPaired NLL difference from the position prior (negative = better), same bootstrap:\n")
    for name, stat in bootstrap_means(groups, paired, samples=2000, seed=seed).items():
        lines.append(f"- {name}: {stat['value']:+.3f} ({stat['ci_low']:+.3f} to {stat['ci_high']:+.3f})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=str(DEFAULT_PATH))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "baselines_real.md"))
    args = parser.parse_args(argv)
    if not Path(args.path).is_file():
        print(f"skipped: the real rows {args.path} are absent (they live in ../shared/real, outside the repository)")
        return 0
    from grail_sim.prompts.importer import import_jsonl
    from grail_sim.prompts.settings import load_settings

    rows = import_jsonl(args.path, load_settings({}))
    started = time.perf_counter()
    probabilities = cross_fitted(rows, args.folds, args.seed)
    seconds = time.perf_counter() - started
    body = table(rows, probabilities, args.seed)
    header = (f"# Baselines on the real study-2 next-video rows\n\n"
              f"{len(rows)} rows from `{Path(args.path).name}`, {args.folds}-fold cross-fitting (seed {args.seed}); "
              f"rows count as their own participants (no participant id). "
              f"Measured {datetime.date.today().isoformat()} on a 2-core shared CPU ({platform.machine()}, "
              f"Python {sys.version.split()[0]}); fitting and scoring the {args.folds} folds took {seconds:.1f} s.\n\n"
              f"`python benchmarks/baselines_real.py`. NLL is the mean -log p(gold) (uniform: mean log n); "
              f"accuracy@1 is the share of rows whose most probable option is the gold one (k tied options "
              f"share a hit as 1/k, so uniform scores the random 1/n rule). The most-frequent-position rule is learned on the 4 training folds.\n\n")
    print(header + body)
    Path(args.out).write_text(header + body + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
