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
* **One generation at a time**; :meth:`RuntimeService.cancel` stops it at the next token.
  Tokens travel from the worker thread through a bounded buffer (backpressure: the worker
  waits when the consumer lags).
* Keep-alive: a model idle for ``keep_alive_minutes`` is unloaded (0 = never).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tui.errors import MetadataError, ModelDeckError, NotFoundError
from tui.metadata.types import ModelMetadata
from tui.runtime.backends.base import Backend, BackendStats, one_line
from tui.runtime.channel import Channel
from tui.runtime.errors import (
    BackendMissingError,
    GenerationError,
    LoadError,
    NotLoadedError,
    WontFitError,
)
from tui.runtime.fit import (
    DEFAULT_CONTEXT,
    FitResult,
    MemoryEstimate,
    check_fit,
    estimate_from_metadata,
    format_bytes,
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
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    generating: bool = False
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    timer: asyncio.TimerHandle | None = None

    def info(self) -> LoadedModel:
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
            generating=self.generating,
            memory_bytes=self.memory_bytes,
            fit_label=self.fit.label if self.fit else None,
        )


class RuntimeService:
    """Loads models and streams answers. See the module docstring for the concurrency model.

    ``memory_probe`` reports free RAM/VRAM for the fit check (default: psutil + NVML);
    ``memory_budget`` caps the summed estimates of loaded local models (bytes, None = no cap);
    ``keep_alive_seconds`` overrides ``settings.keep_alive_minutes`` (tests use short values).
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._load_lock = asyncio.Lock()
        self._gen_lock = asyncio.Lock()
        self._cancel_event: threading.Event | None = None
        self._active_backend: Backend | None = None
        self._channel: Channel | None = None
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
        event = RuntimeEvent(model_id, state, message, seconds)
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
        return [e.info() for e in self._models.values()]

    def is_loaded(self, model_id: str) -> bool:
        """Whether a model with this id is loaded."""
        return model_id in self._models

    @property
    def generating(self) -> bool:
        """Whether an answer is being generated."""
        return self._cancel_event is not None

    # -- resolution and fit -----------------------------------------------------------------

    def resolve(self, ref: str | Path | ModelSpec) -> ModelSpec:
        """An inventory id, a ``.gguf`` path or a safetensors folder → :class:`ModelSpec`."""
        if isinstance(ref, ModelSpec):
            return ref
        text = str(ref)
        record = self.inventory.get_model(text)
        if record is None:
            path = Path(text).expanduser()
            if not path.exists():
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
        if record.format not in ("gguf", "safetensors"):
            raise LoadError(f"{record.id!r} has format {record.format!r}, which cannot be run")
        weights = sum(f.size for f in record.files) or record.size_bytes or None
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
            shards = gguf_shard_paths(spec.path)
            missing = [p.name for p in shards if not p.exists()]
            if missing:
                raise LoadError(f"GGUF split set is incomplete: {missing[0]} is missing")
            spec.weights_bytes = sum(p.stat().st_size for p in shards)
        else:
            if strict:
                _require_backend("safetensors")
            from tui.runtime.backends.transformers import check_folder

            files = check_folder(spec.path, options, check_architecture=strict)
            spec.weights_bytes = sum(p.stat().st_size for p in files)
            if spec.metadata is None or spec.metadata.n_layers is None:
                spec.metadata = _folder_metadata(spec.path)

    def estimate(self, spec: ModelSpec, context: int | None = None) -> MemoryEstimate:
        """Memory estimate of a resolved spec at ``context`` tokens."""
        return estimate_from_metadata(
            spec.metadata, weights_bytes=spec.weights_bytes, context=context
        )

    async def fit(
        self, ref: str | Path | ModelSpec, options: LoadOptions | None = None
    ) -> FitResult:
        """The fit check for a model without loading it."""
        options = options or LoadOptions()
        spec = await self._run(self.resolve, ref)
        await self._run(self._prepare, spec, options, False)
        snapshot = await self._run(self.memory_probe)
        return check_fit(self.estimate(spec, options.context_length), snapshot, options.gpu_layers)

    # -- lifecycle ---------------------------------------------------------------------------

    async def load(
        self, ref: str | Path | ModelSpec, options: LoadOptions | None = None
    ) -> LoadedModel:
        """Load a model (queued behind a running load); return it once loaded.

        Already loaded: returned as is, unless ``options`` are given and differ from those it
        was loaded with (then it is reloaded).

        Raises NotFoundError, LoadError, WontFitError, BackendMissingError; on any of them
        the models already loaded stay loaded: checks come before any eviction, and models
        evicted for a load the backend then refuses are loaded again.
        """
        self._bind_loop()
        explicit = options is not None
        options = options or LoadOptions()
        async with self._load_lock:
            spec = await self._run(self.resolve, ref)
            entry = self._models.get(spec.id)
            if entry is not None:
                if not explicit or _same_load(entry.options, options):
                    self._touch(entry)
                    return entry.info()
                await self._unload(spec.id, "reloading with new options")
            try:
                _require_backend(spec.kind)
                await self._run(self._prepare, spec, options)
                plan = await self._plan(spec, options)
            except ModelDeckError as exc:
                self._emit(spec.id, ModelState.FAILED, str(exc))
                raise
            n_ctx, gpu_layers, estimate, fit, victims = plan
            evicted = [self._models[v] for v in victims if v in self._models]
            for victim in victims:
                await self._unload(victim, "evicted to make room for " + spec.name)
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
        if spec.kind == "openai":
            return 0, 0, None, None, []
        meta = spec.metadata or ModelMetadata(format=spec.kind)
        trained = meta.context_length or DEFAULT_CONTEXT
        n_ctx = options.context_length or min(trained, DEFAULT_CONTEXT)
        estimate = self.estimate(spec, n_ctx)
        local = [e for e in self._models.values() if e.spec.kind != "openai"]
        victims: list[_Entry] = []
        while len(local) - len(victims) >= self.settings.max_loaded_models:
            victims.append(local[len(victims)])
        if self.memory_budget is not None:
            if estimate.total_bytes > self.memory_budget and not options.force:
                raise WontFitError(
                    f"{spec.name} needs {format_bytes(estimate.total_bytes)}, more than the "
                    f"memory budget of {format_bytes(self.memory_budget)}",
                    hint="use --force to try anyway",
                )
            kept = local[len(victims):]
            while kept and sum(e.memory_bytes for e in kept) + estimate.total_bytes > (
                self.memory_budget
            ):
                victims.append(kept.pop(0))
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
        backend = self._make_backend(spec, options, n_ctx, gpu_layers)
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
        )
        entry.idle.set()
        self._models[spec.id] = entry
        if spec.in_inventory:
            await self._run(self._record_load, spec.id, seconds)
        self._emit(spec.id, ModelState.LOADED, spec.name, seconds)
        self._touch(entry)
        return entry.info()

    def _make_backend(
        self, spec: ModelSpec, options: LoadOptions, n_ctx: int, gpu_layers: int
    ) -> Backend:
        if spec.kind == "gguf":
            from tui.runtime.backends.llama_cpp import LlamaCppBackend

            return LlamaCppBackend(spec, options, gpu_layers, n_ctx)
        if spec.kind == "safetensors":
            from tui.runtime.backends.transformers import TransformersBackend

            return TransformersBackend(spec, options, n_ctx, gpu_layers)
        from tui.runtime.backends.openai import OpenAIBackend

        return OpenAIBackend(spec)

    async def unload(self, model_id: str, reason: str = "requested") -> bool:
        """Unload a model (cancelling its answer in flight). False if it was not loaded."""
        self._bind_loop()
        return await self._unload(model_id, reason)

    async def _unload(self, model_id: str, reason: str) -> bool:
        entry = self._models.get(model_id)
        if entry is None:
            return False
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        self._emit(model_id, ModelState.UNLOADING, reason)
        if entry.generating:
            self.cancel()
            await entry.idle.wait()
        if self._models.get(model_id) is not entry:
            return False
        del self._models[model_id]
        try:
            await self._run(entry.backend.close)
        except Exception as exc:  # the model is dropped from the table either way
            log.warning("closing %s failed: %s", model_id, exc)
        self._emit(model_id, ModelState.UNLOADED, reason)
        return True

    async def unload_all(self) -> None:
        """Unload every model."""
        for model_id in list(self._models):
            await self._unload(model_id, "unload all")

    async def aclose(self) -> None:
        """Cancel, unload everything and stop the worker threads."""
        self.cancel()
        await self.unload_all()
        for task in list(self._tasks):
            task.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
        close = getattr(self.memory_probe, "close", None)
        if callable(close):
            close()

    def _touch(self, entry: _Entry) -> None:
        entry.last_used = time.monotonic()
        self._models.move_to_end(entry.spec.id)
        self._schedule_idle(entry)

    def _schedule_idle(self, entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if self.keep_alive_seconds <= 0 or self._loop is None or entry.generating:
            return
        entry.timer = self._loop.call_later(self.keep_alive_seconds, self._on_idle, entry)

    def _on_idle(self, entry: _Entry) -> None:
        entry.timer = None
        if self._models.get(entry.spec.id) is not entry or entry.generating:
            return
        minutes = self.keep_alive_seconds / 60
        task = asyncio.ensure_future(self._unload(entry.spec.id, f"idle for {minutes:g} min"))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- generation --------------------------------------------------------------------------

    async def generate(
        self,
        ref: str | Path | ModelSpec,
        messages: Sequence[Message],
        params: GenParams | None = None,
        *,
        options: LoadOptions | None = None,
    ) -> AsyncIterator[str | GenerationMetrics]:
        """Stream an answer: text deltas, then one :class:`GenerationMetrics`.

        Loads the model first if needed. Use ``contextlib.aclosing`` (or :meth:`cancel`) when
        leaving the loop early. Raises GenerationError/EndpointError/TemplateError.
        """
        self._bind_loop()
        params = params or GenParams()
        if not messages:
            raise GenerationError("nothing to answer: the conversation is empty")
        model_id = ref.id if isinstance(ref, ModelSpec) else str(ref)
        async with self._gen_lock:
            entry = self._models.get(model_id)
            if entry is None:
                info = await self.load(ref, options)
                entry = self._models.get(info.id)
                if entry is None:
                    raise NotLoadedError(f"{info.name} was unloaded before it could answer")
            async with contextlib.aclosing(self._stream(entry, list(messages), params)) as s:
                async for item in s:
                    yield item

    async def _stream(
        self, entry: _Entry, messages: list[Message], params: GenParams
    ) -> AsyncIterator[str | GenerationMetrics]:
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        channel = Channel(loop, self.stream_buffer)
        times: dict[str, float] = {}
        backend = entry.backend
        put = channel.put

        def emit(text: str) -> None:
            # "" marks the first token when it has no text (yet): an end token, held-back text
            if "first" not in times:
                times["first"] = time.perf_counter()
            if text and not cancel.is_set():
                put(text)

        def work() -> BackendStats:
            try:
                return backend.generate(messages, params, emit, cancel)
            finally:
                times["end"] = time.perf_counter()
                channel.put_final(_DONE)

        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entry.generating = True
        entry.idle.clear()
        self._cancel_event = cancel
        self._active_backend = backend
        self._channel = channel
        started = time.perf_counter()
        future = loop.run_in_executor(self._executor, work)
        # the backend is free once the worker returns, even if the consumer never resumes
        future.add_done_callback(lambda _f: entry.idle.set())
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
            metrics = self._metrics(entry, stats, started, times)
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
            self._cancel_event = None
            self._active_backend = None
            self._channel = None
            entry.generating = False
            entry.idle.set()
            if self._models.get(entry.spec.id) is entry:
                self._touch(entry)

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

    def cancel(self) -> bool:
        """Stop the answer being generated (thread-safe). True if one was running."""
        event, backend = self._cancel_event, self._active_backend
        if event is None:
            return False
        event.set()
        if self._channel is not None:
            self._channel.abort()
        if backend is not None:
            with contextlib.suppress(Exception):
                backend.interrupt()
        return True

    # -- helpers -----------------------------------------------------------------------------

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._models and self._loop is not None and not self._loop.is_closed():
                log.debug("runtime service used from a second event loop")
            self._loop = loop
            self._load_lock = asyncio.Lock()
            self._gen_lock = asyncio.Lock()
            for entry in self._models.values():
                entry.idle = asyncio.Event()
                if not entry.generating:
                    entry.idle.set()
                entry.timer = None
                self._schedule_idle(entry)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


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
