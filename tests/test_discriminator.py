"""GRAIL's discriminator: rendering order, learning to separate human from random choices,
class balance as the policy improves, the reward computed before the update, save/load."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_train import make_prompt_rows

from grail_sim.training import discriminator as disc
from grail_sim.training.arguments import GrpoRecipe
from grail_sim.training.gail_reward import GailReward

# One intra-op torch thread for every test here (conftest.one_torch_thread says why).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _settings(**kwargs) -> disc.GailSettings:
    values = {"lr": 3e-3, "batch_size": 16, "max_length": 96, "updates_per_step": 1, "seed": 0}
    values.update(kwargs)
    return disc.GailSettings.defaults(**values)


def _grail_recipe(*flags: str):
    from pathlib import Path

    from grail_sim.training.parser import parse_recipe
    from grail_sim.training.run import run_defaults

    recipe = Path(__file__).resolve().parents[1] / "config" / "recipes" / "grail.yaml"
    return parse_recipe(["--config", str(recipe), "--dataset", "D", "--model", "M", "--out", "OUT", *flags],
                        defaults=run_defaults)


def test_render_puts_the_action_first_so_truncation_keeps_it():
    row = make_prompt_rows(1)[0]
    slate = json.loads(row["slate_items"])
    history = json.loads(row["history"]) * 20
    text = disc.render_pair(slate, 2, history=history, profile=row["viewer_profile"] * 50, max_history=3)
    first_line = text.splitlines()[0]
    assert first_line.startswith(f"CHOSEN (option 2 of {len(slate)}): {slate[1]['title']}")
    assert text.index("SLATE:") < text.index("RECENT") < text.index("VIEWER:")
    assert text.count("Earlier video") == 3  # only the most recent max_history items
    with pytest.raises(ValueError, match="outside the slate"):
        disc.render_pair(slate, len(slate) + 1)


def test_max_history_zero_means_the_full_history_as_in_the_prompts():
    row = make_prompt_rows(1)[0]
    slate = json.loads(row["slate_items"])
    history = [{"title": f"Earlier video {i}", "channel": "Hist"} for i in range(1, 8)]
    full = disc.render_pair(slate, 1, history=history, max_history=0)
    recent = full.splitlines()[2]
    assert recent.startswith("RECENT (newest first): Earlier video 7")
    assert all(f"Earlier video {i} " in recent for i in range(1, 8))
    assert disc.render_pair(slate, 1, history=history, max_history=2).count("Earlier video") == 2
    assert disc.GailSettings.defaults(max_history=0).max_history == 0
    assert disc.GailSettings.from_recipe(_grail_recipe("gail_max_history=0").config).max_history == 0
    field = next(f for f in dataclasses.fields(GrpoRecipe) if f.name == "gail_max_history")
    assert "0 = the full history" in field.metadata["help"]


@pytest.fixture(scope="module")
def pairs():
    """Human choices with a consistent taste (news clips) against random in-slate choices, same contexts."""
    import random

    rng = random.Random(1)
    human, other = [], []
    for row in make_prompt_rows(16, seed=5):
        slate = json.loads(row["slate_items"])
        slate[row["gold_index"] - 1]["title"] = f"Evening news clip {rng.randint(1, 99)}"
        history = json.loads(row["history"])
        wrong = rng.choice([i for i in range(1, len(slate) + 1) if i != row["gold_index"]])
        human.append(disc.render_pair(slate, row["gold_index"], history=history, profile=row["viewer_profile"]))
        other.append(disc.render_pair(slate, wrong, history=history, profile=row["viewer_profile"]))
    return human, other


@pytest.mark.slow
def test_discriminator_learns_to_separate_human_from_random_choices(tiny_model_dir, pairs):
    human, other = pairs
    model = disc.Discriminator(_settings(), tiny_model_dir)
    before = _separation(model, human, other)
    model.add(human, other)
    for _ in range(40):
        metrics = model.update()
    after = _separation(model, human, other)
    assert after["accuracy"] >= 0.85, (before, after)
    assert after["gap"] > before["gap"] + 0.2, (before, after)
    assert metrics["loss"] < 0.5


def _separation(model, human, other) -> dict:
    p_human, p_other = model.prob_human(human), model.prob_human(other)
    correct = sum(p > 0.5 for p in p_human) + sum(p <= 0.5 for p in p_other)
    return {"accuracy": correct / (len(human) + len(other)),
            "gap": sum(p_human) / len(p_human) - sum(p_other) / len(p_other)}


@pytest.mark.slow
def test_gail_reward_scores_before_updating_and_keeps_classes_balanced(tiny_model_dir, tmp_path):
    rows = make_prompt_rows(2, seed=3)
    generations = 3
    batch = [row for row in rows for _ in range(generations)]
    # The policy always answers the gold index: no policy negatives, so in-slate ones are sampled.
    completions = [[{"role": "assistant", "content": f"<think>t</think><answer>{row['gold_index']}</answer>"}]
                   for row in batch]
    completions[1] = [{"role": "assistant", "content": "no answer"}]
    columns = {key: [row[key] for row in batch] for key in batch[0] if key != "prompt"}
    logged = {}
    reward = GailReward(disc.Discriminator(_settings(alpha=2.0), tiny_model_dir))
    expected = reward.discriminator.prob_human(
        [disc.render_pair(json.loads(r["slate_items"]), r["gold_index"], history=json.loads(r["history"]),
                          profile=r["viewer_profile"]) for r in batch])
    scores = reward(prompts=[row["prompt"] for row in batch], completions=completions,
                    log_metric=lambda name, value: logged.__setitem__(name, value), **columns)
    assert scores[1] == 0.0  # unparsable: no reward
    for index in (0, 2, 3, 4, 5):
        assert scores[index] == pytest.approx(2.0 * expected[index], abs=1e-5)  # before the update
    assert logged["gail/n_positive"] == 2 and logged["gail/n_negative_policy"] == 0
    assert logged["gail/n_negative_sampled"] == 2  # topped up to balance the two positives
    assert logged["gail/valid_rate"] == pytest.approx(5 / 6)
    assert reward.discriminator.updates == 1 and "gail/loss" in logged

    # Frozen (evaluation): scores without learning.
    reward.is_training = lambda: False
    reward(prompts=[row["prompt"] for row in batch], completions=completions, **columns)
    assert reward.discriminator.updates == 1

    # Save and load restore the weights, optimiser and replay buffer.
    reward.discriminator.save(tmp_path / "d")
    restored = disc.Discriminator(_settings(alpha=2.0), tiny_model_dir)
    restored.load(tmp_path / "d")
    assert restored.updates == 1 and len(restored.positives) == 2 and len(restored.negatives) == 2
    sample = [disc.render_pair(json.loads(rows[0]["slate_items"]), 1)]
    assert restored.prob_human(sample) == pytest.approx(reward.discriminator.prob_human(sample), abs=1e-6)
    with pytest.raises(ValueError, match="num_layers"):
        disc.Discriminator(_settings(num_layers=1), tiny_model_dir).load(tmp_path / "d")


def _two_process_worker(rank: int, world: int, init_file: str, model_dir: str, human, other, out_dir: str):
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        # Different seeds: without the broadcast the two copies would start from different heads.
        model = disc.Discriminator(_settings(seed=rank), model_dir)
        if rank == 0:
            model.add(human, other)
        else:
            model.add(human[:4], [])  # no negatives yet: this process contributes zero gradients
        for _ in range(3):
            model.update()
        torch.save({name: p.detach() for name, p in model.model.named_parameters() if p.requires_grad},
                   f"{out_dir}/rank{rank}.pt")
        torch.save({"updates": model.updates}, f"{out_dir}/meta{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_discriminator_copies_stay_identical_across_training_processes(tiny_model_dir, pairs, tmp_path):
    """Under `accelerate launch` every process holds a copy of D; gradients are averaged so they agree."""
    import torch
    import torch.multiprocessing as mp

    human, other = pairs
    mp.spawn(_two_process_worker, args=(2, str(tmp_path / "init"), str(tiny_model_dir), human, other, str(tmp_path)),
             nprocs=2, join=True)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert rank0.keys() == rank1.keys() and rank0
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert torch.load(tmp_path / "meta1.pt")["updates"] == 3  # the process without data still stepped
    # And the shared weights did move: they differ from a fresh single-process copy with seed 0.
    fresh = disc.Discriminator(_settings(seed=0), tiny_model_dir)
    moved = [name for name, p in fresh.model.named_parameters() if p.requires_grad
             and not torch.allclose(p.detach(), rank0[name])]
    assert moved


# --- the human/synthetic mixer (#14) ------------------------------------------------------------------


@pytest.mark.parametrize("batch_size, fraction, expected", [(16, 0.5, (8, 8)), (16, 0.25, (4, 12)),
                                                            (4, 0.9, (3, 1)), (4, 0.01, (1, 3))])
def test_batch_mix_follows_human_fraction_with_one_of_each_class_at_least(batch_size, fraction, expected):
    settings = _settings(batch_size=batch_size, human_fraction=fraction)
    mixer = disc.Discriminator.__new__(disc.Discriminator)  # the mix needs the settings only, not a model
    mixer.settings = settings
    assert mixer.batch_mix() == expected


def test_replay_draws_uniformly_or_by_recency():
    import random
    from collections import deque

    buffer = deque(f"text {i}" for i in range(400))
    ages = {}
    for replay in ("uniform", "recency"):
        drawer = disc.Discriminator.__new__(disc.Discriminator)
        drawer.settings, drawer.rng = _settings(replay=replay, replay_half_life=20), random.Random(0)
        texts, drawn_ages = drawer._draw(buffer, 4000)
        assert all(text == buffer[len(buffer) - 1 - age] for text, age in zip(texts, drawn_ages))
        ages[replay] = sum(drawn_ages) / len(drawn_ages)
    assert 180 < ages["uniform"] < 220  # mean age of a uniform draw from 400: 199.5
    assert 20 < ages["recency"] < 40  # half-life 20 additions: mean age about 20 / ln 2 = 28.9


@pytest.mark.parametrize("flags, message", [
    (["gail_human_fraction=0"], r"grail\.yaml: gail_human_fraction must be a number > 0 and < 1"),
    (["gail_human_fraction=1"], r"grail\.yaml: gail_human_fraction must be a number > 0 and < 1"),
    (["gail_replay=fifo"], r"grail\.yaml: gail_replay must be one of uniform, recency"),
    (["gail_replay_half_life=0"], r"grail\.yaml: gail_replay_half_life must be a number >= 1"),
])
def test_mixer_settings_fail_naming_the_key(flags, message):
    from grail_sim.errors import RecipeError

    with pytest.raises(RecipeError, match=message):
        _grail_recipe(*flags)


def test_mixer_settings_come_from_the_recipes_gail_fields():
    config = _grail_recipe("gail_human_fraction=0.25", "gail_replay=recency", "gail_replay_half_life=20").config
    settings = disc.GailSettings.from_recipe(config)
    assert (settings.human_fraction, settings.replay, settings.replay_half_life) == (0.25, "recency", 20)


@pytest.mark.slow
def test_an_update_logs_the_realised_mix(tiny_model_dir, pairs):
    human, other = pairs
    model = disc.Discriminator(_settings(batch_size=8, human_fraction=0.25, replay="recency"), tiny_model_dir)
    model.add(human, other)
    metrics = model.update()
    assert metrics["batch_human_fraction"] == 0.25 and metrics["replay_age_mean"] >= 0
