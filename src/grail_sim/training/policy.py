"""The policy a run trains (a step of `grail-sim train`, grail_sim.training.main): the starting
model and tokenizer (`get_model`: a full folder, or an adapter folder started from its recorded base),
its reasoning vocabulary (`expand_reasoning_vocabulary`), quantized loading for QLoRA
(`quantized_loading`, TRL's `get_quantization_config`), and the LoRA adapter it trains
(`get_peft_model`, TRL's `get_peft_config`)."""

from __future__ import annotations

import logging
from pathlib import Path

from grail_sim.errors import RecipeError, TrainingDataError
from grail_sim.training.run import Run

LOG = logging.getLogger("grail_sim.train")


def get_model(run: Run):
    """(tokenizer, model, token_map): the starting model's tokenizer (left padding) and weights on the
    run's device, and the reasoning vocabulary's token map (None without one).

    An adapter folder as --model (the sft stage's LoRA output) starts the run from the base it
    records (run.base_dir, found and content-checked by `adapter_base` as evaluation does). The
    adapter is kept aside (run.start_adapter) for `get_peft_model` to load as the trainable adapter;
    with `use_peft: false` it is merged into the base here, so that every weight trains from the sft
    policy.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_args = run.model_args
    try:
        has_tokenizer = (Path(run.model_dir) / "tokenizer_config.json").is_file()
        tokenizer = AutoTokenizer.from_pretrained(run.model_dir if has_tokenizer else run.base_dir)
        model = AutoModelForCausalLM.from_pretrained(run.base_dir, dtype=getattr(torch, model_args.dtype),
                                                     **quantized_loading(run))
    except (OSError, ValueError) as err:
        raise TrainingDataError(f"model folder {run.model_dir} does not load: {err}") from None
    if model_args.quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=bool(run.config.gradient_checkpointing))
    if run.start_adapter is not None and not model_args.use_peft:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(run.start_adapter)).merge_and_unload()
        model.requires_grad_(True)  # peft froze the base to load the adapter; here every weight trains
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    token_map = expand_reasoning_vocabulary(run, model, tokenizer)
    if not model_args.quantized:  # bitsandbytes placed the quantised weights already
        model.to(run.device)
    return tokenizer, model, token_map


def expand_reasoning_vocabulary(run: Run, model, tokenizer):
    """`reasoning_vocab_size` > 0: the reasoning rows (copies of ids 0..N-1) added to the model, and
    the tokenizer decoding them as the tokens they mirror (grail_sim.model.reasoning_vocab); returns
    the token map, or None."""
    size = run.model_args.reasoning_vocab_size
    if not size:
        return None
    from grail_sim.model.reasoning_vocab import expand_vocabulary, mirrored_decoding

    if run.start_adapter is not None and run.model_args.use_peft:
        # The start adapter's config has no trainable tokens for the new rows, and a fresh adapter on
        # the merged model would record a base that exists nowhere on disk.
        raise RecipeError(f"{run.recipe.source}: reasoning_vocab_size with --model {run.model_dir}, an adapter, "
                          "needs use_peft: false (the adapter is merged and every weight trains), or start from "
                          "its base")
    try:
        token_map = expand_vocabulary(model, size)
    except ValueError as err:
        raise RecipeError(f"{run.recipe.source}: {err}") from None
    mirrored_decoding(tokenizer, token_map)
    LOG.info("reasoning vocabulary: %d rows added after the %d of %s, usable inside <think> only", size,
             token_map.base_vocab_size, run.base_dir)
    return token_map


def quantized_loading(run: Run) -> dict:
    """`from_pretrained` keyword arguments of `load_in_4bit` / `load_in_8bit` ({} without them): TRL's
    bitsandbytes config, the weights on this process's GPU. Fails on CPU, naming the key."""
    model_args = run.model_args
    if not model_args.quantized:
        return {}
    if run.device != "cuda":
        key = "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit"
        raise RecipeError(f"{key} needs a GPU (bitsandbytes' kernels are CUDA); this run is on CPU: set it false "
                          "or run on a GPU node")
    import torch
    from trl import get_quantization_config

    return {"quantization_config": get_quantization_config(model_args),
            "device_map": {"": torch.cuda.current_device()}}


def lora_config(model_args, num_layers: int | None = None):
    """TRL's peft `LoraConfig` of the recipe (`get_peft_config`), on the top `lora_top_layers` decoder
    layers of a model of `num_layers` when set; None with `use_peft: false`."""
    from trl import get_peft_config

    config = get_peft_config(model_args)
    if config is not None and model_args.lora_top_layers is not None:
        if num_layers is None or model_args.lora_top_layers > num_layers:
            raise RecipeError(f"lora_top_layers {model_args.lora_top_layers} exceeds the model's {num_layers} "
                              "decoder layers")
        config.layers_to_transform = list(range(num_layers - model_args.lora_top_layers, num_layers))
    return config


def get_peft_model(run: Run, model, token_map=None):
    """The LoRA-wrapped policy, or the model itself (full fine-tuning).

    The adapter trained is the start adapter (--model was the sft stage's adapter: RL continues it,
    so that the output stays one adapter on the original base), or a fresh one of the recipe's
    `lora_*` fields.
    """
    if not run.model_args.use_peft:
        return model
    from peft import PeftModel
    from peft import get_peft_model as wrap

    if run.start_adapter is not None:
        LOG.info("training the start adapter %s further (its own LoRA settings; the recipe's lora_r, lora_alpha "
                 "and lora_target_modules apply to fresh adapters only)", run.start_adapter)
        return PeftModel.from_pretrained(model, str(run.start_adapter), is_trainable=True)
    config = lora_config(run.model_args, model.config.num_hidden_layers)
    if token_map is not None:  # the new rows train beside the adapter (peft's trainable tokens)
        from grail_sim.model.reasoning_vocab import lora_trainable_tokens

        config.trainable_token_indices = lora_trainable_tokens(token_map)
    return wrap(model, config)
