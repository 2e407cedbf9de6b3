"""The policy a run trains (a step of `grail-sim train`, grail_sim.training.main): the starting
model and tokenizer (`get_model`: a full folder, or an adapter folder started from its recorded base),
its reasoning vocabulary (`expand_reasoning_vocabulary`), quantized loading for QLoRA
(`quantized_loading`), and the LoRA adapter it trains (`get_peft_model`)."""

from __future__ import annotations

import logging
from pathlib import Path

from grail_sim.errors import RecipeError, TrainingDataError
from grail_sim.model.loading import adapter_base
from grail_sim.training.run import Run

LOG = logging.getLogger("grail_sim.train")


def get_model(run: Run):
    """The starting model's tokenizer (left padding) and weights, on the run's device.

    An adapter folder as --model (the sft stage's LoRA output) starts the run from the base it
    records, found and content-checked by `adapter_base` as evaluation does. The adapter is kept
    aside (run.start_adapter) for `get_peft_model` to load as the trainable adapter; with LoRA off
    it is merged into the base here, so that every weight trains from the sft policy.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (Path(run.model_dir) / "adapter_config.json").is_file():
        run.start_adapter = Path(run.model_dir)
        run.base_dir = adapter_base(run.model_dir)
        LOG.info("starting from the adapter %s on its base %s", run.model_dir, run.base_dir)
    else:
        run.base_dir = run.model_dir
    try:
        has_tokenizer = (Path(run.model_dir) / "tokenizer_config.json").is_file()
        tokenizer = AutoTokenizer.from_pretrained(run.model_dir if has_tokenizer else run.base_dir)
        model = AutoModelForCausalLM.from_pretrained(run.base_dir, dtype=getattr(torch, run.script.dtype),
                                                     **quantized_loading(run))
    except (OSError, ValueError) as err:
        raise TrainingDataError(f"model folder {run.model_dir} does not load: {err}") from None
    if run.script.quantization.enabled:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(run.trl.get("gradient_checkpointing", False)))
    if run.start_adapter is not None and not run.script.lora.enabled:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(run.start_adapter)).merge_and_unload()
        model.requires_grad_(True)  # peft froze the base to load the adapter; here every weight trains
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    expand_reasoning_vocabulary(run, model, tokenizer)
    if not run.script.quantization.enabled:  # bitsandbytes placed the quantised weights already
        model.to(run.device)
    return tokenizer, model


def expand_reasoning_vocabulary(run: Run, model, tokenizer) -> None:
    """`reasoning_vocab_size` > 0: the reasoning rows (copies of ids 0..N-1) added to the model, and
    the tokenizer decoding them as the tokens they mirror (grail_sim.model.reasoning_vocab)."""
    size = getattr(run.script, "reasoning_vocab_size", 0)  # an RL recipe key; sft recipes have none
    if not size:
        return
    from grail_sim.model.reasoning_vocab import expand_vocabulary, mirrored_decoding

    if run.start_adapter is not None and run.script.lora.enabled:
        # The start adapter's config has no trainable tokens for the new rows, and a fresh adapter on
        # the merged model would record a base that exists nowhere on disk.
        raise RecipeError(f"recipe {run.recipe_path}: reasoning_vocab_size with --model {run.model_dir}, an adapter, "
                          "needs lora.enabled: false (the adapter is merged and every weight trains), or start from "
                          "its base")
    try:
        run.token_map = expand_vocabulary(model, size)
    except ValueError as err:
        raise RecipeError(f"recipe {run.recipe_path}: {err}") from None
    mirrored_decoding(tokenizer, run.token_map)
    LOG.info("reasoning vocabulary: %d rows added after the %d of %s, usable inside <think> only", size,
             run.token_map.base_vocab_size, run.base_dir)


def quantized_loading(run: Run) -> dict:
    """`from_pretrained` keyword arguments of the recipe's `quantization` section ({} without one):
    bitsandbytes' config, the weights on this process's GPU. Fails on CPU, naming the key."""
    quantization = run.script.quantization
    if not quantization.enabled:
        return {}
    if run.device != "cuda":
        raise RecipeError(f"quantization.bits {quantization.bits} needs a GPU (bitsandbytes' kernels are CUDA); "
                          "this run is on CPU: remove the quantization section or run on a GPU node")
    import torch

    return {"quantization_config": quantization.to_bitsandbytes(),
            "device_map": {"": torch.cuda.current_device()}}


def get_peft_model(run: Run, model):
    """The LoRA-wrapped policy, or the model itself (full fine-tuning).

    The adapter trained is, in order: the warm-up's when one was saved (it continued the start
    adapter, if any), the start adapter (--model was the sft stage's adapter: RL continues it, so
    that the output stays one adapter on the original base), or a fresh one from the `lora` section.
    """
    if not run.script.lora.enabled:
        return model
    from peft import PeftModel
    from peft import get_peft_model as wrap

    if (run.warmup_dir / "adapter_config.json").is_file():
        LOG.info("reusing the warm-up adapter in %s", run.warmup_dir)
        return PeftModel.from_pretrained(model, str(run.warmup_dir), is_trainable=True)
    if run.start_adapter is not None:
        LOG.info("training the start adapter %s further (its own LoRA settings; the recipe's lora r, alpha and "
                 "target_modules apply to fresh adapters only)", run.start_adapter)
        return PeftModel.from_pretrained(model, str(run.start_adapter), is_trainable=True)
    config = run.script.lora.to_peft(model.config.num_hidden_layers)
    if run.token_map is not None:  # the new rows train beside the adapter (peft's trainable tokens)
        from grail_sim.model.reasoning_vocab import lora_trainable_tokens

        config.trainable_token_indices = lora_trainable_tokens(run.token_map)
    return wrap(model, config)
