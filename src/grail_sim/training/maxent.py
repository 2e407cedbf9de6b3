"""The MaxEnt-GRPO objective: per-group weights over sampled completions, in closed form.

For a prompt with K sampled completions y_1..y_K, with utilities u_i (the recipe's weighted reward
sum) and reference scores l_i = log pi_ref(y_i | x) (divided by the completion's token count when
`length_normalize_ref`):

    q   = softmax(u / T_q), then q <- q * (1 - eps * K) + eps, renormalised   (full support)
    log w_i = (1 / (tau + beta)) * log q_i + (beta / (tau + beta)) * l_i    (denominator 1 when tau + beta = 0)
    w   = softmax(log w) over the group

and the loss is the w-weighted sequence NLL of the completions (`trainers.MaxEntGRPOTrainer`). Over
the K candidates, w is the maximiser of E_pi[log q] + tau * H(pi) - beta * KL(pi || pi_ref): tau
spreads mass, beta anchors to the reference, T_q and eps shape how sharply rewards rank candidates.

Kept free of any trainer so that the weights can be checked by hand (tests/test_maxent.py).
"""

from __future__ import annotations


def reference_scores(ref_per_token_logps, completion_mask, length_normalize: bool):
    """l_i: the reference log-probability of each completion, summed over its tokens (divided by its
    token count when `length_normalize`, so that long completions are not penalised for length)."""
    mask = completion_mask.to(ref_per_token_logps.dtype)
    total = (ref_per_token_logps * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1.0) if length_normalize else total


def maxent_weights(utilities, ref_scores, group_size: int, *, tau: float, beta: float, q_temperature: float,
                   q_epsilon: float):
    """The weights w of each completion (flat, groups of `group_size` consecutive completions; each
    group sums to 1). `ref_scores` may be None when beta is 0 (the reference does not enter).

    A completion whose utility is NaN (every reward function declined to score it) gets q = eps, the
    floor; a group with no scorable completion is uniform.
    """
    import torch

    if group_size < 1 or utilities.numel() % group_size:
        raise ValueError(f"{utilities.numel()} completions do not split into groups of {group_size}")
    if q_temperature <= 0:
        raise ValueError(f"maxent_q_temperature must be > 0, got {q_temperature}")
    if not 0 <= q_epsilon * group_size < 1:
        raise ValueError(f"maxent_q_epsilon * num_generations must lie in [0, 1), got {q_epsilon} * {group_size}")
    grouped = utilities.detach().float().view(-1, group_size)
    scorable = ~torch.isnan(grouped)
    logits = torch.where(scorable, grouped / q_temperature, torch.full_like(grouped, -torch.inf))
    logits = torch.where(scorable.any(dim=1, keepdim=True), logits, torch.zeros_like(logits))
    q = torch.softmax(logits, dim=1) * (1 - q_epsilon * group_size) + q_epsilon
    q = q / q.sum(dim=1, keepdim=True)
    denominator = tau + beta if tau + beta > 0 else 1.0
    log_weights = torch.log(q) / denominator
    if beta > 0:
        if ref_scores is None:
            raise ValueError("maxent weights with beta > 0 need the reference scores")
        log_weights = log_weights + (beta / denominator) * ref_scores.detach().float().view(-1, group_size)
    return torch.softmax(log_weights, dim=1).view(-1)
