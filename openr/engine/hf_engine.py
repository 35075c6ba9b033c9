"""transformers backend: batched generation for machines without vLLM.

Requests that arrive while a batch runs wait for the next one; each batch runs
a KV-cached decode loop in a worker thread. The loop is written here rather
than calling `model.generate` because one batch mixes requests with different
temperatures, top-p, seeds, stop strings and max_tokens, streams every row
separately, reports raw-model log-probabilities, and must drop a row the moment
its client hangs up; `generate` does none of that per row.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import AsyncIterator

from openr.engine.base import (
    Delta,
    EngineRequestError,
    LocalTokenizerEngine,
    SamplingConfig,
    StopStringMatcher,
    TokenLogprob,
)
from openr.engine.checkpoints import materialize
from openr.engine.timing import SampleTiming

logger = logging.getLogger(__name__)

DEFAULT_DECODE_BATCH_SIZE = 16  # samples decoded together in one batch
# A batch waits for the rest of a burst (n samples, a search step, concurrent
# clients), so the burst shares it instead of the first request running alone
# while the rest queue. It starts once no request has arrived for
# BATCH_QUIET_S, at most BATCH_WINDOW_S after its oldest request, or when full.
BATCH_WINDOW_S = 0.01
BATCH_QUIET_S = 0.002
# Rows that finished (a stop string, EOS, a hang-up) leave the decode batch once
# this share of it has: every later forward pass is then that much smaller,
# and the cache copy that removing them costs is paid rarely.
COMPACT_WHEN_DONE = 0.25
# On a CPU, a model this small decodes on one torch thread, unless
# OMP_NUM_THREADS says otherwise. Its operations are too small to split, and a
# second OpenMP thread only waits for work: once that thread has gone to sleep,
# every operation pays to wake it. Measured on an AMD EPYC with 2 cores
# (bench/README.md):
# - openr-arith (0.8M parameters), 8 greedy requests: 2,700 tok/s on 1 thread,
#   against 1,000-2,700 tok/s on 2;
# - 16 beam searches in flight: p50 10.3 s on 1 thread, 12.2 s on 2;
# - SmolLM2-135M is 12% faster on 2 threads, so it keeps them.
ONE_THREAD_BELOW_PARAMETERS = 10_000_000


@dataclass
class _Row:
    """One sample in flight; the worker thread writes, the event loop reads."""

    prompt_ids: tuple[int, ...]
    params: SamplingConfig
    queue: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    cancelled: threading.Event = field(default_factory=threading.Event)
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    emitted: int = 0
    pending_logprobs: list[float] = field(default_factory=list)
    pending_tokens: list[TokenLogprob] = field(default_factory=list)  # with params.top_logprobs only
    done: bool = False
    arrived: float = field(default_factory=time.monotonic)
    matcher: StopStringMatcher = field(init=False)
    started: float = 0.0  # time.monotonic() when its prefill began
    first_token_at: float = 0.0  # ... and when its first token was chosen

    def __post_init__(self) -> None:
        self.matcher = StopStringMatcher(self.params.stop)

    def push(self, delta: Delta) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, delta)

    def flush(self, text: str, finish: str | None = None, stop_reason: str | None = None) -> None:
        """Send `text` with the tokens generated since the last delta (and, on
        the last, how the sample's time went)."""
        tokens = self.pending_tokens if self.params.top_logprobs is not None else None
        timing = SampleTiming(self.started, self.first_token_at - self.started, time.monotonic()) if finish else None
        self.push(Delta(text, self.pending_logprobs, finish, tokens, timing, stop_reason))
        self.pending_logprobs, self.pending_tokens = [], []


class HFEngine(LocalTokenizerEngine):
    name = "hf"
    features = frozenset({"penalties", "logit_bias", "logprobs"})
    halts_in_engine = True  # `_advance` asks a sample's monitor at every token, in the decode loop

    def __init__(self, model: str | None, device: str = "cpu", decode_batch_size: int = DEFAULT_DECODE_BATCH_SIZE,
                 max_model_len: int | None = None):
        self.model = model
        self.device = device
        self.decode_batch_size = decode_batch_size
        self._max_model_len_arg = max_model_len
        self._pending: list[_Row] = []
        self._lock = threading.Lock()  # _pending is shared by the event loop and the decode thread
        self._running: list[_Row] = []  # every row the running batch took in
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    @classmethod
    def for_model(cls, model, tokenizer, decode_batch_size: int = DEFAULT_DECODE_BATCH_SIZE) -> "HFEngine":
        """An engine over a model already in memory (RL samples from the weights
        it is training); the caller keeps it in eval mode while sampling."""
        engine = cls(None, device=str(model.device), decode_batch_size=decode_batch_size)
        engine._adopt(model, tokenizer)
        return engine

    async def start(self) -> None:
        if self.tokenizer is None:  # `for_model` engines come loaded
            self.model_dir = await asyncio.to_thread(materialize, self.model)
            await asyncio.to_thread(self._load)
        self._wakeup = asyncio.Event()
        self._worker = asyncio.create_task(self._schedule(), name="hf-engine-scheduler")

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from openr.hardware import inference_dtype

        dtype = inference_dtype(self.device)
        self._adopt(AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=dtype).to(self.device).eval(),
                    AutoTokenizer.from_pretrained(self.model_dir))
        _size_threads(self.model, self.device)

    def _adopt(self, model, tokenizer) -> None:
        self.model, self.tokenizer = model, tokenizer
        config_len = getattr(self.model.config, "max_position_embeddings", 2048)
        self.max_model_len = min(self._max_model_len_arg or config_len, config_len)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.vocab_size = min(len(self.tokenizer), self.model.config.vocab_size)
        self.dtype = str(self.model.dtype).removeprefix("torch.")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos_ids)

    async def close(self) -> None:
        if self._worker:
            self._worker.cancel()

    @property
    def active_sequences(self) -> int:
        return sum(not r.done for r in self._running)

    async def stream(self, prompt: str, params: SamplingConfig) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        ids = self.prompt_ids(prompt)
        if not ids:  # refused here: a row without a prompt would fail the whole batch it joined
            raise EngineRequestError(400, "the prompt is empty: there is nothing to generate from", "prompt")
        row = _Row(ids, params, asyncio.Queue(), loop)
        with self._lock:
            self._pending.append(row)
        self._wakeup.set()
        try:
            while True:
                delta = await row.queue.get()
                if isinstance(delta, Exception):
                    raise delta
                yield delta
                if delta.finish:
                    return
        finally:
            row.cancelled.set()
            with self._lock:
                if row in self._pending:
                    self._pending.remove(row)

    async def _schedule(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._batch_window()
            while self._pending:
                self._running = []
                batch = self._take_pending(self.decode_batch_size)
                if not batch:
                    continue
                try:
                    await asyncio.to_thread(self._run_batch, batch)
                except Exception as exc:  # a failed batch fails its rows (joiners too), not the server
                    logger.exception("hf batch failed")
                    for row in self._running:
                        if not row.done:
                            row.push(exc)
                finally:
                    self._running = []

    async def _batch_window(self) -> None:
        """Wait while requests keep arriving (see BATCH_QUIET_S), up to
        BATCH_WINDOW_S after the oldest, or until the batch is full. A wake-up
        left over from requests that joined the last batch finds none waiting,
        and waits for nothing."""
        while 0 < len(self._pending) < self.decode_batch_size:
            now = time.monotonic()
            left = min(self._pending[0].arrived + BATCH_WINDOW_S, self._pending[-1].arrived + BATCH_QUIET_S) - now
            if left <= 0:
                return
            await asyncio.sleep(left)

    def _run_batch(self, rows: list[_Row]) -> None:
        """Decode `rows` until all are done; requests that arrive meanwhile join
        the batch at a step boundary while it has room (`DecodeBatch`)."""
        import torch

        with torch.inference_mode():
            batch = self._prefill(rows)
            while True:
                finished = [r.done or r.cancelled.is_set() for r in batch.rows]
                live = [i for i, done in enumerate(finished) if not done]
                if live and len(live) < len(batch.rows) * (1 - COMPACT_WHEN_DONE) + 1e-9:
                    batch.keep(live)
                # Finished rows hold their slots until the batch is compacted, so
                # newcomers join in groups (one prefill and one cache merge each),
                # not one at every step.
                newcomers = self._take_pending(self.decode_batch_size - len(batch.rows)) if live else []
                if newcomers:
                    batch.join(self._prefill(newcomers))
                if all(r.done or r.cancelled.is_set() for r in batch.rows):
                    return
                self._choose(batch, batch.forward())

    def _prefill(self, rows: list[_Row]):
        """A `DecodeBatch` of `rows` with their first tokens chosen; each row
        notes when its prefill began and when its first token came (its timing)."""
        from openr.engine.decode_batch import DecodeBatch

        started = time.monotonic()
        for row in rows:
            row.started = started
        batch, logits = DecodeBatch.prefill(self.model, rows, self.pad_id, self.device)
        self._choose(batch, logits, first=True)
        return batch

    def _choose(self, batch, logits, first: bool = False) -> None:
        """Pick each row's next token (`first`: the rows' first), advance the
        rows, and queue the tokens as the batch's next input."""
        from openr.engine.sampling import next_tokens

        chosen, logprobs, tops = next_tokens(logits, [r.params for r in batch.rows], [r.token_ids for r in batch.rows])
        tokens, token_logprobs = chosen.tolist(), logprobs.tolist()  # waits for the device: the step is done
        if first:
            chosen_at = time.monotonic()
            for row in batch.rows:
                row.first_token_at = chosen_at
        for row, token, logprob, top in zip(batch.rows, tokens, token_logprobs, tops):
            if not row.done:
                self._advance(row, token, logprob, top)
                if not row.done and len(row.prompt_ids) + len(row.token_ids) >= self.max_model_len:
                    self._finish(row, "length")  # ran into the context limit
        batch.extend(chosen)

    def _take_pending(self, room: int) -> list[_Row]:
        """Up to `room` waiting requests, for the running batch to take in (worker thread)."""
        if room <= 0:
            return []
        with self._lock:
            taken = [r for r in self._pending[:room] if not r.cancelled.is_set()]
            del self._pending[:room]
            self._running = self._running + taken
        return taken

    def _advance(self, row: _Row, token: int, logprob: float, top: tuple[list[int], list[float]] | None) -> None:
        if row.cancelled.is_set():
            row.done = True
            return
        row.pending_logprobs.append(logprob)
        if token in self.eos_ids and not row.params.ignore_eos:
            self._finish(row, "eos")
            return
        if row.params.top_logprobs is not None:
            alternatives = tuple(zip(map(self._token_text, top[0]), top[1])) if top else ()
            row.pending_tokens.append(TokenLogprob(self._token_text(token), logprob, alternatives))
        row.token_ids.append(token)
        if row.params.monitor is not None and self._halts(row, logprob, top[1] if top else ()):
            return
        if not row.params.stream and not row.params.stop:  # nothing to watch: its text is decoded once, at the end
            if len(row.token_ids) >= row.params.max_tokens:
                self._finish(row, "length")
            return
        old_len = len(row.text)
        row.text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        matcher = row.matcher
        hit = matcher.find(row.text, old_len)
        if hit is not None:
            stop_reason = matcher.stop_at(row.text, hit)
            row.text = row.text[:hit]
            self._finish(row, "stop", stop_reason)
        elif len(row.token_ids) >= row.params.max_tokens:
            self._finish(row, "length")
        elif row.params.stream and not row.text.endswith("\ufffd"):  # wait for a whole multi-byte character
            safe = matcher.safe_length(row.text)
            if safe > row.emitted:
                row.flush(row.text[row.emitted:safe])
                row.emitted = safe

    def _halts(self, row: _Row, logprob: float, top: list[float]) -> bool:
        """Whether the row's monitor halts it at this token (it then leaves the batch now). A
        monitor that raises fails its own sample, not the batch's other rows."""
        try:
            halted = row.params.monitor(logprob, top)
        except Exception as exc:
            logger.exception("a sample's monitor failed")
            row.done = True
            row.push(exc)
            return True
        if halted:
            self._finish(row, "halted")
        return halted

    def _finish(self, row: _Row, finish: str, stop_reason: str | None = None) -> None:
        row.done = True
        if finish != "stop":  # (a stop string's hit has cut the text already)
            row.text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        row.flush(row.text[row.emitted:], finish, stop_reason)
        row.emitted = len(row.text)

    def _token_text(self, token: int) -> str:
        return self.tokenizer.decode([token])


def _size_threads(model, device: str) -> None:
    """One torch thread for a small model on a CPU (see ONE_THREAD_BELOW_PARAMETERS)."""
    import torch

    parameters = sum(p.numel() for p in model.parameters())
    if device != "cpu" or "OMP_NUM_THREADS" in os.environ or parameters >= ONE_THREAD_BELOW_PARAMETERS:
        return
    if torch.get_num_threads() != 1:
        logger.info("hf engine: 1 torch thread for this %.1fM-parameter model (OMP_NUM_THREADS overrides)",
                    parameters / 1e6)
        torch.set_num_threads(1)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id if model.generation_config else None
    ids = ids if isinstance(ids, list) else [ids]
    found = {i for i in ids if i is not None}
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return found
