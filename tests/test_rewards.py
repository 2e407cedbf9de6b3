"""Reward functions on hand-made completions (conversational and plain), weights and the registry."""

from __future__ import annotations

import math

import pytest

from grail_sim.training import rewards


def _chat(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


COMPLETIONS = [
    _chat("<think>history is about guns</think><answer>2</answer>"),  # right, formatted
    _chat("<think>x</think><answer>3</answer>"),  # wrong, formatted
    _chat("<answer>2</answer>"),  # right, bare answer
    _chat("<think>x</think><answer>7</answer>"),  # out of range
    _chat("I would watch the second one"),  # unparsable
    "<think>plain string</think><answer>2</answer>",  # non-conversational completion
]
GOLD = [2] * 6
N_OPTIONS = [4] * 6


def test_answer_accuracy_scores_only_the_gold_index():
    scores = rewards.answer_accuracy(COMPLETIONS, gold_index=GOLD, n_options=N_OPTIONS)
    assert scores == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]


def test_format_gives_partial_credit_for_a_bare_parsable_answer():
    scores = rewards.format(COMPLETIONS, gold_index=GOLD, n_options=N_OPTIONS)
    assert scores == [1.0, 1.0, 0.5, 1.0, 0.0, 1.0]
    # Opinion rows (gold_index 0): a bare 0-1 index earns the partial credit, a choice-style 7 does not.
    opinion_rows = [_chat("<answer>0.4</answer>"), _chat("<answer>7</answer>")]
    assert rewards.format(opinion_rows, gold_index=[0, 0], n_options=[0, 0]) == [0.5, 0.0]


def test_opinion_reward_is_closeness_on_the_unit_scale():
    completions = [_chat("<think>t</think><answer>0.40</answer>"), _chat("<answer>0.9</answer>"),
                   _chat("<answer>4</answer>"), _chat("<answer>0.5</answer>")]
    scores = rewards.opinion(completions, opinion_after=[0.5, 0.5, 0.5, float("nan")])
    assert scores[0] == pytest.approx(0.9) and scores[1] == pytest.approx(0.6)
    assert scores[2] == 0.0  # off the 0-1 scale
    assert scores[3] == 0.0  # missing target


def test_reward_without_its_column_names_it():
    with pytest.raises(KeyError, match="gold_index"):
        rewards.answer_accuracy(COMPLETIONS, n_options=N_OPTIONS)


def test_unknown_reward_lists_the_valid_ones():
    with pytest.raises(KeyError, match=r"answer_accuracy.*format.*gail"):
        rewards.get_reward("accuracy")
    assert rewards.get_reward("format") is rewards.format


def test_weights_are_normalised_and_checked():
    assert rewards.normalise_weights([3, 1], ["a", "b"]) == [0.75, 0.25]
    assert sum(rewards.normalise_weights([0.8, 0.2, 0.3], ["a", "b", "gail"])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'b'"):
        rewards.normalise_weights([1, -1], ["a", "b"])
    with pytest.raises(ValueError, match="sum to 0"):
        rewards.normalise_weights([0, 0], ["a", "b"])
    with pytest.raises(ValueError, match="2 rewards"):
        rewards.normalise_weights([1], ["a", "b"])
    assert not any(math.isnan(w) for w in rewards.normalise_weights([1e-9, 1], ["a", "b"]))
