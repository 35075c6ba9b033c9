"""`openr train prm --lora`: train a published-format PRM as peft LoRA adapters
on its base causal LM, as OpenR's Math-psa is built.

math-shepherd writes the adapter itself, in Math-psa's shape (adapter_config.json
naming the base, adapter weights, the tokenizer), which `openr serve --prm DIR
--prm-format math-shepherd` loads onto its base. qwen-prm has no adapter form
that vLLM's pooling runner reads, so its LoRA is merged into the Qwen2 body and
the checkpoint saved whole; its 2-label head is trained in full either way.
Tokens the format added to the tokenizer have no trained embedding rows in the
base, so those rows (input, and output where not tied) train and save with the
adapter through peft's `trainable_token_indices`, not the whole matrices.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.constants import INCLUDE_LINEAR_LAYERS_SHORTHAND, TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from openr.prm.formats import MATH_SHEPHERD, QWEN_PRM
from openr.prm.public import TokenClassifier

LORA_FORMATS = (MATH_SHEPHERD, QWEN_PRM)  # the formats `--lora` trains
ALL_LINEAR = INCLUDE_LINEAR_LAYERS_SHORTHAND  # peft's "all-linear": every linear layer but the output layer


def target_modules(model: torch.nn.Module, wanted: str | None) -> str | list[str]:
    """The modules LoRA wraps: `wanted` (comma-separated names, or all-linear), else
    peft's choice for the architecture (q_proj, v_proj for Llama and Qwen2), else
    every linear layer."""
    if wanted:
        return ALL_LINEAR if wanted == ALL_LINEAR else [name.strip() for name in wanted.split(",") if name.strip()]
    return TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model.config.model_type, ALL_LINEAR)


def module_name(model: torch.nn.Module, module: torch.nn.Module | None) -> str | None:
    return next((name for name, m in model.named_modules() if m is module), None)


def added_rows(model: PreTrainedModel, added: list[int]) -> dict[str, list[int]] | None:
    """peft's `trainable_token_indices`: the added tokens' rows of the input
    embeddings and, when it is not tied to them, of the output layer (where the
    label tokens' logits come from)."""
    if not added:
        return None
    rows = {module_name(model, model.get_input_embeddings()): added}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None and output.weight is not model.get_input_embeddings().weight:
        rows[module_name(model, output)] = added
    return rows


def added_token_ids(init_from: str, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids the format's tokens took beyond the base checkpoint's own tokenizer."""
    return list(range(len(AutoTokenizer.from_pretrained(init_from)), len(tokenizer)))


def with_lora(model: PreTrainedModel | TokenClassifier, tokenizer: PreTrainedTokenizerBase, config):
    """`model` with LoRA adapters (`config`: a PRMTrainConfig's lora_* fields), the
    base frozen; a TokenClassifier gets them on its body, its head left trainable."""
    body = model.body if isinstance(model, TokenClassifier) else model
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=target_modules(body, config.lora_target_modules),
                      trainable_token_indices=added_rows(body, added_token_ids(config.init_from, tokenizer)),
                      task_type=None if isinstance(model, TokenClassifier) else "CAUSAL_LM")
    adapted = get_peft_model(body, lora)
    # Math-psa's adapter_config names its base as the path it was trained from; so does ours.
    adapted.peft_config["default"].base_model_name_or_path = config.init_from
    if isinstance(model, TokenClassifier):
        return TokenClassifier(adapted, model.head)
    return adapted


def save_adapter(model: PeftModel, out: Path) -> None:
    """adapter_config.json and the adapter's weights: the LoRA matrices and the
    added tokens' rows, never the base's embedding matrices."""
    model.save_pretrained(out, save_embedding_layers=False)


def merged(model: TokenClassifier) -> TokenClassifier:
    """The classifier with its body's adapters folded into the weights (in place,
    as peft's merge_and_unload does: the model scores the same after)."""
    body = model.body.merge_and_unload() if isinstance(model.body, PeftModel) else model.body
    return TokenClassifier(body, model.head)
