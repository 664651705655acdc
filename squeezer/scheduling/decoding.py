"""Continuous batching for causal LMs: every running sequence advances one token per batched step.

Requests become typed `DecodeRequest`s (prompt ids, parameters, arrival time, and an asyncio queue for their
tokens, created before queueing) on a bounded waiting queue (429 past it). One worker thread owns the model:
each iteration it drops cancelled sequences (freeing their cache), admits waiting requests in arrival order
while slots and the token budget allow, prefills the newcomers in one forward (their first tokens stream at
once; one forward, not one per prompt, keeps time to first token flat under a burst), then runs
one batched step for every running sequence, so newcomers join at the next step and finished ones leave at
once. The budget counts the cache rectangle the decoder holds, sequences x the longest reservation (prompt
+ max new tokens), so admitted work always fits in memory. Events reach the event loop in one callback per
step; the loop only validates, enqueues and streams.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from squeezer.backends.decoder import Decoder
from squeezer.backends.prefix_cache import PrefixCache
from squeezer.config import DecodingConfig
from squeezer.errors import UNLOADING, ClientError, ModelNotReadyError, QueueFullError, worker_stopped
from squeezer.generation.grammar import Constraint, DeadEnd, Grammars
from squeezer.generation.logprobs import token_logprobs
from squeezer.generation.outputs import FinishReason, Generation, TokenEvent
from squeezer.generation.params import GenerationParams
from squeezer.generation.sampling import TokenChooser, choose_tokens
from squeezer.generation.text import SequenceText
from squeezer.scheduling.decode_request import DecodeRequest, SequenceStats, StepStats, TokenStream
from squeezer.tasks.base import InputError

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Running:
    """A sequence in the batch and its decoding state; only the worker thread touches it."""

    request: DecodeRequest
    handle: int
    chooser: TokenChooser
    text: SequenceText
    history: list[int]  # prompt then generated tokens (the repetition penalty reads them)
    admitted: float
    cached_tokens: int  # prompt tokens the decoder took from its prefix cache
    first_token_at: float = 0.0


def _put_all(items: list[tuple[asyncio.Queue[Any], Any]]) -> None:
    for queue, item in items:
        queue.put_nowait(item)


class DecodeLoop:
    """Generates for many requests at once on one decoder; see the module doc for the schedule."""

    def __init__(
        self,
        decoder: Decoder,
        tokenizer: Any,
        config: DecodingConfig,
        on_step: Callable[[StepStats], None] | None = None,
        on_finish: Callable[[SequenceStats], None] | None = None,
        max_wait: float = 0.0,
        grammars: Grammars | None = None,
    ) -> None:
        """`max_wait`: seconds a request may wait for a slot before it is answered 504 (0: no limit); `grammars`:
        the model's compiled grammars, for requests that constrain their output."""
        self._decoder = decoder
        self._grammars = grammars
        self._max_wait = max_wait
        self._tokenizer = tokenizer
        self._config = config
        self._on_step = on_step  # hooks run on the worker thread: keep them quick and thread-safe
        self._on_finish = on_finish
        self._slots = min(config.max_batch_sequences, decoder.max_sequences)
        self._eos = decoder.eos_token_ids
        self._waiting: deque[DecodeRequest] = deque()
        self._active: list[_Running] = []
        self._admitting = 0  # taken off the queue, not yet active: being prefilled on the worker
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._draining = False
        self._newcomers: list[DecodeRequest] = []  # admitted by the worker, not yet active (being prefilled)
        self._dead: ModelNotReadyError | None = None  # set if the worker thread is ended from outside

    @property
    def depth(self) -> int:
        """Requests waiting for a slot (the name the encoder batcher uses, for queue-depth metrics)."""
        return len(self._waiting)

    @property
    def active(self) -> int:
        """Sequences in the running batch."""
        return len(self._active)

    @property
    def occupancy(self) -> float:
        """Share of the batch's slots in use."""
        return len(self._active) / self._slots

    @property
    def prefix_cache(self) -> PrefixCache | None:
        """The decoder's prefix cache when it keeps one (compiled decoders do), for its counters."""
        return self._decoder.prefix_cache

    @property
    def tokens_in_flight(self) -> int:
        """The running batch's share of the token budget (sequences x longest reservation)."""
        running = list(self._active)
        return len(running) * max((r.request.reservation for r in running), default=0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="squeezer-decode", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Stop at once: waiting and running requests fail with 503 and their caches are freed.

        The decoder stays loaded: whoever built it closes it.
        """
        with self._wake:
            self._closing = True
            waiting = list(self._waiting)
            self._waiting.clear()
            self._wake.notify_all()
        self._deliver([(req, ModelNotReadyError(UNLOADING)) for req in waiting])
        if self._thread:
            await asyncio.to_thread(self._thread.join)

    async def drain(self) -> None:
        """Refuse new requests, finish the accepted ones, then stop (for unload and shutdown)."""
        self._draining = True
        while self._busy():
            await asyncio.sleep(0.01)
        await self.close()

    def _busy(self) -> bool:
        """Whether any accepted request is unfinished: waiting, being prefilled, or decoding."""
        with self._wake:  # the worker moves requests from one to the next under this lock (or while admitting)
            return bool(self._waiting or self._admitting or self._active)

    async def stream(self, prompt_ids: Sequence[int], params: GenerationParams, scope: str = "") -> TokenStream:
        """Queue one sequence and return its token events; limits and a full queue raise here, before any token.
        `scope` is the prefix-cache scope (the tenant, and a request's cache salt)."""
        if params.num_return_sequences > 1:
            raise InputError("parameters.num_return_sequences: a streamed request returns one sequence")
        [request] = self._submit(prompt_ids, params, params.seeds(), scope)
        return TokenStream(request, self._cancel)

    async def generate(self, prompt_ids: Sequence[int], params: GenerationParams, scope: str = "") -> Generation:
        """Generate one sequence (the first seed when several are asked for; see `generate_all`)."""
        [request] = self._submit(prompt_ids, params, params.seeds()[:1], scope)
        return await self._collect(request)

    async def generate_all(self, prompt_ids: Sequence[int], params: GenerationParams, scope: str = "") -> list[Generation]:
        """Generate `num_return_sequences` sequences concurrently, with seeds counting up from the request's."""
        requests = self._submit(prompt_ids, params, params.seeds(), scope)
        tasks = [asyncio.ensure_future(self._collect(req)) for req in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task, req in zip(tasks, requests):
                task.cancel()
                self._cancel(req)
            raise

    def _submit(self, prompt_ids: Sequence[int], params: GenerationParams, seeds: list[int | None],
                scope: str) -> list[DecodeRequest]:
        max_new = self._config.new_tokens_for(len(prompt_ids), params.max_new_tokens, self._decoder.max_length)
        loop = asyncio.get_running_loop()
        with self._wake:  # under the lock: a request can never slip in after close() emptied the queue
            if self._dead is not None:
                raise self._dead
            if self._closing or self._draining:
                raise ModelNotReadyError(UNLOADING)
            if len(self._waiting) + len(seeds) > self._config.max_waiting:
                raise QueueFullError(f"too many generation requests waiting ({self._config.max_waiting}); retry later")
            requests = [DecodeRequest(list(prompt_ids), params, max_new, seed, asyncio.Queue(), loop, scope) for seed in seeds]
            self._waiting.extend(requests)
            self._wake.notify()
        return requests

    async def _collect(self, request: DecodeRequest) -> Generation:
        events = [event async for event in TokenStream(request, self._cancel)]
        text, last = "".join(e.text for e in events), events[-1]
        assert last.finish_reason is not None  # a stream ends with its last event
        chosen = [(e.token_id, e) for e in events if e.token_id is not None]  # a dead end's last event chose none
        wants = request.params.wants_logprobs
        return Generation(text, [t for t, _ in chosen], last.finish_reason, last.prompt_tokens, last.generated_tokens,
                          last.seed, last.cached_tokens, [e.logprob for _, e in chosen] if wants else None,
                          [e.top_tokens for _, e in chosen] if wants else None)

    def _cancel(self, request: DecodeRequest) -> None:
        request.cancelled = True
        with self._wake:
            if request in self._waiting:
                self._waiting.remove(request)
            self._wake.notify()

    def _deliver(self, items: Sequence[tuple[DecodeRequest, TokenEvent | BaseException]]) -> None:
        """Hand events to their event loops: one thread-safe callback per loop, not one per token."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], Any]]] = {}
        for request, item in items:
            by_loop.setdefault(request.loop, []).append((request.events, item))
        for loop, batch in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, batch)
            except RuntimeError:  # that event loop is closed: nobody is listening any more
                pass

    # --- the worker thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        """The worker thread; if it is ended all the same (an exception injected from outside, a library's
        SystemExit), every request it held or that waits is answered, and later ones are refused with a 503
        that says why, rather than queued for nobody."""
        try:
            self._serve()
        except BaseException as exc:
            log.critical("the decode worker thread stopped: %r", exc)
            error = worker_stopped(exc)
            with self._wake:
                self._dead = error
                waiting = [*self._newcomers, *self._waiting]
                self._waiting.clear()
                self._admitting = 0
            self._fail(list(self._active), error)
            self._deliver([(request, error) for request in waiting])

    def _serve(self) -> None:
        """Admit, prefill, step, repeat. Everything in an iteration is inside the `try`: nothing a request
        brings may end this loop, or its requests (and a drain) would wait forever."""
        while True:
            self._newcomers = []
            try:
                self._drop_cancelled()
                admitted = self._wait_and_admit()
                if admitted is None:
                    break
                self._newcomers = admitted
                self._prefill_all(admitted)
                if self._active:
                    self._step()
            except Exception as exc:  # a failed step (or a bug) fails the requests, never hangs them
                log.exception("decode step failed")
                self._fail(list(self._active), exc)
                self._deliver([(request, exc) for request in self._newcomers])  # finished ones never read it
            finally:
                self._admitting = 0  # each newcomer is now active, answered or failed
        self._fail(list(self._active), ModelNotReadyError(UNLOADING))

    def _wait_and_admit(self) -> list[DecodeRequest] | None:
        """Sleep while idle; then take the waiting requests that fit, oldest first (None: closing)."""
        with self._wake:
            while not (self._closing or self._active or self._waiting):
                self._wake.wait()
            if self._closing:
                return None
            admitted: list[DecodeRequest] = []
            widest = max((r.request.reservation for r in self._active), default=0)
            prompt_tokens = 0
            self._expire()
            while self._waiting:
                request = self._waiting[0]
                if request.cancelled:  # dropped unread: skip it
                    self._waiting.popleft()
                    continue
                rows = len(self._active) + len(admitted) + 1
                width = max(widest, request.reservation)
                if rows > self._slots or rows * width > self._config.max_tokens_in_flight:
                    break
                prompt_tokens += len(request.prompt_ids)
                if admitted and prompt_tokens > self._config.max_prefill_tokens:
                    break  # the rest join after the next step, in the next prefill
                admitted.append(self._waiting.popleft())
                widest = width
            self._admitting = len(admitted)
            return admitted

    def _expire(self) -> None:
        """Answer 504 to requests that waited for a slot longer than `max_wait` (called under the lock)."""
        if not self._max_wait or not self._waiting:
            return
        oldest = time.perf_counter() - self._max_wait
        expired = [r for r in self._waiting if r.arrived < oldest]
        if expired:
            self._waiting = deque(r for r in self._waiting if r.arrived >= oldest)
            error = ClientError(f"waited more than {self._max_wait:g}s for a generation slot (--request-timeout)", status=504)
            self._deliver([(request, error) for request in expired])

    def _drop_cancelled(self) -> None:
        for run in [r for r in self._active if r.request.cancelled]:
            self._leave(run, None)

    def _prefill_all(self, requests: list[DecodeRequest]) -> None:
        """Prefill the newcomers in one forward; if it fails, one by one, so only a bad prompt fails its request."""
        admitted = time.perf_counter()
        requests = [r for r in requests if not r.cancelled]  # gone between admission and their turn
        if len(requests) < 2:
            for request in requests:
                self._prefill(request, admitted)
            return
        try:
            results = self._decoder.prefill_many([r.prompt_ids for r in requests], [r.scope for r in requests])
        except Exception:
            log.warning("batched prefill failed; prefilling its %d prompts one by one", len(requests), exc_info=True)
            for request in requests:
                self._prefill(request, admitted)
            return
        runs = [self._start(r, handle, admitted) for r, (handle, _) in zip(requests, results)]
        self._advance(runs, np.stack([logits for _, logits in results]))

    def _prefill(self, request: DecodeRequest, admitted: float) -> None:
        try:
            handle, logits = self._decoder.prefill(request.prompt_ids, request.scope)
        except Exception as exc:
            self._deliver([(request, exc)])
            return
        self._advance([self._start(request, handle, admitted)], logits[None])

    def _constraint(self, request: DecodeRequest) -> Constraint | None:
        grammar = request.params.grammar
        if not grammar:
            return None
        if self._grammars is None:
            raise InputError("parameters.grammar: this model was started without structured output")
        return self._grammars.constraint(grammar)

    def _start(self, request: DecodeRequest, handle: int, admitted: float) -> _Running:
        """Put a prefilled sequence in the batch with its sampler and text state."""
        run = _Running(
            request,
            handle,
            TokenChooser(request.params, request.seed, len(request.prompt_ids), self._constraint(request)),
            SequenceText(self._tokenizer, request.prompt_ids, request.params, self._eos, request.max_new_tokens),
            list(request.prompt_ids),
            admitted,
            self._decoder.cached_tokens(handle),
        )
        self._active.append(run)
        return run

    def _step(self) -> None:
        runs = list(self._active)
        start = time.perf_counter()
        logits = self._decoder.step([r.handle for r in runs], [r.history[-1] for r in runs])  # raises: see _run
        self._advance(runs, logits)
        if self._on_step:
            self._hook(self._on_step, StepStats(len(runs), self._slots, len(self._waiting), time.perf_counter() - start))

    def _advance(self, runs: list[_Running], logits: np.ndarray) -> None:
        """Choose each sequence's next token, emit it, and let finished sequences leave at once.

        A sequence whose token cannot be chosen or decoded fails alone: the others in its step go on. One whose
        grammar allows no token the model can produce ends there (`_dead_end`), and the others go on as well.
        """
        try:
            tokens = choose_tokens([r.chooser for r in runs], logits, [r.history for r in runs])
        except Exception as exc:  # the batch's shared argmax itself failed: nothing to tell the rows apart
            log.exception("choosing tokens failed")
            self._fail(runs, exc)
            return
        now = time.perf_counter()
        events: list[tuple[DecodeRequest, TokenEvent | BaseException]] = []
        for run, token, row in zip(runs, tokens, logits):
            try:
                if isinstance(token, DeadEnd):
                    event = self._dead_end(run, token)
                elif isinstance(token, Exception):
                    raise token
                else:
                    event = self._next_event(run, token, now, row)
            except Exception as exc:  # this sequence's parameters or text broke: it alone fails
                log.warning("a sequence failed and left the batch: %s: %s", exc.__class__.__name__, exc)
                self._leave(run, None)
                events.append((run.request, exc))
                continue
            if event.is_last:
                self._leave(run, event.finish_reason)
            events.append((run.request, event))
        self._deliver(events)

    def _next_event(self, run: _Running, token: int, now: float, logits: np.ndarray) -> TokenEvent:
        if not run.text.generated:
            run.first_token_at = now
        run.history.append(token)
        delta, finish = run.text.add(token)
        request = run.request
        logprob: float | None = None
        top: tuple[tuple[int, float], ...] = ()
        if request.params.wants_logprobs:
            logprob, top = token_logprobs(logits, token, request.params.top_n_tokens or 0)
        return TokenEvent(token, delta, finish is not None, finish, len(request.prompt_ids), run.text.generated, request.seed,
                          run.cached_tokens, logprob, top)

    def _dead_end(self, run: _Running, dead_end: DeadEnd) -> TokenEvent:
        """The last event of a sequence whose grammar allows no token the model can produce: no token, the text
        still held back, finish reason "grammar". Not an error (the answer so far is what the grammar let the model
        write, and the client gets it with a reason it can read); the log says why the grammar could not go on."""
        log.warning("a sequence ends after %d tokens: %s", run.text.generated, dead_end)
        delta, finish = run.text.end("grammar")
        request = run.request
        return TokenEvent(None, delta, True, finish, len(request.prompt_ids), run.text.generated, request.seed,
                          run.cached_tokens)

    def _leave(self, run: _Running, reason: FinishReason | None) -> None:
        """Take a sequence out of the batch and free its cache; report it to the metrics hook."""
        self._active.remove(run)
        try:
            self._decoder.release(run.handle)
        except Exception:  # a broken decoder must not kill the worker (its requests would hang)
            log.exception("freeing a sequence's cache failed")
        if self._on_finish:
            ended = time.perf_counter()
            first = run.first_token_at or ended
            per_token = (ended - first) / (run.text.generated - 1) if run.text.generated > 1 else 0.0
            request = run.request
            queued, to_first = run.admitted - request.arrived, first - request.arrived
            stats = SequenceStats(len(request.prompt_ids), run.text.generated, queued, to_first, per_token, reason)
            self._hook(self._on_finish, stats)

    def _fail(self, runs: list[_Running], exc: BaseException) -> None:
        for run in runs:
            if run in self._active:
                self._leave(run, None)
        self._deliver([(run.request, exc) for run in runs])

    def _hook(self, hook: Callable[[Any], None], stats: Any) -> None:
        try:
            hook(stats)
        except Exception:  # a metrics bug must not stop generation
            log.exception("decode metrics hook failed")
