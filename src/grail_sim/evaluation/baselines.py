"""Baselines scored the same way as the policy: a probability for every option of every row.

A simulator's next-video probabilities mean little alone; they must beat what cheap, fitted models
of the same rows achieve. Each baseline has `.probabilities(rows)` (one vector per row, length
`n_options`, summing to 1, no zero) and `.describe()` (JSON for metrics.json):
- `Uniform`: 1/n per option, the floor any model must clear;
- `PositionPrior`: the train share of each gold position per number of options, smoothed: the best
  a model can do that ignores the viewer and the videos;
- `ChoiceModel`: a conditional-logit-style model over option features, the domain model a
  simulator must beat to claim it reads the viewer better than a linear model of the same text.

Rows are read into `Decision`s (options, viewer, gold) by `decisions.py`.

FEATURE LIST of the choice model (one row per option; option-level features centred per slate):
  1. position one-hot (1..5, the last bucket holding later ones), relative position
     (position - 1) / (n - 1) and an is-last flag;
  2. slate-level, not centred: 1/n and log n (the base rate 1/n of the binary fit);
  3. TF-IDF cosine similarity of the option's "title channel" with the viewer profile, the current
     video, the whole watch history, and the best single history item;
  4. channel: same as the current video's; share of history items from it;
  5. stance cues: a k-dim SVD embedding of the option's TF-IDF text and its 50 most frequent words,
     each multiplied by (opinion_before - 0.5) (0 when missing) and by an ideology score parsed
     from the profile text (conservative/republican +1, liberal/democrat/progressive -1, averaged);
     and the embedding times each of k SVD dims of the profile text (a bilinear viewer-by-option
     term that learns stances the word lists do not name, as "Opposes a $15 minimum wage");
  6. popularity: log(1 + views), log(1 + likes), log(1 + duration in s), 0 when missing.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from grail_sim.errors import EvaluationError
from grail_sim.evaluation.decisions import FORMAT_WORDS, Decision, decision, drop_reason, n_options, row_label


def _train_decisions(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Decision], Counter]:
    """Parsed train rows and the count of dropped ones by reason."""
    reasons = [drop_reason(row) for row in rows]
    return [decision(r) for r, why in zip(rows, reasons) if why is None], Counter(filter(None, reasons))


class Uniform:
    """1/n per option: the floor; a model scoring worse has learned something false."""

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        return [np.full(n_options(row), 1.0 / n_options(row)) for row in rows]

    def describe(self) -> dict:
        return {"name": "uniform", "rule": "1/n_options for every option"}


def uniform(rows: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    """1/n per option of each row (the function form of `Uniform`)."""
    return Uniform().probabilities(rows)


class PositionPrior:
    """Share of each gold position per number of options, additively smoothed.

    What a simulator earns by position bias alone: a model that beats uniform only this much
    reads the layout, not the viewer. Smoothing keeps every probability above 0 so its NLL is
    finite on any test row.
    """

    def __init__(self) -> None:
        self.by_n: dict[int, np.ndarray] = {}
        self.pooled = np.zeros(0)
        self.smoothing = 1.0
        self.train_rows = 0
        self.dropped: dict[str, int] = {}

    @classmethod
    def fit(cls, train_rows: Sequence[Mapping[str, Any]], smoothing: float = 1.0) -> "PositionPrior":
        """Count gold positions per n on the usable train rows; the rest are dropped and counted."""
        if not smoothing > 0:
            raise ValueError(f"smoothing must be > 0 so that no probability is 0 (got {smoothing})")
        prior, counts, dropped = cls(), {}, Counter()
        prior.smoothing = float(smoothing)
        for row in train_rows:
            reason = drop_reason(row)
            if reason:
                dropped[reason] += 1
            else:
                n = int(row["n_options"])
                counts.setdefault(n, np.zeros(n))[int(row["gold_index"]) - 1] += 1
        prior.pooled = np.zeros(max(counts, default=0))
        for n, c in counts.items():
            prior.pooled[:n] += c
            prior.by_n[n] = (c + smoothing) / (c.sum() + smoothing * n)
        prior.train_rows, prior.dropped = int(sum(c.sum() for c in counts.values())), dict(dropped)
        return prior

    def distribution(self, n: int) -> np.ndarray:
        """The prior for n options: its own, else the pooled counts cut to n, else uniform."""
        if n in self.by_n:
            return self.by_n[n]
        counts = np.zeros(n)
        width = min(n, len(self.pooled))
        counts[:width] = self.pooled[:width]
        return (counts + self.smoothing) / (counts.sum() + self.smoothing * n)

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """The prior of each row's n: it ignores everything else about the row."""
        return [self.distribution(n_options(row)).copy() for row in rows]

    def describe(self) -> dict:
        return {"name": "position_prior", "smoothing": self.smoothing, "train_rows": self.train_rows,
                "dropped_train_rows": self.dropped,
                "by_n_options": {str(n): [round(float(p), 6) for p in v] for n, v in sorted(self.by_n.items())},
                "fallback": "pooled position counts truncated to n and renormalised (uniform when no rows)"}


def _centred(values: np.ndarray, slates: np.ndarray, n_slates: int) -> np.ndarray:
    """Each column minus its slate mean (a softmax within a slate ignores slate constants)."""
    sums = np.zeros((n_slates, values.shape[1]))
    np.add.at(sums, slates, values)
    sizes = np.bincount(slates, minlength=n_slates).astype(float)
    return values - (sums / sizes[:, None])[slates]


class _Features:
    """Text encoders fitted on the train decisions, and the feature matrix of the FEATURE LIST."""

    def __init__(self, decisions: Sequence[Decision], *, dims: int, words: int, max_position: int,
                 seed: int) -> None:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

        self.max_position = max_position
        corpus = [o["text"] for d in decisions for o in d.options]
        context = [t for d in decisions for t in (d.profile, d.current["text"], *(h["text"] for h in d.history))]
        self.tfidf = TfidfVectorizer(token_pattern=r"(?u)\b[^\W\d_]{2,}\b", sublinear_tf=True,
                                     stop_words=sorted(ENGLISH_STOP_WORDS | set(FORMAT_WORDS)))
        self.tfidf.fit(corpus + context + ["qqpadone qqpadtwo"])  # 2+ words even when the rows have none
        width = len(self.tfidf.vocabulary_)
        self.dims = max(1, min(dims, width - 1))
        with np.errstate(divide="ignore", invalid="ignore"):  # identical profiles: no variance to explain
            self.option_svd = TruncatedSVD(self.dims, random_state=seed).fit(self.tfidf.transform(corpus))
            self.profile_svd = TruncatedSVD(self.dims, random_state=seed).fit(
                self.tfidf.transform([d.profile for d in decisions]))
        frequency = np.asarray((self.tfidf.transform(corpus) > 0).sum(axis=0)).ravel()
        terms = self.tfidf.get_feature_names_out()
        order = sorted(range(width), key=lambda i: (-frequency[i], terms[i]))[:words]
        self.words = [int(i) for i in order if frequency[i] > 0]
        self.word_names = [str(terms[i]) for i in self.words]

    def names(self) -> list[str]:
        k = range(self.dims)
        return ([f"position_{p}" for p in range(1, self.max_position + 1)]
                + ["relative_position", "is_last", "inverse_n", "log_n",
                   "sim_profile", "sim_current", "sim_history", "sim_history_max",
                   "same_channel_as_current", "history_channel_share"]
                + [f"option_svd{i}_x_opinion" for i in k] + [f"option_svd{i}_x_ideology" for i in k]
                + [f"option_svd{i}_x_profile_svd{j}" for j in k for i in k]
                + [f"word_{w}_x_opinion" for w in self.word_names] + [f"word_{w}_x_ideology" for w in self.word_names]
                + ["log_views", "log_likes", "log_duration"])

    def _position(self, n: int) -> np.ndarray:
        one_hot = np.zeros((n, self.max_position))
        one_hot[np.arange(n), np.minimum(np.arange(n), self.max_position - 1)] = 1.0
        relative = np.arange(n) / max(n - 1, 1)
        last = (np.arange(n) == n - 1).astype(float)
        return np.column_stack([one_hot, relative, last, np.full(n, 1.0 / n), np.full(n, math.log(n))])

    def _similarities(self, decisions: Sequence[Decision], options, slates: np.ndarray) -> np.ndarray:
        """Cosine similarity of each option with profile, current video, history (all and best item).

        TF-IDF rows are L2-normalised, so a row-wise dot product is the cosine.
        """
        columns = []
        for texts in ([d.profile for d in decisions], [d.current["text"] for d in decisions],
                      [" ".join(h["text"] for h in d.history) for d in decisions]):
            context = self.tfidf.transform(texts)[slates]
            columns.append(np.asarray(options.multiply(context).sum(axis=1)).ravel())
        items = self.tfidf.transform([h["text"] for d in decisions for h in d.history] or [""])
        best, start, first = np.zeros(options.shape[0]), 0, 0
        for d in decisions:
            if d.history:
                block = options[first:first + d.n] @ items[start:start + len(d.history)].T
                best[first:first + d.n] = block.toarray().max(axis=1)
            start, first = start + len(d.history), first + d.n
        return np.column_stack(columns + [best])

    @staticmethod
    def _channels(d: Decision) -> np.ndarray:
        counts = Counter(h["channel"] for h in d.history if h["channel"])
        return np.array([[float(bool(o["channel"]) and o["channel"] == d.current["channel"]),
                          counts[o["channel"]] / max(len(d.history), 1)] for o in d.options])

    def _stance(self, decisions: Sequence[Decision], options, slates: np.ndarray) -> np.ndarray:
        """Option embedding times opinion, times ideology, and times each profile-embedding dim."""
        embedding = self.option_svd.transform(options)
        profile = self.profile_svd.transform(self.tfidf.transform([d.profile for d in decisions]))[slates]
        opinion = np.array([(d.opinion - 0.5) if d.opinion is not None else 0.0 for d in decisions])[slates]
        ideology = np.array([d.ideology for d in decisions])[slates]
        bilinear = (profile[:, :, None] * embedding[:, None, :]).reshape(len(embedding), -1)
        words = options[:, self.words].toarray() if self.words else np.zeros((options.shape[0], 0))
        return np.column_stack([embedding * opinion[:, None], embedding * ideology[:, None], bilinear,
                                words * opinion[:, None], words * ideology[:, None]])

    def matrix(self, decisions: Sequence[Decision]) -> tuple[np.ndarray, np.ndarray]:
        """Stacked option rows and each row's slate number; option-level columns centred per slate."""
        slates = np.repeat(np.arange(len(decisions)), [d.n for d in decisions])
        options = self.tfidf.transform([o["text"] for d in decisions for o in d.options])
        popularity = np.log1p(np.nan_to_num(np.array([[o["views"], o["likes"], o["duration"]] for d in decisions
                                                      for o in d.options], dtype=float)).clip(min=0))
        values = np.column_stack([np.vstack([self._position(d.n) for d in decisions]),
                                  self._similarities(decisions, options, slates),
                                  np.vstack([self._channels(d) for d in decisions]),
                                  self._stance(decisions, options, slates), popularity])
        keep = [i for i, name in enumerate(self.names()) if name in ("inverse_n", "log_n")]
        centred = _centred(values, slates, len(decisions))
        centred[:, keep] = values[:, keep]
        return centred, slates


def _slate_softmax(scores: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    return [np.exp(z - z.max()) / np.exp(z - z.max()).sum() for z in np.split(scores, np.cumsum(sizes)[:-1])]


class ChoiceModel:
    """A conditional-logit-style model over option features: the fitted domain baseline.

    One training row per (decision, option), labelled chosen or not, fitted by sklearn's
    LogisticRegression; a row's probabilities are the softmax of the decision function over its
    own options. Why this approximates a conditional logit: independent Bernoulli logits
    P(chosen_j) = sigmoid(a + x_j b), conditioned on exactly one chosen option per slate, give
    P(j | slate) = exp(x_j b) / sum_k exp(x_k b) exactly (the intercept and anything constant within
    the slate cancel), which is McFadden's conditional logit with the same b. The binary fit
    estimates b by the unconditional likelihood instead; centring every option feature within its
    slate, and giving the slate-level 1/n and log n to the intercept, leaves the binary fit only
    within-slate differences to explain, which keeps its b close to the conditional one. A strong
    L2 penalty keeps the text interactions from memorising ~1,000 rows: C=0.003, k=4 SVD dims and
    50 words were the best of 16 settings on the demo's validation splits. Gradient boosting on
    the same rows overfits the 364 real rows (benchmarks/baselines_real.md), so it is not the default.
    """

    def __init__(self) -> None:
        self.features: _Features | None = None
        self.model: Any = None  # the fitted binary classifier
        self.settings, self.train_rows, self.dropped = {}, 0, {}

    @classmethod
    def fit(cls, train_rows: Sequence[Mapping[str, Any]], seed: int = 0, *, C: float = 0.003, dims: int = 4,
            words: int = 50, max_position: int = 5, estimator: Any = None) -> "ChoiceModel":
        """Fit on the usable train rows (deterministic for a seed; about a second on 1,000 rows).

        `estimator` replaces the scaled logistic regression by another sklearn binary classifier
        with a `decision_function` (benchmarks/baselines_real.py compares gradient boosting).
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from threadpoolctl import threadpool_limits

        decisions, dropped = _train_decisions(train_rows)
        if len(decisions) < 2:
            raise EvaluationError(f"the choice model needs at least 2 train rows with 2+ options and a gold "
                                  f"index in 1..n (got {len(decisions)}; dropped {dict(dropped)})")
        model = cls()
        estimator = estimator or make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
        model.settings = {"C": C, "svd_dims": dims, "interaction_words": words, "max_position": max_position,
                          "seed": seed, "estimator": repr(estimator)}
        model.features = _Features(decisions, dims=dims, words=words, max_position=max_position, seed=seed)
        x, _ = model.features.matrix(decisions)
        starts = np.concatenate([[0], np.cumsum([d.n for d in decisions])[:-1]])
        y = np.zeros(len(x), dtype=int)
        y[starts + np.array([d.gold - 1 for d in decisions])] = 1
        with threadpool_limits(1):  # one thread: the same result on any machine, no oversubscription
            model.model = estimator.fit(x, y)
        model.train_rows, model.dropped = len(decisions), dict(dropped)
        return model

    def probabilities(self, rows: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
        """Softmax of the fitted utilities over each row's own options."""
        if self.features is None:
            raise EvaluationError("the choice model is not fitted (use ChoiceModel.fit)")
        decisions = [decision(row) for row in rows]
        if not decisions:
            return []
        x, _ = self.features.matrix(decisions)
        return _slate_softmax(self.model.decision_function(x), [d.n for d in decisions])

    def describe(self) -> dict:
        names = self.features.names() if self.features else []
        out = {"name": "choice_model", "train_rows": self.train_rows, "dropped_train_rows": self.dropped,
               "settings": self.settings, "features": names}
        steps = getattr(self.model, "named_steps", {})
        if "logisticregression" in steps:  # per unit of each (centred) feature
            weights = steps["logisticregression"].coef_[0] / steps["standardscaler"].scale_
            out["coefficients"] = {n: round(float(w), 6) for n, w in zip(names, weights)}
        return out


def gold_scores(probabilities: Sequence[np.ndarray], rows: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Per-row NLL of the gold option (-log p) and accuracy@1 of the most probable option.

    Ties for the most probable option share the hit (1/k when the gold is among k tied options),
    the expected accuracy of a random tie-break: uniform then scores the random 1/n rule, not
    "always option 1".
    """
    nll, accuracy = [], []
    for p, row in zip(probabilities, rows):
        gold = int(row["gold_index"])
        if len(p) != n_options(row) or not 1 <= gold <= len(p):
            raise EvaluationError(f"row {row_label(row)}: {len(p)} probabilities for n_options "
                                  f"{row.get('n_options')!r} and gold_index {gold}")
        top = np.flatnonzero(p >= p.max() - 1e-12)
        nll.append(-math.log(p[gold - 1]) if p[gold - 1] > 0 else math.inf)
        accuracy.append(float(gold - 1 in top) / len(top))
    return {"nll": nll, "accuracy": accuracy}


def fit_baselines(train_rows: Sequence[Mapping[str, Any]], seed: int = 0) -> dict[str, object]:
    """The three baselines fitted on the same train rows, each with .probabilities and .describe."""
    return {"uniform": Uniform(), "position_prior": PositionPrior.fit(train_rows),
            "choice_model": ChoiceModel.fit(train_rows, seed=seed)}
