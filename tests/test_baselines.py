"""Baselines scored like the policy: uniform, the position prior and the fitted choice model.

The key test fits all three on the default demo's train rows and checks that the choice model's
participant-bootstrap NLL interval on the test rows lies wholly below the position prior's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_prompts import word_counter

from grail_sim.errors import EvaluationError
from grail_sim.evaluation.baselines import (
    ChoiceModel,
    PositionPrior,
    Uniform,
    decision,
    fit_baselines,
    gold_scores,
    uniform,
)
from grail_sim.evaluation.metrics import bootstrap_means

# Two real-format user messages (the imported study-2 rows' layout, copied, not read from ../shared).
REAL_USER = (
    "VIEWER 49-year-old, Caucasian/White (non-Hispanic) woman; democrat moderate; $20,000-$24,999; "
    "watches YouTube several times a week.\nInitial Viewpoint: Opposes a $15 minimum wage\n\n"
    "CURRENTLY WATCHING Seattle's $15 Minimum Wage Experiment is Working (from Alicé Anil)\n\n"
    "RECENTLY WATCHED (NEWEST LAST)\n{history}\n\n"
    "SURVEY HIGHLIGHTS\nparty identification is Democrat, ideology is Moderate.\n\n"
    "OPTIONS\n{options}\n\nQUESTIONS\n1. Which option number will the viewer watch next?"
)
REAL_HISTORY = (
    "1. $15 minimum wage would cut 1.4 million jobs by 2025: CBO (watched 87s of 88s (99% complete), from Fox Business)\n"
    "2. A $15 minimum wage would hurt those it's meant to help (watched 193s of 194s (99% complete), from Learn Liberty)"
)
REAL_OPTIONS = [
    "If Walmart Paid Its Employees a Living Wage, How Much Would Prices Go Up? (Slate, 122s long) — "
    "Engagement: views 1,577,870, likes 11,319, comments 40",
    "Dunkin' Brands CEO: $15 minimum wage is 'outrag... (CNN Business, 217s long) — Engagement: views 62,940, "
    "likes 321, comments 40",
    "Who Does a $15 Minimum Wage Help? (PragerU, 334s long) — Engagement: views 6,088,611, likes 49,500, comments 40",
    "The 5 Biggest Myths Republicans Use to Avoid Raising the Minimum Wage | Opinions | NowThis (NowThis News, "
    "159s long) — Engagement: views 56,870, likes 4,183, comments 40",
]


def real_row(i: int, order=(0, 1, 2, 3), gold: int = 4, history: str = REAL_HISTORY) -> dict:
    """A row as `prompts.importer.import_jsonl` yields it: options only in the prompt text."""
    options = "\n".join(f"{k}. {REAL_OPTIONS[j]}" for k, j in enumerate(order, start=1))
    return {"id": f"minimum_wage:{i:05d}", "gold_index": gold, "n_options": len(order),
            "prompt": [{"role": "system", "content": "Choose one option."},
                       {"role": "user", "content": REAL_USER.format(history=history, options=options)}],
            "slate_items": "[]", "viewer_profile": "", "history": "[]", "participant_id": "",
            "issue": "minimum_wage", "participant_study": "study2", "opinion_before": float("nan")}


def real_rows(count: int = 24) -> list[dict]:
    """Real-format rows whose gold is always the PragerU video, wherever it is shown."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        order = tuple(int(j) for j in rng.permutation(4))
        rows.append(real_row(i, order, gold=order.index(2) + 1, history=REAL_HISTORY if i % 2 else "(none)"))
    return rows


def _demo_rows(folder, **knobs) -> dict:
    """A demo of 1,200 participants (seed 13) built as the workflow builds it: both issues' next-video rows."""
    from grail_sim.data.clean import clean_capsule, resolve_config
    from grail_sim.data.contract import finalise
    from grail_sim.data.demo_capsule import write_demo_capsule
    from grail_sim.prompts.build import build_issue
    from grail_sim.prompts.settings import load_settings

    capsule = folder / "capsule"
    write_demo_capsule(capsule, participants=1200, seed=13, **knobs)
    frame, _ = finalise(*clean_capsule(capsule), resolve_config())
    settings = load_settings({})
    return {issue: build_issue(frame, issue, settings, word_counter)[0]["next_video"] for issue in ("gun", "wage")}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The default demo with partisans only (no moderates, as the demo was before #25): every test here
    reads rows, whatever the population, and the choice model's acceptance test needs every viewer
    to carry the planted stance preference. One capsule for the module keeps the suite's time."""
    return _demo_rows(tmp_path_factory.mktemp("demo"),
                      leaning_shares={"liberal": 0.5, "moderate": 0.0, "conservative": 0.5})


def assert_distributions(probabilities, rows):
    assert len(probabilities) == len(rows)
    for p, row in zip(probabilities, rows):
        assert p.shape == (row["n_options"],)
        assert p.sum() == pytest.approx(1.0) and (p > 0).all()


def test_every_baseline_gives_a_positive_distribution_over_each_rows_options(demo):
    train, test = demo["gun"]["train"], demo["gun"]["test"]
    six = (json.loads(test[0]["slate_items"]) * 6)[:6]  # no train row has 6 options
    unseen = dict(test[0], id="unseen-n", n_options=6, gold_index=6, slate_items=json.dumps(six),
                  prompt=test[0]["prompt"][:1])
    rows = test + [unseen, *real_rows(3)]
    baselines = fit_baselines(train, seed=0)
    assert set(baselines) == {"uniform", "position_prior", "choice_model"}
    for name, baseline in baselines.items():
        assert_distributions(baseline.probabilities(rows), rows)
        json.dumps(baseline.describe())
    assert all(np.allclose(p, 1 / r["n_options"]) for p, r in zip(uniform(rows), rows))
    assert isinstance(baselines["uniform"], Uniform)


def test_position_prior_recovers_a_known_position_distribution():
    rng = np.random.default_rng(1)
    truth = {3: [0.6, 0.3, 0.1], 4: [0.1, 0.2, 0.3, 0.4]}
    rows = [{"id": f"r{n}-{i}", "n_options": n, "gold_index": int(rng.choice(n, p=p)) + 1}
            for n, p in truth.items() for i in range(4000)]
    bad = [{"id": "one", "n_options": 1, "gold_index": 1}, {"id": "zero", "n_options": 3, "gold_index": 0},
           {"id": "over", "n_options": 3, "gold_index": 4}]
    prior = PositionPrior.fit(rows + bad)
    for n, p in truth.items():
        assert np.abs(prior.distribution(n) - p).max() < 0.02
    described = prior.describe()
    assert described["train_rows"] == 8000
    assert described["dropped_train_rows"] == {"n_options_below_2": 1, "gold_outside_1_to_n": 2}
    # Additive smoothing exactly, and the fallbacks: a pooled prior cut to n, else uniform.
    small = PositionPrior.fit([{"n_options": 2, "gold_index": 1}] * 3 + [{"n_options": 3, "gold_index": 2}])
    assert np.allclose(small.distribution(2), [4 / 5, 1 / 5])
    assert np.allclose(small.distribution(4), (np.array([3, 1, 0, 0]) + 1) / 8)
    assert np.allclose(PositionPrior.fit([]).distribution(5), 0.2)
    with pytest.raises(ValueError, match="smoothing"):
        PositionPrior.fit(rows, smoothing=0)


def test_choice_model_reads_the_same_features_from_slate_items_and_from_prompt_text(demo):
    train, test = demo["gun"]["train"], demo["gun"]["test"]
    model = ChoiceModel.fit(train, seed=0)
    with_history = [r for r in test if r["history"] != "[]"][:10]
    assert with_history
    no_counts = []
    for row in with_history:
        slate = [dict(item, view_count=None, like_count=None) for item in json.loads(row["slate_items"])]
        no_counts.append(dict(row, slate_items=json.dumps(slate)))
    text_only = [dict(r, slate_items="[]", viewer_profile="", history="[]") for r in with_history]
    structured, parsed = decision(no_counts[0]), decision(text_only[0])
    assert [o["text"] for o in structured.options] == [o["text"] for o in parsed.options]
    assert structured.profile == parsed.profile and structured.current == parsed.current
    assert sorted(h["text"] for h in structured.history) == sorted(h["text"] for h in parsed.history)
    x_structured, _ = model.features.matrix([decision(r) for r in no_counts])
    x_text, _ = model.features.matrix([decision(r) for r in text_only])
    assert np.allclose(x_structured, x_text)
    for a, b in zip(model.probabilities(no_counts), model.probabilities(text_only)):
        assert np.allclose(a, b)
    # With counts, the structured route adds popularity and nothing else changes.
    x_counts, _ = model.features.matrix([decision(r) for r in with_history])
    changed = {model.features.names()[j] for j in np.flatnonzero(~np.isclose(x_counts, x_text).all(axis=0))}
    assert changed == {"log_views", "log_likes"}


def test_real_format_rows_are_parsed_and_scored_from_the_prompt_text_alone():
    parsed = decision(real_row(0))
    assert parsed.n == 4 and parsed.gold == 4
    assert [o["text"] for o in parsed.options][2] == "Who Does a $15 Minimum Wage Help? PragerU"
    assert [o["views"] for o in parsed.options] == [1577870, 62940, 6088611, 56870]
    assert [o["likes"] for o in parsed.options] == [11319, 321, 49500, 4183]
    assert [o["duration"] for o in parsed.options] == [122, 217, 334, 159]
    assert parsed.current == {"text": "Seattle's $15 Minimum Wage Experiment is Working Alicé Anil",
                              "channel": "alicé anil", "views": None, "likes": None, "duration": None}
    assert [h["channel"] for h in parsed.history] == ["fox business", "learn liberty"]
    assert "Initial Viewpoint: Opposes a $15 minimum wage" in parsed.profile and "SURVEY" not in parsed.profile
    assert "party identification is Democrat" in parsed.profile and parsed.ideology == -1.0
    assert decision(real_row(1, history="(no recently watched videos available)")).history == []
    # A model fitted on such rows alone learns the always-chosen video, wherever it is shown.
    rows = real_rows()
    model = ChoiceModel.fit(rows[:16], seed=0)
    probabilities = model.probabilities(rows[16:])
    assert_distributions(probabilities, rows[16:])
    assert np.mean(gold_scores(probabilities, rows[16:])["accuracy"]) == 1.0


def test_rows_the_model_cannot_read_fail_naming_the_row_and_what_is_missing(demo):
    row = real_row(7)
    no_options = dict(row, prompt=[{"role": "user", "content": "VIEWER someone\nno list here"}])
    with pytest.raises(EvaluationError, match=r"minimum_wage:00007: no slate_items and no OPTIONS section"):
        decision(no_options)
    with pytest.raises(EvaluationError, match=r"minimum_wage:00007: the OPTIONS section lists 4 options but n_options is 5"):
        decision(dict(row, n_options=5))
    demo_row = demo["gun"]["test"][0]
    slate = json.loads(demo_row["slate_items"])
    with pytest.raises(EvaluationError, match=rf"{demo_row['id']}: slate_items holds {len(slate) - 1} options"):
        decision(dict(demo_row, slate_items=json.dumps(slate[:-1]), prompt=[]))
    with pytest.raises(EvaluationError, match="n_options"):
        Uniform().probabilities([dict(row, n_options=0)])
    # Train rows that teach nothing are dropped and counted, not fatal.
    model = ChoiceModel.fit(real_rows() + [dict(row, id="x", n_options=1), dict(row, id="y", gold_index=9)])
    assert model.describe()["dropped_train_rows"] == {"n_options_below_2": 1, "gold_outside_1_to_n": 1}
    assert model.describe()["train_rows"] == 24


def test_choice_model_is_deterministic_for_a_seed(demo):
    train, test = demo["wage"]["train"][:400], demo["wage"]["test"][:50]
    first, second = ChoiceModel.fit(train, seed=3), ChoiceModel.fit(train, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(first.probabilities(test), second.probabilities(test)))
    assert first.describe() == second.describe()


def test_choice_model_beats_the_position_prior_on_the_demo_test_split(demo):
    """The key acceptance test: where the demo plants a stance preference in every viewer, the choice
    model reads it: its NLL interval lies wholly below the prior's.

    On the default demo a third of the viewers are moderates whose clicks depend on position only, and
    the pooled test rows no longer separate (the choice model's interval overlaps the prior's), so the
    test uses the partisan-only demo of the same seed, pooling both issues' test splits; each issue's
    baselines are fitted on its own train rows.
    """
    test_rows, probabilities = [], {"uniform": [], "position_prior": [], "choice_model": []}
    for issue in ("gun", "wage"):
        baselines = fit_baselines(demo[issue]["train"], seed=0)
        test_rows += demo[issue]["test"]
        for name, baseline in baselines.items():
            probabilities[name] += baseline.probabilities(demo[issue]["test"])
    groups = [r["participant_id"] or r["id"] for r in test_rows]
    stats = {}
    for name, probs in probabilities.items():
        stats[name] = bootstrap_means(groups, gold_scores(probs, test_rows), seed=0)
        print(name, {k: {m: round(v, 3) for m, v in s.items() if m != "n"} for k, s in stats[name].items()})
    choice, prior = stats["choice_model"]["nll"], stats["position_prior"]["nll"]
    assert choice["ci_high"] < prior["ci_low"]
    assert stats["choice_model"]["accuracy"]["ci_low"] > stats["position_prior"]["accuracy"]["value"]
