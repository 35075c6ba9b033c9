"""PRM backends implementing `StepScorer`: one score in [0, 1] per reasoning step.

`StepTagPRM` runs a step-tag PRM (a causal LM that reads +/- logits at a tag
token after each step); `LikelihoodPRM` runs a likelihood verifier (a causal LM
whose token probabilities, calibrated, judge each step). `load_prm` picks the
right one from the checkpoint's config.json. Both run in-process with transformers.
"""

from pathlib import Path

from openr.prm.causal_lm import DEFAULT_CACHE_MB, DEFAULT_FORWARD_BATCH_SIZE
from openr.prm.likelihood import LikelihoodPRM, is_likelihood_verifier
from openr.prm.step_tag import StepTagFormat, StepTagPRM, encode_steps, tag_margins


def load_prm(model_dir: str | Path, device: str = "cpu", max_batch_size: int = DEFAULT_FORWARD_BATCH_SIZE,
             cache_mb: float = DEFAULT_CACHE_MB) -> StepTagPRM | LikelihoodPRM:
    """The scorer for a local PRM checkpoint of either kind; `cache_mb` bounds its
    prefix cache (0: off; see openr.prm.causal_lm)."""
    kind = LikelihoodPRM if is_likelihood_verifier(model_dir) else StepTagPRM
    return kind(model_dir, device=device, max_batch_size=max_batch_size, cache_mb=cache_mb)


__all__ = ["LikelihoodPRM", "StepTagFormat", "StepTagPRM", "encode_steps", "load_prm", "tag_margins"]
