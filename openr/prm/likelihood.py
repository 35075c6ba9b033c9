"""Likelihood verifiers: a causal LM trained on correct solutions judges each step
by how likely it finds that step's tokens.

Why a second PRM kind. A step-tag PRM (openr.prm.step_tag) must decide at one
position, in one forward pass, whether the step before it is right. For
arithmetic that means redoing the sum and comparing it with the written one
inside the model's depth, and the small models we can train on a CPU do not
learn that: a 4-layer, 0.8M-parameter tag PRM started from a strong arith model
stayed at the loss of the label prior on 10,000 exactly labelled solutions. The
same model, read as a language model, already holds the answer: at each digit
of a result it predicts the right digit, so a wrong digit gets a low
probability. Read this way, the shipped openr-arith verifier finds the first
wrong step of 600 held-out policy solutions with ProcessBench-style F1 0.95 and
step AUROC 1.00 (openr/models/openr-arith/summary.json, `prm_quality`).

Score of step i: sigmoid(scale * m_i + bias), where m_i is the lowest
log-probability the verifier gives any token of steps 1..i. The running minimum
makes a step after a wrong one score no higher than it: the score answers "is
the solution right so far?", which is what Math-Shepherd and OmegaPRM labels
say. `scale` and `bias` are fitted on such automatically labelled steps
(`fit_calibration`), so 0.5 is the point where a step is as likely right as
wrong; they sit in config.json as `prm_kind: "likelihood"`, `prm_scale`,
`prm_bias`, next to an ordinary causal-LM checkpoint.

The verifier reads the policy's own text (its chat template, steps joined by
the blank-line separator) with no tags, so any causal LM that writes this
format can be one.

Build one: `openr train verifier --lm DIR --labels A.jsonl [B.jsonl] --out DIR`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PretrainedConfig

from openr.prm.causal_lm import DEFAULT_CACHE_MB, DEFAULT_FORWARD_BATCH_SIZE, CausalLMScorer, encode_solution
from openr.prm.prefix_cache import Encoded

KIND = "likelihood"
CALIBRATION_STEPS = 200  # LBFGS iterations of the two-parameter logistic fit
# L2 penalty on (scale, bias), added to the summed (not mean) log-loss: a prior worth
# a fraction of one labelled step, so negligible with real data, and it keeps the
# fit finite when the labels are separable or all of one class.
CALIBRATION_L2 = 0.1


@dataclass(frozen=True)
class Calibration:
    """The logistic map from evidence (a log-probability, <= 0) to P(step right)."""

    scale: float = 1.0
    bias: float = 0.0

    @classmethod
    def from_config(cls, config: PretrainedConfig) -> Calibration:
        if getattr(config, "prm_kind", None) != KIND:
            raise ValueError(f"not a likelihood verifier: config.json lacks prm_kind={KIND!r}")
        return cls(float(config.prm_scale), float(config.prm_bias))

    def write_to(self, config: PretrainedConfig) -> None:
        config.prm_kind = KIND
        config.prm_scale = self.scale
        config.prm_bias = self.bias

    def probability(self, evidence: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.scale * evidence + self.bias)


def is_likelihood_verifier(model_dir: str | Path) -> bool:
    """Whether the checkpoint's config.json marks it as a likelihood verifier."""
    path = Path(model_dir) / "config.json"
    return path.exists() and json.loads(path.read_text()).get("prm_kind") == KIND


def fit_calibration(evidence: Sequence[float], labels: Sequence[bool]) -> Calibration:
    """Logistic regression of the step labels on the evidence (two parameters,
    lightly L2-regularised). With labels of one class only, it can only learn
    that class's rate: check `positive_steps` in `make_verifier`'s summary."""
    if len(evidence) != len(labels) or not labels:
        raise ValueError("need one label per evidence value, and at least one")
    x = torch.tensor(evidence, dtype=torch.float64)
    y = torch.tensor([float(label) for label in labels], dtype=torch.float64)
    params = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=CALIBRATION_STEPS, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], y)
        loss = loss + CALIBRATION_L2 * params.square().sum() / len(labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    scale, bias = params.detach().tolist()
    return Calibration(scale, bias)


class LikelihoodPRM(CausalLMScorer):
    """A `StepScorer` backed by a likelihood verifier (transformers, in-process);
    the same batch interface as `StepTagPRM`."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", forward_batch_size: int = DEFAULT_FORWARD_BATCH_SIZE,
                 calibration: Calibration | None = None, cache_mb: float = DEFAULT_CACHE_MB):
        super().__init__(model_dir, device, forward_batch_size, cache_mb)
        self.calibration = calibration if calibration is not None else Calibration.from_config(self.model.config)

    def encode(self, question: str, steps: Sequence[str]) -> Encoded:
        """The policy's own text; step k reads the columns that predict its tokens
        (token t is predicted at column t - 1), so the prompt needs no logits."""
        ids, spans = encode_solution(self.tokenizer, question, steps, pieces=self.pieces)
        prompt_len = spans[0][0] if spans else len(ids)
        return Encoded.build(ids, prompt_len, [end for _, end in spans],
                             [list(range(start - 1, end - 1)) for start, end in spans])

    def position_scalars(self, logits: torch.Tensor, next_ids: torch.Tensor) -> torch.Tensor:
        """The log-probability of the token that follows."""
        return torch.log_softmax(logits, dim=-1).gather(-1, next_ids[:, None]).squeeze(-1)

    def fold(self, previous: list[float], scalars: torch.Tensor) -> float:
        """The running minimum over steps 1..i of their lowest token log-probability
        (an empty step adds 0)."""
        running = previous[-1] if previous else 0.0
        return min(running, scalars.min().item()) if len(scalars) else running

    def evidence_batch(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """For each (question, steps) pair, per step: the running minimum over steps
        1..i of the lowest log-probability the verifier gives a token of that step."""
        return self.step_values(pairs)

    def score_batch(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """One probability per step for each (question, steps) pair, in input order."""
        return [self.calibration.probability(torch.tensor(values, dtype=torch.float64)).tolist()
                for values in self.evidence_batch(pairs)]


def make_verifier(lm_dir: str | Path, records: Sequence[dict], out_dir: str | Path) -> dict:
    """Turn a causal LM into a calibrated likelihood verifier in `out_dir`.

    `records` are stepwise-labelled solutions (TRL's format; labels bool or a
    value in [0, 1], read as right at >= 0.5): the calibration is fitted on
    every step of them. Returns the calibration and how many steps it saw.
    """
    prm = LikelihoodPRM(lm_dir, calibration=Calibration())
    evidence = prm.evidence_batch([(r["prompt"], r["completions"]) for r in records])
    flat = [value for values in evidence for value in values]
    labels = [float(label) >= 0.5 for r in records for label in r["labels"]]
    calibration = fit_calibration(flat, labels)
    out = Path(out_dir)
    if out.resolve() != Path(lm_dir).resolve():
        shutil.copytree(lm_dir, out, dirs_exist_ok=True)
    calibration.write_to(prm.model.config)
    prm.model.config.save_pretrained(out)
    return {"scale": calibration.scale, "bias": calibration.bias, "steps": len(flat),
            "positive_steps": sum(labels)}

