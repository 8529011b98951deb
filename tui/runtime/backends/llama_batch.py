"""Continuous batching on llama.cpp: several answers decoded together in one context.

Built on llama-cpp-python's public low-level bindings (``llama_cpp.llama_*``, the C API), the
way llama.cpp's own server runs its slots:

* one context with ``n_seq_max = slots`` and a KV cache of ``slots × n_ctx`` tokens (not
  unified: each sequence has its own ``n_ctx``-token stream, so one long answer cannot take
  another's room);
* one engine thread per loaded model runs the step loop: admit submitted requests into free
  slots (first come, first served), build one ``llama_batch`` holding one token of every
  answer being decoded plus prompt tokens of newly admitted ones (chunked: a step never holds
  more than ``n_batch`` tokens, so a long prompt does not stall everyone else for long),
  ``llama_decode``, then sample every answer with its own seeded sampler chain, detokenize
  incrementally (UTF-8 safe), apply stop strings, ``max_tokens`` and the slot's context;
* a finished answer frees its slot at once; its tokens stay in the slot's cache, and the next
  request takes the free slot whose cache shares the longest prefix with its prompt (a chat's
  next turn re-uses the conversation so far), the rest is dropped with ``llama_memory_seq_rm``;
* a request whose reader lags (``ready()`` is False) sits out steps until it catches up;
  cancelling one stops it at the next step.

llama.cpp's log goes to :mod:`logging` (never the terminal); its last error explains a load
that failed.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import math
import os
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.runtime.backends.base import BackendStats, Emit, one_line
from tui.runtime.errors import ContextLengthError, EmbeddingError, GenerationError, LoadError
from tui.runtime.stops import StopMatcher
from tui.runtime.types import GenParams
from tui.terminal_text import clean_line

log = logging.getLogger(__name__)

__all__ = ["BatchEngine", "BatchRequest"]

MAX_META_BYTES = 1 << 20  # a metadata string read from the model (the chat template)
MAX_PIECE_BYTES = 1 << 16  # one token's text
MAX_META_KEYS = 4096  # metadata keys looked at for special tokens
MAX_EMBED_CTX = 2048  # tokens of the embedding context (its KV cache is beside the answers')
WAKE_SECONDS = 0.5  # the engine re-checks paused answers at least this often
TOP_K = 40
MIN_P = 0.05
_LOG_WARN, _LOG_ERROR = 2, 3

_lib: Any = None
_lib_lock = threading.Lock()
_log_callback: Any = None
_log_lines: deque[str] = deque(maxlen=8)


def _llama() -> Any:
    """``llama_cpp`` imported once, its log routed to :mod:`logging`, its backend ready."""
    global _lib, _log_callback
    with _lib_lock:
        if _lib is None:
            import llama_cpp

            def on_log(level: int, text: bytes | None, _user: Any) -> None:
                try:
                    line = text.decode("utf-8", "replace").strip() if text else ""
                    if line and level in (_LOG_WARN, _LOG_ERROR):
                        _log_lines.append(line)
                    if line and log.isEnabledFor(logging.DEBUG):
                        log.debug("llama.cpp: %s", line)
                except Exception:  # never raise into C
                    pass

            _log_callback = llama_cpp.llama_log_callback(on_log)  # kept alive: C holds it
            llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
            llama_cpp.llama_backend_init()
            _lib = llama_cpp
    return _lib


def _last_log(default: str) -> str:
    """llama.cpp's last warning or error, one clean line (it may quote the model file)."""
    line = _log_lines[-1] if _log_lines else default
    return clean_line(" ".join(line.split()), 200)


@dataclass(eq=False)
class BatchRequest:
    """One answer to decode: prompt ``tokens``, where its text goes, how to stop it.

    ``emit`` is called on the engine thread and must not block; ``ready`` (optional) says
    whether the reader can take more text (False: the answer sits out steps). ``limit`` caps
    the generated tokens (the slot's context minus the prompt, and ``max_tokens``).
    """

    tokens: list[int]
    params: GenParams
    emit: Emit
    cancel: threading.Event
    ready: Callable[[], bool] | None = None
    limit: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    stats: BackendStats | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Slot:
    """One llama.cpp sequence: the tokens its cache holds and the answer it is decoding."""

    seq: int
    cached: list[int] = field(default_factory=list)  # tokens in this sequence's KV cache
    used: int = 0  # admission counter when last used (oldest is reused first)
    req: BatchRequest | None = None
    order: int = 0  # admission counter of the current request
    fed: int = 0  # prompt tokens in the cache
    pending: int | None = None  # sampled, not yet decoded
    out: int = -1  # index of this step's logits in the batch
    sampler: Any = None
    n_gen: int = 0
    started: bool = False
    decoder: Any = None
    stops: StopMatcher | None = None

    @property
    def prefilling(self) -> bool:
        return self.req is not None and self.fed < len(self.req.tokens)


class BatchEngine:
    """A GGUF model in one llama.cpp context decoding up to ``slots`` answers together.

    :meth:`load` and :meth:`close` are blocking; :meth:`run` blocks its caller until the
    answer is done (many callers at once); :meth:`tokenize` and :meth:`piece` are safe from
    any thread.
    """

    def __init__(
        self,
        path: Path,
        *,
        slots: int,
        n_ctx: int,
        n_gpu_layers: int = 0,
        n_batch: int = 512,
        threads: int | None = None,
        flash_attention: bool = False,
    ) -> None:
        self.path = path
        self.slots = max(1, slots)
        self.n_ctx = max(1, n_ctx)  # per sequence
        self.n_gpu_layers = n_gpu_layers
        self.n_batch = max(n_batch, self.slots)
        self.threads = threads
        self.flash_attention = flash_attention
        self.lib: Any = None
        self.model: Any = None
        self.ctx: Any = None
        self.vocab: Any = None
        self.memory: Any = None
        self._batch: Any = None
        self._slots: list[_Slot] = []
        self._inbox: deque[BatchRequest] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        self._failure: str | None = None
        self._admitted = 0
        self._pieces: dict[int, bytes] = {}
        self.steps = 0  # llama_decode calls
        self.peak = 0  # the most answers one llama_decode held
        self._embed_lock = threading.Lock()
        self._embed_ctx: Any = None  # a second context on the same weights, made on first use
        self._embed_batch: Any = None
        self.embed_ctx = min(self.n_ctx, MAX_EMBED_CTX)

    # -- lifecycle ------------------------------------------------------------------------

    def load(self, start: bool = True) -> None:
        """Load the model, create the context and (``start``) the engine thread (blocking)."""
        lib = self.lib = _llama()
        mparams = lib.llama_model_default_params()
        mparams.n_gpu_layers = self.n_gpu_layers
        _log_lines.clear()
        model = lib.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not model:
            raise LoadError(_last_log("the file was refused"))
        self.model = model
        cpus = os.cpu_count() or 1
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = self.n_ctx * self.slots
        cparams.n_seq_max = self.slots
        cparams.kv_unified = False
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = min(self.n_batch, 512)
        cparams.n_threads = self.threads or max(cpus // 2, 1)
        cparams.n_threads_batch = self.threads or cpus
        cparams.flash_attn_type = (
            lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.flash_attention
            else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        cparams.no_perf = True
        ctx = lib.llama_init_from_model(model, cparams)
        if not ctx:
            self._free()
            raise LoadError(
                f"no context of {self.slots} × {self.n_ctx} tokens: "
                + _last_log("out of memory?"),
                hint="load with a smaller context or fewer parallel requests",
            )
        self.ctx = ctx
        self.n_ctx = min(self.n_ctx, lib.llama_n_ctx_seq(ctx))
        self.vocab = lib.llama_model_get_vocab(model)
        self.memory = lib.llama_get_memory(ctx)
        self._batch = lib.llama_batch_init(self.n_batch, 0, 1)
        self._slots = [_Slot(seq) for seq in range(self.slots)]
        if start:
            self.start()

    def start(self) -> None:
        """Start the engine thread (requests submitted before are admitted together)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=f"modeldeck-llama-{self.path.name[:24]}", daemon=True
            )
            self._thread.start()

    def close(self) -> None:
        """Stop the engine (answers still running end with an error) and free everything."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._fail_all("the model was unloaded")
        self._free()

    def _free(self) -> None:
        lib = self.lib
        with self._embed_lock:
            if self._embed_batch is not None:
                lib.llama_batch_free(self._embed_batch)
                self._embed_batch = None
            if self._embed_ctx is not None:
                lib.llama_free(self._embed_ctx)
                self._embed_ctx = None
        for slot in self._slots:
            if slot.sampler is not None:
                lib.llama_sampler_free(slot.sampler)
                slot.sampler = None
        if self._batch is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if self.ctx is not None:
            lib.llama_free(self.ctx)
            self.ctx = None
        if self.model is not None:
            lib.llama_model_free(self.model)
            self.model = None
        self.vocab = self.memory = None

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded and the engine running."""
        return self.ctx is not None and self._failure is None

    # -- model facts and text ---------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        """A metadata value of the model as text (None if absent or too long)."""
        lib = self.lib
        buf = ctypes.create_string_buffer(256)
        n = lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            if n >= MAX_META_BYTES:
                log.warning("%s of %s is %d bytes; ignored", key, self.path.name, n)
                return None
            buf = ctypes.create_string_buffer(n + 1)
            lib.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.raw[:n].decode("utf-8", "replace")

    def token_text(self, token: int) -> str:
        """The vocabulary's text of a token ("" for none)."""
        if token is None or token < 0:
            return ""
        raw = self.lib.llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    def meta_keys(self) -> list[str]:
        """The model's metadata keys (at most ``MAX_META_KEYS``)."""
        lib = self.lib
        count = min(int(lib.llama_model_meta_count(self.model)), MAX_META_KEYS)
        keys = []
        buf = ctypes.create_string_buffer(256)
        for i in range(count):
            n = lib.llama_model_meta_key_by_index(self.model, i, buf, len(buf))
            if 0 <= n < len(buf):
                keys.append(buf.raw[:n].decode("utf-8", "replace"))
        return keys

    @property
    def n_vocab(self) -> int:
        """Tokens in the vocabulary."""
        return int(self.lib.llama_vocab_n_tokens(self.vocab))

    def special_text(self, token: int) -> str:
        """A token's text with control tokens rendered (as a template sees ``<|eot|>``)."""
        if not 0 <= token < self.n_vocab:
            return ""
        size = 64
        for _ in range(2):
            buf = ctypes.create_string_buffer(size)
            n = self.lib.llama_token_to_piece(self.vocab, token, buf, size, 0, True)
            if n >= 0:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = -n
            if size > MAX_PIECE_BYTES:
                break
        return ""

    @property
    def bos(self) -> int:
        """The beginning-of-sequence token (-1 if none)."""
        return int(self.lib.llama_vocab_bos(self.vocab))

    @property
    def eos(self) -> int:
        """The end-of-sequence token (-1 if none)."""
        return int(self.lib.llama_vocab_eos(self.vocab))

    def tokenize(self, text: bytes, add_special: bool, parse_special: bool = True) -> list[int]:
        """Text → tokens (thread-safe)."""
        lib = self.lib
        size = len(text) + 8
        while True:
            buf = (lib.llama_token * size)()
            n = lib.llama_tokenize(self.vocab, text, len(text), buf, size, add_special,
                                   parse_special)
            if n >= 0:
                return list(buf[:n])
            if -n <= size:
                raise GenerationError("llama.cpp could not tokenize the prompt")
            size = -n

    def piece(self, token: int) -> bytes:
        """A token's bytes as generated text (special tokens render as nothing)."""
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        lib = self.lib
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = lib.llama_token_to_piece(self.vocab, token, buf, size, 0, False)
            if n >= 0:
                data = buf.raw[:n]
                break
            if -n > MAX_PIECE_BYTES:
                data = b""
                break
            size = -n
        self._pieces[token] = data
        return data

    # -- embeddings ----------------------------------------------------------------------

    def embed(
        self, texts: list[str], cancel: threading.Event | None = None
    ) -> tuple[list[list[float]], int]:
        """L2-normalised embeddings of ``texts`` (pooled as the model says, else the mean of
        its tokens) and the tokens they took; one text at a time in a second context on the
        same weights (made on first use, ``embed_ctx`` tokens), beside the answers."""
        lib = self.lib
        with self._embed_lock:
            if self.model is None:
                raise GenerationError("the model was unloaded")
            ctx = self._embed_context()
            n_embd = int(lib.llama_model_n_embd(self.model))
            memory = lib.llama_get_memory(ctx)
            batch = self._embed_batch
            vectors: list[list[float]] = []
            used = 0
            for text in texts:
                if cancel is not None and cancel.is_set():
                    raise GenerationError("the request was cancelled")
                tokens = self.tokenize(text.encode("utf-8", "replace"), add_special=True,
                                       parse_special=False)
                if not tokens:
                    raise GenerationError("an input is empty after tokenizing")
                if len(tokens) > self.embed_ctx:
                    raise ContextLengthError(
                        f"an input is {len(tokens)} tokens, embeddings take at most "
                        f"{self.embed_ctx}", hint="split the text")
                lib.llama_memory_clear(memory, True)
                for i, token in enumerate(tokens):
                    _put(batch, i, token, i, 0, True)
                batch.n_tokens = len(tokens)
                if lib.llama_decode(ctx, batch) != 0:
                    raise GenerationError("llama.cpp could not compute the embedding: "
                                          + _last_log("decode failed"))
                pooled = lib.llama_get_embeddings_seq(ctx, 0)
                if not pooled:
                    raise EmbeddingError(f"{self.path.name} gives no pooled embedding")
                vector = [float(x) for x in pooled[:n_embd]]
                norm = math.sqrt(sum(x * x for x in vector))
                vectors.append([x / norm for x in vector] if norm > 0 else vector)
                used += len(tokens)
            return vectors, used

    def _embed_context(self) -> Any:
        """The embedding context (under ``_embed_lock``)."""
        if self._embed_ctx is not None:
            return self._embed_ctx
        lib = self.lib
        cpus = os.cpu_count() or 1
        self.embed_ctx = min(self.n_ctx, MAX_EMBED_CTX)
        arch = self.meta("general.architecture") or ""
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = cparams.n_batch = cparams.n_ubatch = self.embed_ctx
        cparams.n_seq_max = 1
        cparams.embeddings = True
        cparams.pooling_type = (lib.LLAMA_POOLING_TYPE_UNSPECIFIED
                                if self.meta(f"{arch}.pooling_type") is not None
                                else lib.LLAMA_POOLING_TYPE_MEAN)
        cparams.n_threads = self.threads or max(cpus // 2, 1)
        cparams.n_threads_batch = self.threads or cpus
        cparams.no_perf = True
        _log_lines.clear()
        ctx = lib.llama_init_from_model(self.model, cparams)
        if not ctx:
            raise EmbeddingError("no embedding context: " + _last_log("out of memory?"))
        self._embed_ctx = ctx
        self._embed_batch = lib.llama_batch_init(self.embed_ctx, 0, 1)
        return ctx

    # -- requests ------------------------------------------------------------------------

    def run(self, req: BatchRequest) -> BackendStats:
        """Decode ``req`` (blocking until it is done); raises what the engine raised for it."""
        self.submit(req)
        while not req.done.wait(WAKE_SECONDS):
            thread = self._thread
            if thread is not None and not thread.is_alive():
                self._finish_orphan(req)
        if req.error is not None:
            raise req.error
        assert req.stats is not None
        return req.stats

    def submit(self, req: BatchRequest) -> None:
        """Queue ``req``; it joins the batch at the next step with a free slot."""
        with self._cv:
            if self._closing or self._failure is not None:
                req.error = GenerationError(self._failure or "the model was unloaded")
                req.done.set()
                return
            self._inbox.append(req)
            self._cv.notify()

    def wake(self) -> None:
        """Have the engine look again now (a request was cancelled, a reader caught up)."""
        with self._cv:
            self._cv.notify()

    def _finish_orphan(self, req: BatchRequest) -> None:
        with self._cv:
            if not req.done.is_set():
                req.error = GenerationError(self._failure or "the llama.cpp engine stopped")
                req.done.set()

    # -- the step loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while self._wait_for_work():
                self._step()
        except BaseException as exc:  # a bug, or llama.cpp failing for good
            self._failure = f"the llama.cpp engine stopped: {type(exc).__name__}: {one_line(exc)}"
            log.exception("llama.cpp engine of %s stopped", self.path.name)
            self._fail_all(self._failure)

    def _wait_for_work(self) -> bool:
        """Admit what fits; wait while there is nothing to do. False once closing."""
        with self._cv:
            while True:
                if self._closing:
                    return False
                admitted = self._take_inbox()
                if admitted or self._has_work():
                    break
                active = any(s.req is not None for s in self._slots)
                self._cv.wait(WAKE_SECONDS if active else None)
        for slot, req in admitted:
            self._admit(slot, req)
        return True

    def _take_inbox(self) -> list[tuple[_Slot, BatchRequest]]:
        """Pair waiting requests (first come, first served) with free slots (under the lock)."""
        taken: list[tuple[_Slot, BatchRequest]] = []
        free = [s for s in self._slots if s.req is None]
        while self._inbox and free:
            req = self._inbox.popleft()
            if req.cancel.is_set():
                req.stats = BackendStats(len(req.tokens), 0, "cancelled")
                req.done.set()
                continue
            slot = max(free, key=lambda s: (_common_prefix(s.cached, req.tokens), -s.used))
            free.remove(slot)
            slot.req = req  # reserved: the slot is set up outside the lock
            taken.append((slot, req))
        return taken

    def _has_work(self) -> bool:
        for slot in self._slots:
            req = slot.req
            if req is None:
                continue
            if req.cancel.is_set() or slot.prefilling:
                return True
            if slot.pending is not None and (req.ready is None or req.ready()):
                return True
        return False

    def _admit(self, slot: _Slot, req: BatchRequest) -> None:
        """Set a slot up for ``req``: keep the cached prefix it shares, drop the rest."""
        lib = self.lib
        self._admitted += 1
        slot.order = slot.used = self._admitted
        keep = min(_common_prefix(slot.cached, req.tokens), len(req.tokens) - 1)
        if keep < len(slot.cached):
            if not lib.llama_memory_seq_rm(self.memory, slot.seq, keep, -1):
                lib.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
                keep = 0
            del slot.cached[keep:]
        slot.fed = keep
        slot.pending = None
        slot.out = -1
        slot.n_gen = 0
        slot.started = False
        slot.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        slot.stops = StopMatcher(req.params.stop, req.emit)
        slot.sampler = self._sampler(req.params)

    def _sampler(self, params: GenParams) -> Any:
        """A sampler chain for one answer: greedy at temperature 0, else top-k 40, top-p,
        min-p 0.05, temperature and a seeded draw (the request's seed, else a random one)."""
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if params.temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(TOP_K))
        if 0 < params.top_p < 1:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(MIN_P, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(params.temperature))
        # 0xFFFFFFFF means "pick a random seed" to llama.cpp
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed % 0xFFFFFFFF))
        return chain

    def _step(self) -> None:
        """Drop cancelled answers, then one batch: decode, sample, emit."""
        for slot in self._slots:
            if slot.req is not None and slot.req.cancel.is_set():
                self._finish(slot, "cancelled")
        lib = self.lib
        batch = self._batch
        n = 0
        decoding: list[_Slot] = []
        for slot in self._slots:
            req = slot.req
            if req is None or slot.pending is None or (req.ready is not None and not req.ready()):
                continue
            _put(batch, n, slot.pending, len(slot.cached), slot.seq, True)
            slot.out = n
            n += 1
            decoding.append(slot)
        prefill: list[tuple[_Slot, int]] = []
        for slot in sorted((s for s in self._slots if s.prefilling), key=lambda s: s.order):
            room = self.n_batch - n
            if room <= 0:
                break
            req = slot.req
            assert req is not None
            end = min(len(req.tokens), slot.fed + room)
            for pos in range(slot.fed, end):
                _put(batch, n, req.tokens[pos], pos, slot.seq, False)
                n += 1
            if end == len(req.tokens):
                batch.logits[n - 1] = True
                slot.out = n - 1
            prefill.append((slot, end))
        if n == 0:
            return
        batch.n_tokens = n
        self.steps += 1
        self.peak = max(self.peak, len(decoding) + len(prefill))
        code = lib.llama_decode(self.ctx, batch)
        if code != 0:
            reason = "no room left in the KV cache" if code == 1 else f"error {code}"
            error = GenerationError(f"llama.cpp could not decode: {reason}")
            for slot in decoding + [s for s, _ in prefill]:
                self._clear(slot)
                self._finish(slot, "error", error)
            return
        for slot in decoding:
            slot.cached.append(slot.pending)  # type: ignore[arg-type]
            slot.pending = None
        sample = list(decoding)
        for slot, end in prefill:
            assert slot.req is not None
            slot.cached.extend(slot.req.tokens[slot.fed:end])
            slot.fed = end
            if end == len(slot.req.tokens):
                sample.append(slot)
        for slot in sample:
            try:
                token = lib.llama_sampler_sample(slot.sampler, self.ctx, slot.out)
                self._accept(slot, token)
            except Exception as exc:  # one answer's failure is that answer's only
                self._finish(slot, "error", GenerationError(
                    f"llama.cpp failed: {type(exc).__name__}: {one_line(exc)}"))

    def _accept(self, slot: _Slot, token: int) -> None:
        """A sampled token: end, text (through the stop strings), or the next to decode."""
        req = slot.req
        assert req is not None and slot.stops is not None
        if not slot.started:
            slot.started = True
            req.emit("")  # TTFT at the first token, even an end token or held-back text
        if self.lib.llama_vocab_is_eog(self.vocab, token):
            self._finish(slot, "stop")  # the end token is not part of the answer
            return
        slot.n_gen += 1
        text = slot.decoder.decode(self.piece(token))
        if text and slot.stops.feed(text):
            self._finish(slot, "stop")
        elif slot.n_gen >= req.limit:
            self._finish(slot, "length")
        else:
            slot.pending = token

    def _finish(self, slot: _Slot, reason: str, error: BaseException | None = None) -> None:
        """End the slot's answer; the slot is free for the next request."""
        req = slot.req
        if req is None:
            return
        if error is None and reason != "cancelled" and slot.stops is not None:
            try:
                if not slot.stops.stopped:
                    slot.stops.feed(slot.decoder.decode(b"", final=True))
                    slot.stops.flush()
            except Exception as exc:
                error = GenerationError(f"llama.cpp failed: {one_line(exc)}")
        if slot.sampler is not None:
            self.lib.llama_sampler_free(slot.sampler)
            slot.sampler = None
        slot.req = None
        slot.pending = None
        slot.stops = slot.decoder = None
        req.stats = BackendStats(len(req.tokens), slot.n_gen, reason)
        req.error = error
        req.done.set()

    def _clear(self, slot: _Slot) -> None:
        """Forget a sequence's cache (after a failed decode its content is unknown)."""
        self.lib.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
        slot.cached.clear()

    def _fail_all(self, message: str) -> None:
        with self._cv:
            waiting = list(self._inbox)
            self._inbox.clear()
        for slot in self._slots:
            if slot.req is not None:
                req = slot.req
                slot.req = None
                if slot.sampler is not None and self.lib is not None:
                    self.lib.llama_sampler_free(slot.sampler)
                    slot.sampler = None
                waiting.append(req)
        for req in waiting:
            if not req.done.is_set():
                req.error = GenerationError(message)
                req.done.set()


def _put(batch: Any, i: int, token: int, pos: int, seq: int, logits: bool) -> None:
    batch.token[i] = token
    batch.pos[i] = pos
    batch.n_seq_id[i] = 1
    batch.seq_id[i][0] = seq
    batch.logits[i] = logits


def _common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo
