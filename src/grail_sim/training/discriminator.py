"""GRAIL's online discriminator D(state, action) -> P(human); the `gail` reward built on it is in
`grail_sim.training.gail_reward`, its multi-process collectives in `grail_sim.training.distributed`.

Design choices that fix the earlier reference's flaws:
- The text puts the chosen action first, then the slate, then a truncated state (history, profile),
  and is truncated on the right, so truncation can only ever drop state, never the action.
- Positives are the human (gold) choice of every context in the batch. Negatives are the policy's
  valid choices that differ from the gold one, topped up with in-slate non-gold options sampled at
  random so that negatives never vanish as the policy improves. A replay buffer keeps both classes
  and every update draws a minibatch from it with `human_fraction` human examples (0.5: balanced),
  uniformly or favouring recent examples (`replay`).
- The reward for a step is computed before that step's discriminator updates (K per step).
- The reward is `alpha * P(human)` ("prob", default) or `alpha * log P(human)` ("log", clipped at
  log(1e-4)); an unparsable or out-of-range answer scores 0 ("prob") or the clip value ("log").

Default backbone: the policy's base folder with a one-logit sequence-classification head, cut to its
first `num_layers` decoder layers (4 by default) and with frozen token embeddings. On 2 CPU cores the
full 30-layer SmolLM2 costs several seconds per update; the cut backbone keeps the discriminator a small
share of a GRPO step (see benchmarks/). `disc_model` names any local folder or hub
encoder instead; `num_layers: null` keeps every layer.

Checkpoints hold only the trainable tensors (plus optimiser state and the replay buffer), so a
checkpoint stays small; loading rebuilds the backbone from the recorded folder and overlays them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
from collections import deque
from pathlib import Path
from typing import Any, Sequence

from grail_sim import io
from grail_sim.training.distributed import across_processes, process_group

__all__ = ["Discriminator", "GailSettings", "PooledClassifier", "render_pair"]

LOG = logging.getLogger("grail_sim.discriminator")
GAIL_PREFIX = "gail_"


@dataclasses.dataclass(frozen=True)
class GailSettings:
    """The discriminator's settings: a grail recipe's `gail_*` fields without their prefix. Their
    defaults, help text and checks are the recipe's (grail_sim.training.arguments.GrpoRecipe)."""

    use: bool
    weight: float
    alpha: float
    reward_form: str
    lr: float
    disc_model: str | None
    num_layers: int | None
    device: str
    max_history: int
    max_length: int
    updates_per_step: int
    batch_size: int
    human_fraction: float
    buffer_size: int
    replay: str
    replay_half_life: int
    sampled_negatives: bool
    seed: int

    @classmethod
    def from_recipe(cls, config) -> "GailSettings":
        """From a parsed recipe (its `gail_*` attributes)."""
        return cls(**{f.name: getattr(config, GAIL_PREFIX + f.name) for f in dataclasses.fields(cls)})

    @classmethod
    def defaults(cls, **changes: Any) -> "GailSettings":
        """The recipe's defaults with `changes` (unprefixed names), for scripts and tests."""
        from grail_sim.training.arguments import GrpoRecipe

        values = {f.name[len(GAIL_PREFIX):]: f.default for f in dataclasses.fields(GrpoRecipe)
                  if f.name.startswith(GAIL_PREFIX)}
        return cls(**{**values, **changes})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

STATE_FILE = "discriminator_state.json"
WEIGHTS_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
BUFFER_FILE = "replay_buffer.jsonl"


# ----------------------------------------------------------------------------------------------
# Rendering


def _item_text(item: dict) -> str:
    title = str(item.get("title") or item.get("id") or "?").strip()
    channel = str(item.get("channel") or "").strip()
    return f"{title} ({channel})" if channel else title


def render_pair(slate: Sequence[dict], chosen: int, *, history: Sequence[dict] = (), profile: str = "",
                max_history: int = 3) -> str:
    """Discriminator text: the action first, then the slate, then the most recent history and profile.

    `max_history` most recent prior videos, newest first; 0 means the full history, as in the prompts."""
    if not 1 <= chosen <= len(slate):
        raise ValueError(f"chosen index {chosen} outside the slate of {len(slate)} options")
    lines = [f"CHOSEN (option {chosen} of {len(slate)}): {_item_text(slate[chosen - 1])}"]
    lines.append("SLATE: " + " | ".join(f"{i}. {_item_text(item)}" for i, item in enumerate(slate, start=1)))
    recent = (list(history)[-max_history:] if max_history > 0 else list(history))[::-1]
    if recent:
        lines.append("RECENT (newest first): " + " | ".join(_item_text(item) for item in recent))
    if profile:
        lines.append(f"VIEWER: {profile.strip()}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The classifier


def PooledClassifier(backbone):  # noqa: N802 - builds an nn.Module without importing torch at module load
    """Backbone hidden states, mean-pooled over real tokens, then one logit.

    Mean pooling rather than a causal LM's last-token head: the last token of a truncated text is an
    arbitrary slate or state token, and with a cut backbone it carries little of the action line.
    """
    import torch

    class _Pooled(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone
            self.config = backbone.config
            self.score = torch.nn.Linear(backbone.config.hidden_size, 1)
            torch.nn.init.normal_(self.score.weight, std=0.02)
            torch.nn.init.zeros_(self.score.bias)

        def forward(self, input_ids, attention_mask, **_):
            hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
            return self.score(pooled.float())[:, 0]

    return _Pooled(backbone)



class Discriminator:
    """A one-logit sequence classifier trained online from a replay buffer of each class."""

    def __init__(self, settings: GailSettings, backbone: str):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.settings = settings
        self.backbone = str(backbone)
        self.device = _resolve_device(settings.device)
        self.rng = random.Random(settings.seed)
        torch.manual_seed(settings.seed)
        overrides: dict[str, Any] = {}
        try:
            from transformers import AutoConfig

            available = getattr(AutoConfig.from_pretrained(self.backbone), "num_hidden_layers", None)
            if settings.num_layers is not None and available is not None and settings.num_layers < available:
                overrides["num_hidden_layers"] = int(settings.num_layers)
            self.tokenizer = AutoTokenizer.from_pretrained(self.backbone)
            backbone = AutoModel.from_pretrained(self.backbone, dtype=torch.float32, **overrides)
        except (OSError, ValueError) as err:
            raise RuntimeError(f"discriminator backbone {self.backbone!r} does not load: {err}") from err
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "right"
        # Token embeddings are most of a small LM's parameters and barely matter for this classifier;
        # freezing them keeps the optimiser state and every checkpoint small.
        embeddings = backbone.get_input_embeddings()
        if embeddings is not None and settings.num_layers is not None:
            embeddings.weight.requires_grad_(False)
        model = PooledClassifier(backbone)
        self.model = model.to(self.device)
        self.trainable = [name for name, p in self.model.named_parameters() if p.requires_grad]
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
        self.positives: deque[str] = deque(maxlen=settings.buffer_size)
        self.negatives: deque[str] = deque(maxlen=settings.buffer_size)
        self.updates = 0
        self._broadcast_from_rank_zero()
        LOG.info(
            "discriminator: backbone %s (%s layers), %.1fM trainable parameters on %s",
            self.backbone, getattr(backbone.config, "num_hidden_layers", "?"), sum(p.numel() for p in params) / 1e6, self.device,
        )

    def _encode(self, texts: Sequence[str]):
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.settings.max_length,
                               return_tensors="pt")
        return {key: value.to(self.device) for key, value in batch.items()}

    def prob_human(self, texts: Sequence[str]) -> list[float]:
        """P(human) for each text, without gradients and in eval mode."""
        import torch

        if not texts:
            return []
        self.model.eval()
        with torch.no_grad():
            logits = self.model(**self._encode(texts))
        return torch.sigmoid(logits.float()).tolist()

    def add(self, positives: Sequence[str], negatives: Sequence[str]) -> None:
        self.positives.extend(positives)
        self.negatives.extend(negatives)

    def update(self, steps: int | None = None) -> dict[str, float]:
        """K optimiser steps on minibatches of `batch_mix()` human and synthetic examples from the
        replay buffers.

        Under several training processes (DDP / ZeRO via `accelerate launch`) every process holds a
        copy of D and a buffer of its own share of the batch; gradients are averaged across processes
        on every update, so the copies stay identical and the `gail` reward means the same on every GPU.
        """
        import torch

        steps = self.settings.updates_per_step if steps is None else steps
        has_data = bool(self.positives and self.negatives)
        world = process_group()
        if world is not None:  # every process must take the same number of collective steps
            has_data_anywhere = across_processes([torch.tensor([float(has_data)])], op="max")[0].item() > 0
        else:
            has_data_anywhere = has_data
        if not has_data_anywhere or steps <= 0:
            return {}
        n_human, n_synthetic = self.batch_mix()
        params = [p for p in self.model.parameters() if p.requires_grad]
        losses, accuracies, ages = [], [], []
        self.model.train()
        for _ in range(steps):
            self.optimizer.zero_grad(set_to_none=False)
            if has_data:
                pos, pos_ages = self._draw(self.positives, n_human)
                neg, neg_ages = self._draw(self.negatives, n_synthetic)
                ages += pos_ages + neg_ages
                labels = torch.tensor([1.0] * len(pos) + [0.0] * len(neg), device=self.device)
                logits = self.model(**self._encode(pos + neg)).float()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
                loss.backward()
                losses.append(float(loss.detach()))
                accuracies.append(float(((logits.detach() > 0).float() == labels).float().mean()))
            if world is not None:  # a process without data contributes zero gradients
                grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
                for p, grad in zip(params, across_processes(grads, op="mean")):
                    p.grad = grad
            self.optimizer.step()
            self.updates += 1
        if not losses:
            return {}
        return {"loss": sum(losses) / len(losses), "train_accuracy": sum(accuracies) / len(accuracies),
                "batch_human_fraction": n_human / (n_human + n_synthetic), "replay_age_mean": sum(ages) / len(ages)}

    def batch_mix(self) -> tuple[int, int]:
        """(human, synthetic) examples per minibatch: `human_fraction` of `batch_size`, at least one each."""
        size = self.settings.batch_size
        human = min(max(1, round(size * self.settings.human_fraction)), size - 1)
        return human, size - human

    def _draw(self, buffer: deque, count: int) -> tuple[list[str], list[int]]:
        """`count` texts drawn with replacement from a replay buffer, and their ages (0 = the newest).

        Uniform replay draws one `rng.choice` per example (the draws of runs before `replay` existed);
        recency replay weights an example `age` additions old by 0.5 ** (age / replay_half_life)."""
        newest = len(buffer) - 1
        if self.settings.replay == "uniform":
            indices = [self.rng.randrange(len(buffer)) for _ in range(count)]
        else:
            weights = [0.5 ** ((newest - index) / self.settings.replay_half_life) for index in range(len(buffer))]
            indices = self.rng.choices(range(len(buffer)), weights=weights, k=count)
        return [buffer[index] for index in indices], [newest - index for index in indices]

    def _broadcast_from_rank_zero(self) -> None:
        """Start every process's copy from rank 0's weights (the new head is randomly initialised)."""
        import torch

        if process_group() is None:
            return
        params = [p for p in self.model.parameters() if p.requires_grad]
        with torch.no_grad():
            for p, value in zip(params, across_processes([p.detach() for p in params], op="rank0")):
                p.copy_(value)

    # -- persistence -----------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Trainable tensors, optimiser, replay buffer and settings, written atomically as a folder."""
        import torch
        from safetensors.torch import save_file

        state = {name: p.detach().cpu().contiguous() for name, p in self.model.named_parameters() if p.requires_grad}
        with io.atomic_dir(directory) as tmp:
            save_file(state, str(tmp / WEIGHTS_FILE))
            torch.save(self.optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            rows = [{"label": 1, "text": t} for t in self.positives] + [{"label": 0, "text": t} for t in self.negatives]
            io.write_jsonl(tmp / BUFFER_FILE, rows)
            io.write_json(tmp / STATE_FILE, {
                "backbone": self.backbone, "settings": self.settings.as_dict(), "updates": self.updates,
                "trainable": self.trainable, "rng_state": repr(self.rng.getstate()),
            })

    def load(self, directory: str | os.PathLike) -> None:
        """Restore a folder written by `save` (same backbone and layer count)."""
        import ast

        import torch
        from safetensors.torch import load_file

        directory = Path(directory)
        state_path = directory / STATE_FILE
        if not state_path.is_file():
            raise FileNotFoundError(f"{directory}: not a discriminator checkpoint (no {STATE_FILE})")
        meta = json.loads(state_path.read_text(encoding="utf-8"))
        saved_layers = meta.get("settings", {}).get("num_layers")
        if saved_layers != self.settings.num_layers:
            raise ValueError(f"{state_path}: saved with num_layers={saved_layers}, recipe has {self.settings.num_layers}")
        tensors = load_file(str(directory / WEIGHTS_FILE))
        missing, unexpected = self.model.load_state_dict(tensors, strict=False)
        missing = [name for name in missing if name in self.trainable]
        if missing or unexpected:
            raise ValueError(f"{directory / WEIGHTS_FILE}: missing {missing[:5]}, unexpected {list(unexpected)[:5]}")
        optimizer_path = directory / OPTIMIZER_FILE
        if optimizer_path.is_file():
            self.optimizer.load_state_dict(torch.load(optimizer_path, map_location=self.device))
        self.positives.clear()
        self.negatives.clear()
        for row in io.read_jsonl(directory / BUFFER_FILE):
            (self.positives if row["label"] == 1 else self.negatives).append(row["text"])
        self.updates = int(meta.get("updates", 0))
        if meta.get("rng_state"):
            self.rng.setstate(ast.literal_eval(meta["rng_state"]))
        LOG.info("discriminator: resumed from %s (%d updates, buffer %d+/%d-)", directory, self.updates,
                 len(self.positives), len(self.negatives))


def _resolve_device(device: str) -> str:
    import torch

    if device in {"", "auto", None}:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


