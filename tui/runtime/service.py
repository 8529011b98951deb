"""The runtime service: load, unload, generate, over llama.cpp, transformers and OpenAI HTTP.

No Textual and no heavy import here: a backend module (and llama_cpp / torch / transformers)
is imported when that backend is first used.

Concurrency model (all public coroutines must run on one event loop):

* **Loads are serialized and queue** (FIFO): a second ``load`` waits for the first to finish,
  then returns at once if its model is already loaded. A load already inside llama.cpp or
  transformers cannot be interrupted; cancelling the awaiting task returns immediately and the
  half-loaded model is closed when its thread finishes.
* Before anything is evicted, the new model is validated (file present, header readable,
  weights/architecture acceptable, backend installed, fit check), so a bad file never unloads
  a good model; if the backend still refuses it after an eviction, the evicted models are
  loaded again. Eviction is least-recently-used, to stay within ``max_loaded_models`` (local
  models only; endpoints hold no memory) and the optional ``memory_budget``.
* **Each loaded model has a scheduler**: up to ``slots`` requests are answered at once (a GGUF
  model decodes ``parallel`` answers together in one llama.cpp batch, setting
  ``parallel_requests``; transformers models and endpoints answer one at a time), the others
  wait first in, first out, at most ``queue_limit`` of them (setting); one more raises
  :class:`QueueFullError` with a ``retry_after`` estimate. Different models answer
  concurrently. Tokens travel from the backend through a bounded buffer per request: a
  reader that lags pauses its own answer, never the others.
* **Stopping answers**: closing the stream returned by :meth:`RuntimeService.generate` (or
  cancelling the task reading it) stops that request, running or queued, and frees its place
  at the next decoding step; ``cancel(request_id)`` does the same from anywhere;
  ``cancel()`` without an id stops every request made without one (the console's, the
  CLI's), never those of callers that name their requests (a server's clients).
* **A busy model is never unloaded silently**: eviction skips models with running or queued
  requests (a load that needs one of them gone raises :class:`ModelBusyError`), keep-alive
  unloads only idle models, and ``unload`` of a busy model raises :class:`ModelBusyError`
  unless ``force`` (then each of its answers ends with :class:`AnswerStoppedError` saying
  why). Requests already cancelled are waited for, not counted.
* Keep-alive: a model idle for ``keep_alive_minutes`` is unloaded (0 = never); a request's
  ``keep_alive`` (or :meth:`RuntimeService.set_keep_alive`) sets its model's own, as Ollama's
  does: seconds, 0 = unload as soon as it is idle, negative = never.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import importlib.util
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui import formatting as fmt
from tui.errors import MetadataError, ModelDeckError, NotFoundError
from tui.metadata.kinds import embeds_only, not_runnable
from tui.metadata.types import ModelMetadata
from tui.runtime.backends.base import Backend, BackendStats, one_line
from tui.runtime.channel import Channel
from tui.runtime.errors import (
    AnswerStoppedError,
    BackendMissingError,
    EmbeddingError,
    GenerationError,
    LoadError,
    ModelBusyError,
    NotAChatModelError,
    NotLoadedError,
    QueueFullError,
    WontFitError,
)
from tui.runtime.fit import (
    DEFAULT_CONTEXT,
    FitResult,
    MemoryEstimate,
    check_fit,
    estimate_from_metadata,
)
from tui.runtime.memory import GpuFree, MemoryProbe, MemorySnapshot, SystemMemoryProbe
from tui.runtime.types import (
    GenerationMetrics,
    GenParams,
    LoadedModel,
    LoadOptions,
    Message,
    ModelSpec,
    ModelState,
    RuntimeEvent,
    ServingStats,
)
from tui.settings import Settings
from tui.store import Inventory

log = logging.getLogger(__name__)

__all__ = ["RuntimeService"]

_DONE = object()

_BACKEND_PACKAGES = {
    "gguf": (("llama_cpp",), "llama-cpp-python", "pip install 'modeldeck[llama]'"),
    "safetensors": (
        ("torch", "transformers"),
        "transformers and torch",
        "pip install 'modeldeck[transformers]'",
    ),
    "openai": ((), "", ""),
}


MAX_RETRY_AFTER = 300  # seconds: the most a QueueFullError tells a client to wait
MAX_PARALLEL = 64  # answers one llama.cpp context decodes together


@dataclass(eq=False)
class _Request:
    """One call of :meth:`RuntimeService.generate`."""

    id: str
    named: bool  # the caller chose the id (``cancel()`` without an id leaves it alone)
    cancel: threading.Event = field(default_factory=threading.Event)
    state: str = "new"  # new → queued → running → done
    waiter: asyncio.Future[None] | None = None  # while queued
    backend: Backend | None = None
    channel: Channel | None = None
    stopped_by: str | None = None  # why the runtime itself stopped it (unload with force)


class _Scheduler:
    """One model's admission: up to ``slots`` requests run, the others wait first in, first
    out, at most ``queue_limit`` of them."""

    def __init__(self, slots: int, queue_limit: int) -> None:
        self.slots = max(1, slots)
        self.queue_limit = max(0, queue_limit)
        self.running: dict[_Request, None] = {}  # insertion-ordered set
        self.waiting: deque[_Request] = deque()
        self.requests = 0  # answers finished
        self.tokens = 0  # tokens generated
        self.durations: deque[float] = deque(maxlen=32)  # of recent answers, seconds

    @property
    def busy(self) -> bool:
        return bool(self.running or self.waiting)

    def all(self) -> list[_Request]:
        return [*self.running, *self.waiting]

    def live(self) -> tuple[int, int]:
        """Running and queued requests nobody has cancelled."""
        running = sum(1 for r in self.running if not r.cancel.is_set())
        return running, sum(1 for r in self.waiting if not r.cancel.is_set())

    def enter(self, request: _Request, loop: asyncio.AbstractEventLoop, name: str) -> bool:
        """Run ``request`` now (True), or queue it (False; await ``request.waiter``).

        Raises QueueFullError when the queue is full.
        """
        if len(self.running) < self.slots and not self.waiting:
            request.state = "running"
            self.running[request] = None
            return True
        if len(self.waiting) >= self.queue_limit:
            retry = self.retry_after()
            raise QueueFullError(
                f"{name} is busy: {len(self.running)} answering, {len(self.waiting)} waiting "
                f"(queue_limit {self.queue_limit}); retry in about {retry} s",
                retry_after=retry,
            )
        request.state = "queued"
        request.waiter = loop.create_future()
        self.waiting.append(request)
        return False

    def leave(self, request: _Request) -> list[_Request]:
        """``request`` is done (or gave up waiting); returns the requests started in its
        place, in order."""
        if request.state == "running":
            self.running.pop(request, None)
        elif request.state == "queued":
            with contextlib.suppress(ValueError):
                self.waiting.remove(request)
        request.state = "done"
        started: list[_Request] = []
        while self.waiting and len(self.running) < self.slots:
            nxt = self.waiting.popleft()
            if nxt.cancel.is_set():
                _resolve(nxt.waiter)  # it wakes up, sees the cancel and leaves
                continue
            nxt.state = "running"
            self.running[nxt] = None
            _resolve(nxt.waiter)
            started.append(nxt)
        return started

    def record(self, seconds: float, tokens: int) -> None:
        self.requests += 1
        self.tokens += tokens
        self.durations.append(seconds)

    def retry_after(self) -> int:
        """Seconds until a place in the queue likely frees: one of ``slots`` running answers
        ends every (mean recent answer time / slots) seconds."""
        if not self.durations:
            return 1
        mean = sum(self.durations) / len(self.durations)
        return max(1, min(MAX_RETRY_AFTER, math.ceil(mean / self.slots)))


def _resolve(future: asyncio.Future[None] | None) -> None:
    if future is not None and not future.done():
        future.set_result(None)


@dataclass(eq=False)
class _Entry:
    spec: ModelSpec
    backend: Backend
    options: LoadOptions
    n_ctx: int
    gpu_layers: int
    load_seconds: float
    memory_bytes: int
    fit: FitResult | None
    sched: _Scheduler
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # no request running or queued
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # unloaded
    closing: bool = False  # being unloaded: takes no new request
    unloading: bool = False
    timer: asyncio.TimerHandle | None = None
    keep_alive: float | None = None  # this model's own idle seconds (< 0: never; None: default)

    def info(self, default_keep_alive: float = 0.0, now: float | None = None) -> LoadedModel:
        """``now``: the event loop's time, for how long until keep-alive unloads it."""
        keep = _keep_alive(self.keep_alive, default_keep_alive)
        timer = self.timer
        unload_in = max(0.0, timer.when() - now) if timer is not None and now is not None \
            else None
        return LoadedModel(
            id=self.spec.id,
            name=self.spec.name,
            kind=self.spec.kind,
            path=self.spec.path,
            context_length=self.n_ctx,
            gpu_layers=self.gpu_layers,
            load_seconds=self.load_seconds,
            loaded_at=self.loaded_at,
            last_used=self.last_used,
            generating=bool(self.sched.running),
            memory_bytes=self.memory_bytes,
            fit_label=self.fit.label if self.fit else None,
            slots=self.sched.slots,
            running=len(self.sched.running),
            queued=len(self.sched.waiting),
            keep_alive_s=keep if keep >= 0 else None,
            unload_in_s=unload_in,
        )

    def stats(self) -> ServingStats:
        s = self.sched
        return ServingStats(self.spec.id, s.slots, len(s.running), len(s.waiting),
                            s.queue_limit, s.requests, s.tokens)


class RuntimeService:
    """Loads models and streams answers. See the module docstring for the concurrency model.

    ``memory_probe`` reports free RAM/VRAM for the fit check (default: psutil + NVML);
    ``memory_budget`` caps the summed estimates of loaded local models (bytes, None = no cap);
    ``keep_alive_seconds`` overrides ``settings.keep_alive_minutes`` (tests use short values);
    ``stream_buffer`` is how many text deltas of one answer may wait for its reader.
    """

    def __init__(
        self,
        settings: Settings,
        inventory: Inventory,
        *,
        memory_probe: MemoryProbe | None = None,
        memory_budget: int | None = None,
        keep_alive_seconds: float | None = None,
        stream_buffer: int = 64,
    ) -> None:
        self.settings = settings
        self.inventory = inventory
        self.memory_probe: MemoryProbe = memory_probe or SystemMemoryProbe()
        self.memory_budget = memory_budget
        self.keep_alive_seconds = (
            keep_alive_seconds
            if keep_alive_seconds is not None
            else settings.keep_alive_minutes * 60.0
        )
        self.stream_buffer = max(1, stream_buffer)
        self._models: OrderedDict[str, _Entry] = OrderedDict()  # LRU first
        self._listeners: list[Callable[[RuntimeEvent], None]] = []
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="modeldeck-rt")
        # one thread per running answer (llama.cpp's waits for its engine); the schedulers
        # bound how many run
        self._gen_executor = ThreadPoolExecutor(max_workers=256, thread_name_prefix="modeldeck-gen")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._load_lock = asyncio.Lock()
        self._requests: dict[str, _Request] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._states: dict[str, ModelState] = {}

    # -- events ------------------------------------------------------------------------------

    def subscribe(self, callback: Callable[[RuntimeEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on every lifecycle change (on the event loop's thread).

        Returns a function that unsubscribes.
        """
        self._listeners.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(callback)

        return unsubscribe

    def _emit(
        self, model_id: str, state: ModelState, message: str = "", seconds: float | None = None
    ) -> None:
        self._states[model_id] = state
        self._publish(RuntimeEvent(model_id, state, message, seconds))

    def _emit_serving(self, entry: _Entry, request: _Request, what: str) -> None:
        sched = entry.sched
        self._publish(RuntimeEvent(
            entry.spec.id, ModelState.SERVING, what, request_id=request.id,
            running=len(sched.running), queued=len(sched.waiting),
        ))

    def _publish(self, event: RuntimeEvent) -> None:
        for callback in list(self._listeners):
            try:
                callback(event)
            except Exception:  # a broken listener must not break the runtime
                log.exception("runtime event listener failed")

    def state(self, model_id: str) -> ModelState | None:
        """Last reported state of a model (None if never seen)."""
        return self._states.get(model_id)

    # -- queries ------------------------------------------------------------------------------

    def loaded(self) -> list[LoadedModel]:
        """Loaded models, least recently used first."""
        return [e.info(*self._info_args()) for e in self._models.values()]

    def is_loaded(self, model_id: str) -> bool:
        """Whether a model with this id is loaded."""
        return model_id in self._models

    @property
    def generating(self) -> bool:
        """Whether an answer is being generated or waits for a slot."""
        return any(r.state in ("queued", "running") for r in list(self._requests.values()))

    def stats(self) -> list[ServingStats]:
        """Each loaded model's scheduler: slots, running, queued, answers and tokens so far
        (least recently used first)."""
        return [e.stats() for e in self._models.values()]

    # -- resolution and fit -----------------------------------------------------------------

    def resolve(self, ref: str | Path | ModelSpec, *, managed_ok: bool = False) -> ModelSpec:
        """An inventory id, a ``.gguf`` path or a safetensors folder → :class:`ModelSpec`.

        A model ModelDeck manages but cannot run (a LoRA, a VAE, an ONNX file, …) is refused
        with one line, unless ``managed_ok`` (``fit``, which sizes it by its files)."""
        if isinstance(ref, ModelSpec):
            return ref
        text = str(ref)
        record = self.inventory.get_model(text)
        if record is None:
            path = Path(text).expanduser()
            if not path.exists():
                from tui.remote.registry import remote_spec

                if (spec := remote_spec(self.settings.state_dir, text)) is not None:
                    return spec  # <remote>/<model-id>: the remote engine's OpenAI endpoint
                raise NotFoundError(
                    f"no installed model or model file {text!r}",
                    hint="see 'modeldeck ls' for ids, or give a .gguf file or model folder",
                )
            path = path.resolve()
            record = self.inventory.find_by_path(str(path))
            if record is None:
                return self._spec_from_path(path)
        path = Path(record.path)
        if record.format == "safetensors" and path.suffix.lower() == ".safetensors":
            path = path.parent  # a model at the top of a managed folder is recorded by its file
        if record.status == "deleting" or not path.exists():
            raise NotFoundError(
                f"the files of {record.id!r} are gone from disk ({path})",
                hint="re-download the model or run 'modeldeck scan'",
            )
        if record.metadata is not None and record.metadata.kind is None:
            record.metadata.kind = record.kind  # stored before kinds were kept in metadata
        why = not_runnable(record.id, record.format, record.metadata)
        if why is not None and not managed_ok:
            raise LoadError(why)
        weights = record.size_bytes or sum(f.size for f in record.files) or None
        return ModelSpec(
            id=record.id,
            kind=record.format,  # type: ignore[arg-type]
            name=record.name,
            path=path,
            metadata=record.metadata,
            weights_bytes=weights,
            in_inventory=True,
        )

    @staticmethod
    def _spec_from_path(path: Path) -> ModelSpec:
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise LoadError(
                    f"{path.name} is not a .gguf file",
                    hint="give a .gguf file or a transformers model folder",
                )
            return ModelSpec(id=str(path), kind="gguf", name=path.name, path=path)
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise LoadError(f"{path.name} has no config.json; not a transformers model folder")
            return ModelSpec(id=str(path), kind="safetensors", name=path.name, path=path)
        raise LoadError(f"{path} is neither a file nor a folder")

    def _prepare(self, spec: ModelSpec, options: LoadOptions, strict: bool = True) -> None:
        """Validate and fill metadata/weights (blocking; runs in a worker thread).

        ``strict=False`` (fit only) skips checks that need the backend installed.
        """
        if spec.kind == "openai":
            return
        assert spec.path is not None
        if not spec.path.exists():
            raise NotFoundError(f"{spec.path} no longer exists", hint="re-download the model")
        if spec.kind == "gguf":
            from tui.metadata.gguf import gguf_shard_paths, read_gguf_model

            try:
                spec.metadata = read_gguf_model(spec.path)
            except MetadataError as exc:
                raise LoadError(f"not a loadable GGUF: {exc}") from None
            why = _managed_only(spec)
            if why is not None:
                if strict:
                    raise LoadError(why)
                spec.weights_bytes = spec.path.stat().st_size
                return
            shards = gguf_shard_paths(spec.path)
            missing = [p.name for p in shards if not p.exists()]
            if missing:
                raise LoadError(f"GGUF split set is incomplete: {missing[0]} is missing")
            spec.weights_bytes = sum(p.stat().st_size for p in shards)
        else:
            if spec.metadata is None and not spec.in_inventory:  # a folder given by its path
                with contextlib.suppress(LoadError):
                    spec.metadata = _folder_metadata(spec.path)
                why = _managed_only(spec)
                if why is not None:
                    if strict:
                        raise LoadError(why)
                    spec.weights_bytes = spec.metadata.tensor_bytes  # type: ignore[union-attr]
                    return
            if strict:
                _require_backend("safetensors")
            from tui.runtime.backends.transformers import check_folder

            files = check_folder(spec.path, options, check_architecture=strict)
            spec.weights_bytes = sum(p.stat().st_size for p in files)
            if spec.metadata is None or spec.metadata.n_layers is None:
                spec.metadata = _folder_metadata(spec.path)

    def estimate(
        self, spec: ModelSpec, context: int | None = None, parallel: int = 1
    ) -> MemoryEstimate:
        """Memory estimate of a resolved spec at ``context`` tokens for each of ``parallel``
        answers decoded together."""
        return estimate_from_metadata(
            spec.metadata, weights_bytes=spec.weights_bytes, context=context, parallel=parallel
        )

    def slots_for(self, kind: str, options: LoadOptions) -> int:
        """How many answers a model of this kind decodes together with these options (GGUF:
        ``options.parallel`` or the ``parallel_requests`` setting; others: 1)."""
        if kind != "gguf":
            return 1
        parallel = options.parallel or self.settings.parallel_requests
        if not 1 <= parallel <= MAX_PARALLEL:
            raise LoadError(f"parallel must be between 1 and {MAX_PARALLEL}, not {parallel}")
        return parallel

    async def fit(
        self, ref: str | Path | ModelSpec, options: LoadOptions | None = None
    ) -> FitResult:
        """The fit check for a model without loading it (with the slots a load would use)."""
        options = options or LoadOptions()
        spec = await self._run(functools.partial(self.resolve, ref, managed_ok=True))
        if _managed_only(spec) is None:
            await self._run(self._prepare, spec, options, False)
        snapshot = await self._run(self.memory_probe)
        if (why := _managed_only(spec)) is not None:  # no KV cache: its files, by size
            estimate = MemoryEstimate(spec.weights_bytes or 0, 0, 0, 1, 0, (why,))
        else:
            estimate = self.estimate(
                spec, options.context_length, self.slots_for(spec.kind, options)
            )
        return check_fit(estimate, snapshot, options.gpu_layers)

    # -- lifecycle ---------------------------------------------------------------------------

    async def load(
        self, ref: str | Path | ModelSpec, options: LoadOptions | None = None
    ) -> LoadedModel:
        """Load a model (queued behind a running load); return it once loaded.

        Already loaded: returned as is, unless ``options`` are given and differ from those it
        was loaded with (then it is reloaded).

        Raises NotFoundError, LoadError, WontFitError, BackendMissingError, and
        ModelBusyError when making room (or reloading) would cut off answers in progress; on
        any of them the models already loaded stay loaded: checks come before any eviction,
        and models evicted for a load the backend then refuses are loaded again.
        """
        self._bind_loop()
        explicit = options is not None
        options = options or LoadOptions()
        async with self._load_lock:
            spec = await self._run(self.resolve, ref)
            entry = self._models.get(spec.id)
            if entry is not None and entry.closing:
                await entry.gone.wait()  # being unloaded: load it afresh
                entry = self._models.get(spec.id)
            if entry is not None:
                if not explicit or _same_load(entry.options, options):
                    self._touch(entry)
                    return entry.info(*self._info_args())
                if entry.sched.live() != (0, 0):
                    raise ModelBusyError(
                        f"cannot reload {spec.name} with new options: {_busy_text(entry)}",
                        hint="try again when they finish",
                    )
                await self._unload(spec.id, "reloading with new options")
            try:
                _require_backend(spec.kind)
                await self._run(self._prepare, spec, options)
                plan = await self._plan(spec, options)
            except ModelDeckError as exc:
                self._emit(spec.id, ModelState.FAILED, str(exc))
                raise
            n_ctx, gpu_layers, estimate, fit, victims = plan
            evicted = [e for e in (self._models.get(v) for v in victims) if e is not None]
            # checked and claimed with no await in between: no request can slip in
            busy = [e for e in evicted if e.sched.busy or e.closing]
            if busy:
                error = ModelBusyError(f"cannot load {spec.name} now: {_busy_text(busy[0])}",
                                       hint="try again when they finish")
                self._emit(spec.id, ModelState.FAILED, str(error))
                raise error
            for victim in evicted:
                victim.closing = True
            try:
                for victim in evicted:
                    await self._unload(victim.spec.id, "evicted to make room for " + spec.name)
            finally:
                for victim in evicted:  # claimed but left loaded (this load was cancelled)
                    if not victim.unloading:
                        victim.closing = False
            try:
                return await self._load_now(spec, options, n_ctx, gpu_layers, estimate, fit)
            except ModelDeckError:
                await self._restore(evicted, spec.name)
                raise

    async def _restore(self, evicted: list[_Entry], failed: str) -> None:
        """Load again the models evicted for a load that then failed (the backend refused a
        file whose header passed every check), so a failed switch leaves what was loaded."""
        for entry in evicted:
            try:
                await self._load_now(entry.spec, entry.options, entry.n_ctx, entry.gpu_layers,
                                     None, entry.fit)
            except ModelDeckError as exc:
                log.warning("could not restore %s after %s failed: %s", entry.spec.name, failed,
                            exc)
                continue
            restored = self._models.get(entry.spec.id)
            if restored is not None:
                restored.memory_bytes = entry.memory_bytes

    async def _plan(
        self, spec: ModelSpec, options: LoadOptions
    ) -> tuple[int, int, MemoryEstimate | None, FitResult | None, list[str]]:
        """Context, GPU layers, estimate, fit and the models to evict (idle ones, least
        recently used first); ModelBusyError if only busy ones could make room."""
        if spec.kind == "openai":
            return 0, 0, None, None, []
        meta = spec.metadata or ModelMetadata(format=spec.kind)
        trained = meta.context_length or DEFAULT_CONTEXT
        n_ctx = options.context_length or min(trained, DEFAULT_CONTEXT)
        estimate = self.estimate(spec, n_ctx, self.slots_for(spec.kind, options))
        local = [e for e in self._models.values() if e.spec.kind != "openai" and not e.closing]
        victims: list[_Entry] = []

        def evict_one(kept: list[_Entry], why: str) -> None:
            idle = next((e for e in kept if not e.sched.busy), None)
            if idle is None:
                raise ModelBusyError(
                    f"cannot load {spec.name} now: {_busy_text(kept[0])} and {why}",
                    hint="try again when they finish",
                )
            victims.append(idle)
            kept.remove(idle)

        kept = list(local)
        while len(kept) >= self.settings.max_loaded_models:
            limit = self.settings.max_loaded_models
            evict_one(kept, f"only {limit} model{'s' if limit > 1 else ''} may be loaded "
                      "(max_loaded_models)")
        if self.memory_budget is not None:
            if estimate.total_bytes > self.memory_budget and not options.force:
                raise WontFitError(
                    f"{spec.name} needs {fmt.size(estimate.total_bytes)}, more than the "
                    f"memory budget of {fmt.size(self.memory_budget)}",
                    hint="use --force to try anyway",
                )
            while kept and sum(e.memory_bytes for e in kept) + estimate.total_bytes > (
                self.memory_budget
            ):
                evict_one(kept, "the memory budget has no room for both")
        snapshot = _plus_freed(await self._run(self.memory_probe), victims)
        fit = check_fit(estimate, snapshot, options.gpu_layers)
        if not fit.ok and not options.force:
            raise WontFitError(fit.summary(), hint="use --force to load anyway")
        if options.gpu_layers == "all":
            gpu_layers = -1
        elif options.gpu_layers == "auto":
            gpu_layers = -1 if fit.verdict == "gpu" else fit.gpu_layers
        else:
            gpu_layers = int(options.gpu_layers)
        return n_ctx, gpu_layers, estimate, fit, [v.spec.id for v in victims]

    async def _load_now(
        self,
        spec: ModelSpec,
        options: LoadOptions,
        n_ctx: int,
        gpu_layers: int,
        estimate: MemoryEstimate | None,
        fit: FitResult | None,
    ) -> LoadedModel:
        slots = self.slots_for(spec.kind, options)
        backend = self._make_backend(spec, options, n_ctx, gpu_layers, slots)
        self._emit(spec.id, ModelState.LOADING, spec.name)
        started = time.perf_counter()
        future = asyncio.get_running_loop().run_in_executor(self._executor, backend.load)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda _f: _close_quietly(backend))
            self._emit(spec.id, ModelState.FAILED, "load cancelled")
            raise
        except ModelDeckError as exc:
            await self._run(backend.close)
            self._emit(spec.id, ModelState.FAILED, str(exc))
            raise
        except Exception as exc:
            await self._run(backend.close)
            error = LoadError(f"cannot load {spec.name}: {type(exc).__name__}: {one_line(exc)}")
            self._emit(spec.id, ModelState.FAILED, str(error))
            raise error from None
        seconds = time.perf_counter() - started
        entry = _Entry(
            spec=spec,
            backend=backend,
            options=options,
            n_ctx=n_ctx,
            gpu_layers=gpu_layers,
            load_seconds=seconds,
            memory_bytes=estimate.total_bytes if estimate else 0,
            fit=fit,
            sched=_Scheduler(slots, self.settings.queue_limit),
        )
        entry.idle.set()
        self._models[spec.id] = entry
        if spec.in_inventory:
            await self._run(self._record_load, spec.id, seconds)
        self._emit(spec.id, ModelState.LOADED, spec.name, seconds)
        self._touch(entry)
        return entry.info(*self._info_args())

    def _make_backend(
        self, spec: ModelSpec, options: LoadOptions, n_ctx: int, gpu_layers: int, slots: int
    ) -> Backend:
        if spec.kind == "gguf":
            from tui.runtime.backends.llama_cpp import LlamaCppBackend

            return LlamaCppBackend(spec, options, gpu_layers, n_ctx, slots)
        if spec.kind == "safetensors":
            from tui.runtime.backends.transformers import TransformersBackend

            return TransformersBackend(spec, options, n_ctx, gpu_layers)
        from tui.runtime.backends.openai import OpenAIBackend

        return OpenAIBackend(spec)

    async def unload(
        self, model_id: str, reason: str = "requested", *, force: bool = False
    ) -> bool:
        """Unload a model. False if it was not loaded.

        A model answering requests (running or queued, not cancelled) is not unloaded:
        ModelBusyError says how many. ``force`` stops them first; each ends with
        AnswerStoppedError naming ``reason``. Requests already cancelled are waited for.
        """
        self._bind_loop()
        return await self._unload(model_id, reason, force=force)

    async def _unload(
        self, model_id: str, reason: str, *, force: bool = False, only_idle: bool = False
    ) -> bool:
        entry = self._models.get(model_id)
        if entry is None:
            return False
        if entry.unloading:
            await entry.gone.wait()
            return False
        if only_idle and entry.sched.busy:
            return False
        if entry.sched.live() != (0, 0) and not force:
            raise ModelBusyError(
                f"{_busy_text(entry)}; unload when they finish or pass force",
            )
        entry.closing = entry.unloading = True
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        self._emit(model_id, ModelState.UNLOADING, reason)
        for request in entry.sched.all():
            if not request.cancel.is_set():
                request.stopped_by = f"{entry.spec.name} was unloaded ({reason})"
            self._stop(request)
        # finished even if the caller is cancelled: others wait for ``gone``
        await asyncio.shield(self._finish_unload(entry, reason))
        return True

    async def _finish_unload(self, entry: _Entry, reason: str) -> None:
        model_id = entry.spec.id
        try:
            await entry.idle.wait()
            if self._models.get(model_id) is entry:
                del self._models[model_id]
            try:
                await self._run(entry.backend.close)
            except Exception as exc:  # the model is dropped from the table either way
                log.warning("closing %s failed: %s", model_id, exc)
            self._emit(model_id, ModelState.UNLOADED, reason)
        finally:
            entry.gone.set()

    async def unload_all(self, *, force: bool = False) -> None:
        """Unload every model (ModelBusyError for a busy one unless ``force``)."""
        for model_id in list(self._models):
            await self._unload(model_id, "unload all", force=force)

    async def aclose(self) -> None:
        """Stop every answer, unload everything and stop the worker threads."""
        for request in list(self._requests.values()):
            if request.state != "done":
                request.stopped_by = request.stopped_by or "the runtime shut down"
                self._stop(request)
        for model_id in list(self._models):
            await self._unload(model_id, "unload all", force=True)
        for task in list(self._tasks):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._gen_executor.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.memory_probe, "close", None)
        if callable(close):
            close()

    def _touch(self, entry: _Entry) -> None:
        entry.last_used = time.monotonic()
        self._models.move_to_end(entry.spec.id)
        self._schedule_idle(entry)

    def _info_args(self) -> tuple[float, float | None]:
        loop = self._loop
        return self.keep_alive_seconds, (loop.time() if loop is not None else None)

    def set_keep_alive(self, model_id: str, seconds: float | None) -> bool:
        """Set how long a loaded model may stay idle before it is unloaded (seconds; 0: as
        soon as it is idle; negative: never; None: the ``keep_alive_minutes`` setting). False
        if it is not loaded."""
        entry = self._models.get(model_id)
        if entry is None or entry.closing:
            return False
        entry.keep_alive = seconds
        self._schedule_idle(entry)
        return True

    def _schedule_idle(self, entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        keep = _keep_alive(entry.keep_alive, self.keep_alive_seconds)
        if keep < 0 or self._loop is None or entry.sched.busy:
            return
        entry.timer = self._loop.call_later(keep, self._on_idle, entry)

    def _on_idle(self, entry: _Entry) -> None:
        entry.timer = None
        if self._models.get(entry.spec.id) is not entry or entry.sched.busy:
            return
        keep = _keep_alive(entry.keep_alive, self.keep_alive_seconds)
        why = f"idle for {keep / 60:g} min" if keep else "idle (keep_alive 0)"
        task = asyncio.ensure_future(
            self._unload(entry.spec.id, why, only_idle=True)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def count_tokens(self, model_id: str, messages: Sequence[Message]) -> int | None:
        """Tokens ``messages`` make as a prompt of the loaded model (its chat template and
        tokenizer, in a runtime thread); None when its backend cannot tell (an endpoint).
        Raises NotLoadedError, TemplateError."""
        entry = self._models.get(model_id)
        if entry is None or entry.closing:
            raise NotLoadedError(f"{model_id} is not loaded", hint="load it first")
        count = getattr(entry.backend, "count_tokens", None)
        if count is None:
            return None
        return int(await self._run(count, list(messages)))

    # -- generation --------------------------------------------------------------------------

    async def generate(
        self,
        ref: str | Path | ModelSpec,
        messages: Sequence[Message],
        params: GenParams | None = None,
        *,
        options: LoadOptions | None = None,
        request_id: str | None = None,
        prompt: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        keep_alive: float | None = None,
    ) -> AsyncIterator[str | GenerationMetrics]:
        """Stream an answer: text deltas, then one :class:`GenerationMetrics`.

        Loads the model first if needed (with ``options``), then waits for a slot of its
        scheduler. ``request_id`` names the request for :meth:`cancel` (unique among those in
        progress); without one, ``cancel()`` with no argument reaches it. Leaving the loop
        early: use ``contextlib.aclosing`` (or cancel the task), which stops the request and
        frees its place. Raises QueueFullError (the model's queue is full), GenerationError,
        EndpointError, TemplateError, AnswerStoppedError (the runtime stopped the answer:
        its model was unloaded with force, or the runtime shut down).

        ``prompt`` is raw text to continue instead of ``messages`` in the chat template (a
        local model only); ``tools`` (JSON schemas) reach the chat template; ``keep_alive``
        becomes the model's own keep-alive once the request has its place (see
        :meth:`set_keep_alive`).
        """
        self._bind_loop()
        params = params or GenParams()
        if not messages and prompt is None:
            raise GenerationError("nothing to answer: the conversation is empty")
        if request_id is not None and request_id in self._requests:
            raise GenerationError(f"request id {request_id!r} is already in use")
        request = _Request(request_id or uuid.uuid4().hex, named=request_id is not None)
        self._requests[request.id] = request
        try:
            entry = await self._entry_for(ref, options)
            if _embeds_only(entry.spec):
                raise NotAChatModelError(
                    f"{entry.spec.name} is an embedding model: it makes vectors, not answers",
                    hint="ask it through POST /v1/embeddings (modeldeck serve)")
            extra: dict[str, Any] = {}
            if prompt is not None:
                extra["prompt"] = prompt
            if tools:
                extra["tools"] = tools
            serve = self._serve(entry, request, list(messages), params, extra, keep_alive)
            async with contextlib.aclosing(serve) as stream:
                async for item in stream:
                    yield item
        finally:
            self._requests.pop(request.id, None)

    async def _entry_for(self, ref: str | Path | ModelSpec, options: LoadOptions | None) -> _Entry:
        """The loaded model ``ref`` names, loading it if needed."""
        model_id = ref.id if isinstance(ref, ModelSpec) else str(ref)
        entry = self._models.get(model_id)
        if entry is None or entry.closing:
            info = await self.load(ref, options)
            entry = self._models.get(info.id)
            if entry is None or entry.closing:
                raise NotLoadedError(f"{info.name} was unloaded before it could answer",
                                     hint="send the request again")
        return entry

    async def _serve(
        self,
        entry: _Entry,
        request: _Request,
        messages: list[Message],
        params: GenParams,
        extra: dict[str, Any] | None = None,
        keep_alive: float | None = None,
    ) -> AsyncIterator[str | GenerationMetrics]:
        """Wait for a slot of the model's scheduler (first in, first out), then answer."""
        arrived = time.perf_counter()
        runs = self._admit(entry, request, keep_alive)
        try:
            if not runs:
                assert request.waiter is not None
                await request.waiter
            waited = time.perf_counter() - arrived
            if request.cancel.is_set():  # cancelled before it started: it never does
                self._raise_if_stopped(request, 0)
                yield GenerationMetrics(entry.spec.id, 0, 0, None, None, None, 0.0, "cancelled",
                                        waited * 1000)
                return
            stream = self._stream(entry, request, messages, params, waited, extra or {})
            async with contextlib.aclosing(stream) as s:
                async for item in s:
                    yield item
        finally:
            self._release(entry, request)

    def _admit(self, entry: _Entry, request: _Request, keep_alive: float | None) -> bool:
        """Enter the model's scheduler: True if ``request`` runs now, False if it waits for
        ``request.waiter``; QueueFullError if the queue is full."""
        try:
            runs = entry.sched.enter(request, asyncio.get_running_loop(), entry.spec.name)
        except QueueFullError:
            self._emit_serving(entry, request, "refused")
            raise
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if keep_alive is not None:
            entry.keep_alive = keep_alive
        entry.idle.clear()
        self._emit_serving(entry, request, "started" if runs else "queued")
        return runs

    async def embed(
        self,
        ref: str | Path | ModelSpec,
        texts: Sequence[str],
        *,
        request_id: str | None = None,
        keep_alive: float | None = None,
    ) -> tuple[list[list[float]], int]:
        """Embedding vectors (L2-normalised) of ``texts`` and the tokens they took.

        Loads the model if needed and takes a place in its scheduler like an answer (queued
        first in, first out; QueueFullError when full). EmbeddingError when the backend
        cannot embed (only GGUF models can), ContextLengthError for a text longer than the
        embedding context.
        """
        self._bind_loop()
        if request_id is not None and request_id in self._requests:
            raise GenerationError(f"request id {request_id!r} is already in use")
        request = _Request(request_id or uuid.uuid4().hex, named=request_id is not None)
        self._requests[request.id] = request
        try:
            entry = await self._entry_for(ref, None)
            embed = getattr(entry.backend, "embed", None)
            if embed is None:
                raise EmbeddingError(f"{entry.spec.name} cannot make embeddings",
                                     hint="embeddings come from GGUF models (llama.cpp)")
            runs = self._admit(entry, request, keep_alive)
            try:
                if not runs:
                    assert request.waiter is not None
                    await request.waiter
                if request.cancel.is_set():
                    self._raise_if_stopped(request, 0)
                    raise GenerationError("the request was cancelled before it started")
                request.backend = entry.backend
                future = asyncio.get_running_loop().run_in_executor(
                    self._gen_executor, embed, list(texts), request.cancel)
                try:
                    vectors, tokens = await asyncio.shield(future)
                except asyncio.CancelledError:
                    request.cancel.set()
                    with contextlib.suppress(Exception):
                        await future
                    raise
                except ModelDeckError:
                    raise
                except Exception as exc:
                    raise GenerationError(
                        f"{entry.spec.name} failed: {type(exc).__name__}: {one_line(exc)}"
                    ) from None
                self._raise_if_stopped(request, 0)
                return vectors, tokens
            finally:
                self._release(entry, request)
        finally:
            self._requests.pop(request.id, None)

    def _release(self, entry: _Entry, request: _Request) -> None:
        """``request`` no longer holds or waits for a slot (once; its reader may still be
        reading the last text): the next in the queue starts."""
        if request.state == "done":
            return
        sched = entry.sched
        started = sched.leave(request)
        self._emit_serving(entry, request, "finished")
        for other in started:
            self._emit_serving(entry, other, "started")
        if not sched.busy:
            entry.idle.set()
            if self._models.get(entry.spec.id) is entry and not entry.closing:
                self._touch(entry)

    async def _stream(
        self,
        entry: _Entry,
        request: _Request,
        messages: list[Message],
        params: GenParams,
        waited: float,
        extra: dict[str, Any],
    ) -> AsyncIterator[str | GenerationMetrics]:
        loop = asyncio.get_running_loop()
        backend = entry.backend
        cancel = request.cancel
        batched = bool(getattr(backend, "batched", False))
        # a batching backend's thread serves every answer: it never waits for one reader
        channel = Channel(loop, self.stream_buffer,
                          on_space=backend.interrupt if batched else None)
        times: dict[str, float] = {}
        put = channel.push if batched else channel.put

        def emit(text: str) -> None:
            # "" marks the first token when it has no text (yet): an end token, held-back text
            if "first" not in times:
                times["first"] = time.perf_counter()
            if text and not cancel.is_set():
                put(text)

        def work() -> BackendStats:
            try:
                if batched:
                    return backend.generate(messages, params, emit, cancel,  # type: ignore[call-arg]
                                            channel.ready, **extra)
                return backend.generate(messages, params, emit, cancel, **extra)
            finally:
                times["end"] = time.perf_counter()
                channel.put_final(_DONE)

        request.backend = backend
        request.channel = channel
        started = time.perf_counter()
        future = loop.run_in_executor(self._gen_executor, work)
        # the slot is free once the backend is done, however slowly the reader drains
        future.add_done_callback(lambda _f: self._release(entry, request))
        try:
            get = channel.get
            while True:
                item = await get()
                if item is _DONE:
                    break
                yield item
            try:
                stats = await future
            except ModelDeckError:
                raise
            except Exception as exc:
                raise GenerationError(
                    f"{entry.spec.name} failed: {type(exc).__name__}: {one_line(exc)}"
                ) from None
            self._raise_if_stopped(request, stats.completion_tokens)
            metrics = self._metrics(entry, stats, started, times)
            metrics.queue_ms = waited * 1000
            entry.sched.record(metrics.total_s, stats.completion_tokens)
            yield metrics
            if entry.spec.in_inventory:  # after the answer is out, and off the event loop
                await self._run(self._record, entry.spec.id, metrics)
        finally:
            if not future.done():
                cancel.set()
                channel.abort()
                backend.interrupt()
                with contextlib.suppress(Exception):
                    await asyncio.shield(future)
            request.channel = None

    @staticmethod
    def _raise_if_stopped(request: _Request, tokens: int) -> None:
        if request.stopped_by:
            done = "before it started" if not tokens else (
                f"after {tokens} token" + ("s" if tokens != 1 else ""))
            raise AnswerStoppedError(f"the answer was stopped {done}: {request.stopped_by}")

    def _metrics(
        self, entry: _Entry, stats: BackendStats, started: float, times: dict[str, float]
    ) -> GenerationMetrics:
        first = times.get("first")
        end = times.get("end", time.perf_counter())
        ttft = (first - started) if first is not None else None
        tps = None
        if first is not None and stats.completion_tokens > 1 and end > first:
            tps = (stats.completion_tokens - 1) / (end - first)
        pps = stats.prompt_tokens / ttft if ttft and stats.prompt_tokens else None
        metrics = GenerationMetrics(
            model_id=entry.spec.id,
            prompt_tokens=stats.prompt_tokens,
            completion_tokens=stats.completion_tokens,
            ttft_ms=ttft * 1000 if ttft is not None else None,
            prompt_tokens_per_s=pps,
            tokens_per_s=tps,
            total_s=end - started,
            finish_reason=stats.finish_reason,
            usage=stats.usage,
        )
        return metrics

    async def list_endpoint_models(self, base_url: str, api_key: str | None = None) -> list[str]:
        """Model names an OpenAI-compatible endpoint serves (``GET /v1/models``)."""
        from tui.runtime.backends.openai import list_models

        return await self._run(list_models, base_url, api_key)

    def _record_load(self, model_id: str, seconds: float) -> None:
        try:
            self.inventory.record_metrics(model_id, load_seconds=seconds)
            self.inventory.touch_last_used(model_id)
        except ModelDeckError as exc:
            log.warning("could not record the load time of %s: %s", model_id, exc)

    def _record(self, model_id: str, m: GenerationMetrics) -> None:
        """Save an answer's speed in the inventory (blocking)."""
        try:
            self.inventory.record_metrics(
                model_id,
                tokens_per_s=m.tokens_per_s,
                prompt_tokens_per_s=m.prompt_tokens_per_s,
                ttft_ms=m.ttft_ms,
            )
            self.inventory.touch_last_used(model_id)
        except ModelDeckError as exc:  # e.g. the model was removed meanwhile
            log.warning("could not record metrics for %s: %s", model_id, exc)

    def cancel(self, request_id: str | None = None) -> bool:
        """Stop answers (thread-safe); True if one was stopped.

        With ``request_id``: that request, running or queued (a queued one never starts).
        Without: every request made without an id (the console's and the CLI's: "stop what
        is generating"); requests whose callers named them (a server's clients) go on.
        """
        requests = list(self._requests.values())
        if request_id is not None:
            chosen = [r for r in requests if r.id == request_id]
        else:
            chosen = [r for r in requests if not r.named]
        stopped = False
        for request in chosen:
            if request.state != "done" and not request.cancel.is_set():
                self._stop(request)
                stopped = True
        return stopped

    def _stop(self, request: _Request) -> None:
        """Cancel one request: its backend stops at the next token, a queued one wakes up."""
        request.cancel.set()
        channel, backend = request.channel, request.backend
        if channel is not None:
            channel.abort()
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.interrupt()
        if request.waiter is not None and self._loop is not None:
            try:
                here = asyncio.get_running_loop() is self._loop
            except RuntimeError:
                here = False
            if here:
                _resolve(request.waiter)
            elif not self._loop.is_closed():
                self._loop.call_soon_threadsafe(_resolve, request.waiter)

    # -- helpers -----------------------------------------------------------------------------

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._models and self._loop is not None and not self._loop.is_closed():
                log.debug("runtime service used from a second event loop")
            self._loop = loop
            self._load_lock = asyncio.Lock()
            for entry in self._models.values():
                entry.idle = asyncio.Event()
                entry.gone = asyncio.Event()
                if not entry.sched.busy:
                    entry.idle.set()
                entry.timer = None
                self._schedule_idle(entry)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


def _keep_alive(own: float | None, default: float) -> float:
    """A model's idle seconds before unloading: its own, else the default (whose 0 means
    never); negative = never."""
    if own is not None:
        return own
    return default if default > 0 else -1.0


def _busy_text(entry: _Entry) -> str:
    """``qwen is answering 3 requests (2 more queued)``."""
    running, queued = entry.sched.live()
    if not running:
        return f"{entry.spec.name} has {queued} request{'s' if queued != 1 else ''} queued"
    text = f"{entry.spec.name} is answering {running} request" + ("s" if running != 1 else "")
    return text + (f" ({queued} more queued)" if queued else "")


def _embeds_only(spec: ModelSpec) -> bool:
    """A loaded embedding model (vectors through :meth:`RuntimeService.embed`, no answers)."""
    meta = spec.metadata
    return spec.kind == "gguf" and embeds_only("gguf", meta)


def _managed_only(spec: ModelSpec) -> str | None:
    """Why a resolved model cannot run here (it is only managed), or ``None``."""
    if spec.kind == "openai":
        return None
    meta = spec.metadata
    fmt = meta.format if meta is not None and meta.format else spec.kind
    return not_runnable(spec.id if spec.in_inventory else spec.name, fmt, meta)


def _require_backend(kind: str) -> None:
    modules, label, command = _BACKEND_PACKAGES[kind]
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise BackendMissingError(
                f"{label} is not installed, needed for {kind} models", hint=command
            )


def _close_quietly(backend: Backend) -> None:
    """Close a backend whose load was abandoned (runs once its loading thread is done)."""
    try:
        backend.close()
    except Exception as exc:
        log.warning("closing an abandoned load failed: %s", exc)


def _same_load(old: LoadOptions, new: LoadOptions) -> bool:
    """Whether a loaded model can serve a load request with ``new`` options as it is."""
    ignore = {"force"}
    return all(
        getattr(old, name) == getattr(new, name)
        for name in LoadOptions.__dataclass_fields__
        if name not in ignore
    )


def _plus_freed(snapshot: MemorySnapshot, victims: list[_Entry]) -> MemorySnapshot:
    """Memory as it will be once ``victims`` are unloaded."""
    if not victims:
        return snapshot
    ram = snapshot.ram_free
    gpus = list(snapshot.gpus)
    for v in victims:
        if v.gpu_layers != 0 and gpus:
            g = gpus[0]
            gpus[0] = GpuFree(g.index, min(g.total, g.free + v.memory_bytes), g.total, g.name)
        else:
            ram += v.memory_bytes
    return MemorySnapshot(ram, snapshot.ram_total, tuple(gpus))


def _folder_metadata(folder: Path) -> ModelMetadata:
    """Metadata of a transformers folder: the shared reader if present, else config.json."""
    try:
        from tui.metadata.safetensors import read_safetensors_folder
    except ImportError:
        read_safetensors_folder = None
    if read_safetensors_folder is not None:
        try:
            return read_safetensors_folder(folder)
        except MetadataError as exc:
            raise LoadError(f"cannot read {folder.name}: {exc}") from None
    import json

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LoadError(f"{folder.name}/config.json is unreadable: {one_line(exc)}") from None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    n_heads = text.get("num_attention_heads")
    hidden = text.get("hidden_size")
    return ModelMetadata(
        format="safetensors",
        architecture=config.get("model_type"),
        context_length=text.get("max_position_embeddings"),
        n_layers=text.get("num_hidden_layers"),
        n_heads=n_heads,
        n_kv_heads=text.get("num_key_value_heads") or n_heads,
        embedding_size=hidden,
        head_dim=text.get("head_dim") or (hidden // n_heads if hidden and n_heads else None),
        vocab_size=text.get("vocab_size"),
    )
