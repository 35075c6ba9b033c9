"""A character-level Hugging Face tokenizer for the synthetic arithmetic world.

The policy we train here is tiny and trained from scratch, so it gets its own
tokenizer: one token per character (every digit its own token, which is what
makes carrying learnable) plus ChatML special tokens. It is saved as a plain
`PreTrainedTokenizerFast` with a chat template, so transformers and vLLM load
it like any other checkpoint's tokenizer.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models
from transformers import PreTrainedTokenizerFast

PAD_TOKEN = "<|pad|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Characters outside the vocabulary (non-ASCII text sent to a server) map here
# instead of being silently dropped.
UNK_TOKEN = "<|unk|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, UNK_TOKEN)

# Every printable ASCII character, so any later tag or label string (a PRM's
# step tag, '+'/'-') encodes without growing the vocabulary. `string.printable`
# also holds \x0b and \x0c, which no text here uses.
CHARACTERS = tuple(c for c in string.printable if c not in "\x0b\x0c")

# ChatML, as Qwen and SmolLM use it; the generation prompt opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

DEFAULT_MODEL_MAX_LENGTH = 768  # tokens (= characters); the longest arith chat is 676


def build_tokenizer(model_max_length: int = DEFAULT_MODEL_MAX_LENGTH) -> PreTrainedTokenizerFast:
    """The arith tokenizer: special tokens get ids 0..3, then one id per character."""
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    # BPE with no merges is a character-level model that needs no pre-tokenizer,
    # so spaces and newlines are ordinary characters rather than split points.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK_TOKEN))
    core.add_special_tokens(list(SPECIAL_TOKENS))
    # Without a decoder, `decode` joins tokens with spaces; Fuse concatenates them.
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        # Llama's forward takes no token_type_ids; do not produce them.
        model_input_names=["input_ids", "attention_mask"],
        # The default clean-up rewrites " ," to "," and breaks the round trip.
        clean_up_tokenization_spaces=False,
    )
