"""PRM backends implementing `StepScorer`: one score in [0, 1] per reasoning step.

Ours: `StepTagPRM` runs a step-tag PRM (a causal LM that reads +/- logits at a
tag token after each step); `LikelihoodPRM` runs a likelihood verifier (a causal
LM whose token probabilities, calibrated, judge each step). Published ones
(Math-Shepherd, OpenR's Math-psa, Qwen2.5-Math-PRM) run as `PublishedPRM`.
`load_prm` picks the right one from the checkpoint (openr.prm.formats); all run
in-process with transformers. A PRM on another server is openr.prm.remote.
"""

from pathlib import Path

from openr.prm.causal_lm import DEFAULT_CACHE_MB, DEFAULT_FORWARD_BATCH_SIZE
from openr.prm.formats import AUTO, FORMAT_CHOICES, FORMATS, OURS, PRMFormatError, detect_format
from openr.prm.likelihood import LikelihoodPRM, is_likelihood_verifier
from openr.prm.public import PublishedPRM, check_published
from openr.prm.step_tag import StepTagFormat, StepTagPRM, encode_steps, tag_margins


def check_prm(model_dir: str | Path, prm_format: str = AUTO) -> str:
    """The format of a PRM checkpoint, checked as far as can be without its
    weights (config, tokenizer, tag and label tokens); `PRMFormatError` otherwise.
    Run when the server starts, so a bad PRM never fails a request."""
    found = detect_format(model_dir, prm_format)
    if found != OURS:
        check_published(model_dir, found)
    elif not is_likelihood_verifier(model_dir):
        from transformers import AutoConfig, AutoTokenizer

        try:
            step_tag = StepTagFormat.from_config(AutoConfig.from_pretrained(str(model_dir)))
            tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
            step_tag.tag_id(tokenizer), step_tag.label_ids(tokenizer)
        except (OSError, ValueError) as exc:
            raise PRMFormatError(f"PRM {model_dir} ({OURS} format): {exc}") from exc
    return found


def load_prm(model_dir: str | Path, device: str = "cpu", forward_batch_size: int = DEFAULT_FORWARD_BATCH_SIZE,
             cache_mb: float = DEFAULT_CACHE_MB, prm_format: str = AUTO) -> StepTagPRM | LikelihoodPRM | PublishedPRM:
    """The scorer for a PRM checkpoint of any format (`prm_format`, or detected);
    `cache_mb` bounds its prefix cache (0: off; see openr.prm.causal_lm)."""
    found = detect_format(model_dir, prm_format)
    options = dict(device=device, forward_batch_size=forward_batch_size, cache_mb=cache_mb)
    if found != OURS:
        return PublishedPRM(model_dir, found, **options)
    kind = LikelihoodPRM if is_likelihood_verifier(model_dir) else StepTagPRM
    return kind(model_dir, **options)


__all__ = ["FORMATS", "FORMAT_CHOICES", "LikelihoodPRM", "PRMFormatError", "PublishedPRM", "StepTagFormat",
           "StepTagPRM", "check_prm", "encode_steps", "load_prm", "tag_margins"]
