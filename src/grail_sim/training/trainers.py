"""grail-sim's subclasses of TRL's `GRPOTrainer`: they change what the issue asks for and leave TRL's
loop (generation, rewards, vLLM, checkpoints) alone.

- `GrailSimGRPOTrainer` (grpo, grail and every other RL label): TRL's GRPO, plus adaptive KL control
  when the recipe sets `kl_target` (`kl_control.AdaptiveKLController` moves `self.beta`, TRL's KL
  coefficient, once per optimizer step), and `beta` logged at every step. The controller's state is
  saved in each checkpoint and restored on resume.
- Both apply reasoning-vocabulary expansion when given a `token_map` (`reasoning_vocab_size` > 0):
  generation runs with the logits processor that keeps reasoning ids inside `<think>`, and the share
  of reasoning ids among completion tokens is logged as `reasoning/token_fraction`.
- `MaxEntGRPOTrainer` (trainer: maxent): the MaxEnt-GRPO objective (`maxent.py`). The loss is the
  weighted sequence NLL of the sampled completions, with weights computed in closed form per group from
  the rewards and the reference log-probabilities; there is no explicit KL term. beta (TRL's `beta`,
  set by `init_kl_coeff`) enters through the weights, so TRL computes the reference log-probabilities
  whenever it is non-zero, with its own reference handling (a disabled or copied LoRA adapter).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from trl import GRPOTrainer

from grail_sim import io
from grail_sim.errors import TrainingDataError
from grail_sim.training.kl_control import AdaptiveKLController
from grail_sim.training.maxent import maxent_weights, reference_scores

LOG = logging.getLogger(__name__)

KL_STATE_FILE = "kl_controller.json"


@dataclass(frozen=True)
class MaxEntSettings:
    """The MaxEnt-GRPO recipe fields (`maxent_*`); `arguments.GrpoRecipe` declares them, with their
    defaults and help text, and builds this (`maxent_settings`)."""

    tau: float
    q_temperature: float
    q_epsilon: float
    length_normalize_ref: bool


class GrailSimGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with optional adaptive KL control (`kl_controller`)."""

    def __init__(self, *args, kl_controller: AdaptiveKLController | None = None, token_map=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.kl_controller = kl_controller
        self._kl_window: list[float] = []
        if kl_controller is not None:
            self.beta = kl_controller.value
        self.token_map = token_map
        self._reasoning_processor = None
        if token_map is not None:
            from grail_sim.model.reasoning_vocab import make_logits_processor

            self._reasoning_processor = make_logits_processor(self.processing_class, token_map)

    def _generate_single_turn(self, prompt_ids, *args, **kwargs):
        if self._reasoning_processor is None:
            return super()._generate_single_turn(prompt_ids, *args, **kwargs)
        from grail_sim.model.reasoning_vocab import constrained_generate, count_reasoning

        # TRL generates with the unwrapped policy (a PeftModel under LoRA) and a GenerationConfig,
        # which cannot carry a logits processor: the processor is added to that model's generate.
        with constrained_generate(self.accelerator.unwrap_model(self.model), self._reasoning_processor):
            completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        total = sum(len(ids) for ids in completion_ids)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["reasoning/token_fraction"].append(
            count_reasoning(completion_ids, self.token_map) / max(1, total))
        return completion_ids, logprobs

    def training_step(self, model, inputs, num_items_in_batch):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.beta == 0.0 and self.kl_controller is None:
            return loss
        # TRL appends one KL value per micro-batch while beta is non-zero; the controller sees their
        # mean once per optimizer step (TRL's own step boundary test, as for its step_time metric).
        kl_values = self._metrics["train"].get("kl") or []
        if kl_values:
            self._kl_window.append(float(kl_values[-1]))
        if self._step % self.current_gradient_accumulation_steps == 0:
            if self.kl_controller is not None and self._kl_window:
                self.beta = self.kl_controller.update(sum(self._kl_window) / len(self._kl_window))
            self._kl_window.clear()
            self._metrics["train"]["beta"].append(float(self.beta))
        return loss

    def _save_checkpoint(self, model, trial):
        # Written before TRL's files, so that trainer_state.json stays the last file of a checkpoint
        # (grail_sim.training.resume treats a checkpoint without it as incomplete).
        if self.kl_controller is not None and self.args.should_save:
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            io.write_json(Path(folder) / KL_STATE_FILE, self.kl_controller.state())
        super()._save_checkpoint(model, trial)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if self.kl_controller is None or checkpoint is None:
            return
        path = os.path.join(checkpoint, KL_STATE_FILE)
        if os.path.isfile(path):
            state = io.read_json_file(path, what="adaptive KL controller state", error=TrainingDataError)
            self.kl_controller = AdaptiveKLController.from_state(state)
            self.beta = self.kl_controller.value
            LOG.info("adaptive KL control resumed at beta %.4g from %s", self.beta, path)
        else:
            LOG.warning("checkpoint %s has no %s: adaptive KL control restarts at beta %.4g", checkpoint,
                        KL_STATE_FILE, self.kl_controller.value)


class MaxEntGRPOTrainer(GrailSimGRPOTrainer):
    """MaxEnt-GRPO: a weighted maximum-likelihood step on the sampled completions (see `maxent.py`)."""

    def __init__(self, *args, maxent: MaxEntSettings, **kwargs):
        super().__init__(*args, **kwargs)
        self.maxent = maxent
        self._group_utilities = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        # u_i = sum_f w_f r_f(y_i), gathered over processes (a group may span them); NaN when no reward
        # function scored the completion.
        import torch

        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        utilities = (rewards_per_func * weights).nansum(dim=1)
        utilities[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
        self._group_utilities = utilities
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        local = output["completion_ids"].size(0)
        scores = None
        if self.beta > 0:
            scores = reference_scores(output["ref_per_token_logps"], output["completion_mask"],
                                      self.maxent.length_normalize_ref)
            scores = self.accelerator.gather(scores)
        weights = maxent_weights(self._group_utilities, scores, group_size, tau=self.maxent.tau, beta=float(self.beta),
                                 q_temperature=self.maxent.q_temperature, q_epsilon=self.maxent.q_epsilon)
        start = self.accelerator.process_index * local
        output["maxent_weights"] = weights[start:start + local].to(output["completion_ids"].device)
        grouped = weights.view(-1, group_size)
        entropy = -(grouped * grouped.clamp(min=1e-12).log()).sum(dim=1).mean().item()
        self._metrics[mode]["maxent/weight_entropy"].append(entropy)
        self._metrics[mode]["maxent/weight_max"].append(grouped.max(dim=1).values.mean().item())
        return output

    def _compute_loss(self, model, inputs):
        import torch

        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([inputs["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], completion_mask], dim=1)
        per_token_logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True)
        mask = completion_mask.to(per_token_logps.dtype)
        sequence_nll = -(per_token_logps * mask).sum(dim=-1)
        mode = "train" if self.model.training else "eval"
        group_size = self.num_generations if mode == "train" else self.num_generations_eval
        prompts_here = completion_ids.size(0) / group_size
        loss = (inputs["maxent_weights"] * sequence_nll).sum() / prompts_here
        if mode == "train":
            loss = loss / self.current_gradient_accumulation_steps
        self._log_loss_metrics(mode, per_token_logps, entropies, mask, inputs)
        return loss

    def _log_loss_metrics(self, mode: str, per_token_logps, entropies, mask, inputs) -> None:
        import torch

        def masked_mean(values) -> float:
            totals = self.accelerator.reduce(torch.stack([(values * mask).sum(), mask.sum()]), reduction="sum")
            return (totals[0] / totals[1].clamp(min=1.0)).item()

        with torch.no_grad():
            self._metrics[mode]["entropy"].append(masked_mean(entropies))
            if "ref_per_token_logps" in inputs:
                # TRL's k3 estimator of KL(pi || pi_ref), as its GRPO loss logs it.
                delta = inputs["ref_per_token_logps"] - per_token_logps
                self._metrics[mode]["kl"].append(masked_mean(torch.exp(delta) - delta - 1))


def trainer_class(trainer: str) -> type[GrailSimGRPOTrainer]:
    """The trainer class of a recipe's `trainer` label: maxent's own objective, TRL's GRPO otherwise."""
    return MaxEntGRPOTrainer if trainer == "maxent" else GrailSimGRPOTrainer
