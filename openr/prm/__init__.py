"""PRM backends implementing `StepScorer`: one score in [0, 1] per reasoning step.

`StepTagPRM` runs a step-tag PRM (a causal LM that reads +/- logits at a tag
token after each step) in-process with transformers.
"""

from openr.prm.step_tag import StepTagFormat, StepTagPRM, encode_steps, tag_margins

__all__ = ["StepTagFormat", "StepTagPRM", "encode_steps", "tag_margins"]
