"""Tiny random checkpoints in the exact formats of the PRMs people publish, and
a Qwen2.5-Math-style policy, built in seconds with no hub: a byte-level BPE
tokenizer (Qwen's pre-tokenizer) trained here so the real tag and label
tokens (` ки`, ` \\n\\n\\n\\n\\n`, ` +`/` -`, `<extra_0>`) are single tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen2Model

QWEN_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
              r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"]
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
# Qwen2.5-Math-Instruct's chat template, tools left out: its system prompt unless one is given.
QWEN_MATH_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\n" + SYSTEM_PROMPT.replace("\\", "\\\\") + "<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.role != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CORPUS = ("What is 12 + 30? Add the tens first ки\n12 + 30 = 42 ки\nThe answer is \\boxed{42} ки\n"
          " + - + - \n\n\n\n\n step \n\n\n\n\n Compute 7 * 6. 7 * 6 = 42\n\nThe answer is 42.\n\n")
# head_dim 64: vLLM's CPU attention rejects smaller heads.
TINY_QWEN = dict(hidden_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=64, num_hidden_layers=2,
                 intermediate_size=256, max_position_embeddings=512, tie_word_embeddings=False)


def byte_level_tokenizer(vocab_size: int = 360, specials: tuple[str, ...] = tuple(SPECIALS)) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator([CORPUS] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=QWEN_MATH_TEMPLATE, model_input_names=["input_ids", "attention_mask"])


def qwen_config(tokenizer, **extra) -> Qwen2Config:
    return Qwen2Config(vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, **TINY_QWEN, **extra)


def causal_lm(out: Path, seed: int = 0) -> Path:
    """A tiny random Qwen2 causal LM with the tokenizer: a policy, or a
    Math-Shepherd-format PRM (the format is the text and tokens, not the architecture)."""
    torch.manual_seed(seed)
    tokenizer = byte_level_tokenizer()
    model = Qwen2ForCausalLM(qwen_config(tokenizer))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def lora_adapter(base: Path, out: Path, seed: int = 1) -> Path:
    """An OpenR-format PRM: a LoRA adapter (random, non-zero) on `base`, with no tokenizer of its own."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    model = get_peft_model(Qwen2ForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(out)
    return out


def qwen_prm(out: Path, seed: int = 2, step_tag: bool = True) -> Path:
    """A tiny Qwen2ForProcessRewardModel as the hub ships it: the Qwen2 body under
    `model.`, the 2-label head `score.0`/`score.2`, one safetensors file
    (without `step_tag`, its tokenizer lacks <extra_0>)."""
    torch.manual_seed(seed)
    tokenizer = byte_level_tokenizer(specials=tuple(SPECIALS) if step_tag else tuple(SPECIALS[:3]))
    config = qwen_config(tokenizer, num_labels=2, architectures=["Qwen2ForProcessRewardModel"])
    body = Qwen2Model(config)
    hidden = config.hidden_size
    head = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    tensors = {f"model.{k}": v for k, v in body.state_dict().items()}
    tensors |= {f"score.{k}": v * 4 for k, v in head.state_dict().items()}  # larger: scores away from 0.5
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"))
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
