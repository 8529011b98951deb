"""The management API (``/api``): models and what is loaded, downloads, resources.

JSON in, JSON out, documented at ``/docs``. Every id is checked as the CLI checks it before
anything is looked up; a delete goes through :func:`tui.inventory_ops.remove_model` (only the
files ModelDeck recorded, never a tree) and is refused while the model is loaded. Downloads
take what ``modeldeck pull`` takes and run in this process; their progress is followed as
JSON (``GET /api/downloads/{job}``) or as a stream of events (``…/events``, SSE).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from tui import __version__
from tui.download.progress import TERMINAL_STATES, DownloadEvent
from tui.download.sources import parse_source
from tui.errors import InvalidInputError, ModelDeckError
from tui.runtime.errors import ModelBusyError
from tui.runtime.types import LoadedModel, LoadOptions, ModelState
from tui.serve.context import ServeState, state_of
from tui.serve.errors import ApiError
from tui.serve.schemas import DownloadRequest, LoadRequest, UnloadRequest
from tui.serve.sse import DisconnectWatch, EventStream, event
from tui.serve.validate import check_job_id, check_model_id, parse_keep_alive

router = APIRouter(prefix="/api", tags=["Management"])
FOLLOW_POLL = 1.0  # seconds between looks at a job another process runs
ENDED = (*TERMINAL_STATES, "paused")


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=True, default=str).encode(),
                    status_code=status, media_type="application/json")


def _model_id(text: str) -> str:
    try:
        return check_model_id(text, "the model id")
    except InvalidInputError as exc:
        raise ApiError(400, str(exc), code="invalid_model") from None


async def _record(state: ServeState, model_id: str) -> Any:
    record = await asyncio.to_thread(state.services.inventory.get_model, model_id)
    if record is None:
        raise ApiError(404, f"no installed model {model_id!r}; see GET /api/models",
                       code="model_not_found")
    return record


@router.get("/health", summary="Liveness (no API key needed)")
async def health() -> Response:
    return _json({"service": "modeldeck", "version": __version__, "pid": os.getpid()})


# -- models -----------------------------------------------------------------------------------


def loaded_dict(m: LoadedModel, requests: int | None = None, tokens: int | None = None
                ) -> dict[str, Any]:
    """A loaded model as ``ps`` shows it."""
    return {
        "id": m.id, "name": m.name, "format": m.kind,
        "path": str(m.path) if m.path else None, "context_length": m.context_length,
        "gpu_layers": m.gpu_layers, "memory_bytes": m.memory_bytes, "fit": m.fit_label,
        "load_seconds": round(m.load_seconds, 3), "loaded_at": m.loaded_at,
        "slots": m.slots, "running": m.running, "queued": m.queued,
        "keep_alive_s": m.keep_alive_s,
        "unload_in_s": round(m.unload_in_s, 1) if m.unload_in_s is not None else None,
        "requests": requests, "tokens": tokens,
    }


def _loaded(state: ServeState) -> dict[str, dict[str, Any]]:
    runtime = state.runtime
    stats = {s.model_id: s for s in runtime.stats()}
    out = {}
    for m in runtime.loaded():
        s = stats.get(m.id)
        out[m.id] = loaded_dict(m, s.requests if s else None, s.tokens if s else None)
    return out


def _model_dict(record: Any, loaded: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": record.id, "name": record.name, "format": record.format,
        "status": record.status, "source": record.source, "path": record.path,
        "architecture": record.architecture, "quantization": record.quantization,
        "parameters": record.parameters, "context_length": record.context_length,
        "size_bytes": record.size_bytes, "installed_at": record.installed_at,
        "last_used_at": record.last_used_at, "loaded": loaded is not None,
        "metrics": {"tokens_per_s": record.tokens_per_s,
                    "prompt_tokens_per_s": record.prompt_tokens_per_s,
                    "ttft_ms": record.ttft_ms, "load_seconds": record.load_seconds},
        "runtime": loaded,
    }


@router.get("/models", summary="Installed models with their status, load state and metrics")
async def models(request: Request) -> Response:
    state = state_of(request)
    records = await asyncio.to_thread(state.services.inventory.list_models)
    loaded = _loaded(state)
    return _json({"models": [_model_dict(r, loaded.get(r.id)) for r in records]})


@router.get("/models/{model_id}", summary="One installed model")
async def model(model_id: str, request: Request) -> Response:
    state = state_of(request)
    record = await _record(state, _model_id(model_id))
    return _json(_model_dict(record, _loaded(state).get(record.id)))


@router.post("/models/{model_id}/load",
             summary="Load a model (context, GPU layers, slots, CPU threads, keep-alive)")
async def load(model_id: str, request: Request, body: LoadRequest | None = None) -> Response:
    state = state_of(request)
    body = body or LoadRequest()
    if isinstance(body.gpu_layers, int) and body.gpu_layers < 0:
        raise ApiError(400, "gpu_layers must be auto, all or 0 or more", param="gpu_layers")
    try:
        keep_alive = parse_keep_alive(body.keep_alive)
    except InvalidInputError as exc:
        raise ApiError(400, str(exc), param="keep_alive") from None
    record = await _record(state, _model_id(model_id))
    runtime = state.runtime
    chosen = body.model_fields_set & {"context_length", "gpu_layers", "parallel", "threads",
                                      "force"}
    options = LoadOptions(context_length=body.context_length, gpu_layers=body.gpu_layers,
                          parallel=body.parallel, threads=body.threads,
                          force=body.force) if chosen else None
    spec = await asyncio.to_thread(runtime.resolve, record.id)
    try:
        await runtime.load(spec, options)
    except ModelBusyError as exc:
        raise ApiError(409, str(exc), code="model_busy") from None
    if keep_alive is not None:
        runtime.set_keep_alive(record.id, keep_alive)
    info = _loaded(state).get(record.id)
    if info is None:
        raise ApiError(503, f"{record.name} was unloaded before it could be shown",
                       type="server_error", code="model_unloaded")
    return _json(info)


@router.post("/models/{model_id}/unload", summary="Unload a model (force stops its answers)")
async def unload(model_id: str, request: Request, body: UnloadRequest | None = None
                 ) -> Response:
    state = state_of(request)
    body = body or UnloadRequest()
    model_id = _model_id(model_id)
    try:
        done = await state.runtime.unload(model_id, "unloaded over the API", force=body.force)
    except ModelBusyError as exc:
        raise ApiError(409, str(exc), code="model_busy") from None
    return _json({"id": model_id, "unloaded": done})


@router.delete("/models/{model_id}", summary="Delete a model's recorded files and its record")
async def delete(model_id: str, request: Request) -> Response:
    from tui.inventory_ops import remove_model

    state = state_of(request)
    record = await _record(state, _model_id(model_id))
    runtime = state.runtime
    if runtime.is_loaded(record.id) or runtime.state(record.id) == ModelState.LOADING:
        raise ApiError(409, f"{record.id} is loaded; unload it first "
                       f"(POST /api/models/{record.id}/unload)", code="model_loaded")
    services = state.services
    plan = await asyncio.to_thread(remove_model, services.settings, services.inventory,
                                   record.id)
    return _json({
        "id": record.id, "freed_bytes": plan.freed_bytes, "forgot_only": plan.forget_only,
        "deleted": [str(f.path) for f in plan.to_delete],
        "refused": [{"path": str(f.path), "reason": f.note} for f in plan.refused],
    })


@router.get("/ps", summary="Loaded models: memory, slots, requests, keep-alive left")
async def ps(request: Request) -> Response:
    return _json({"models": list(_loaded(state_of(request)).values())})


@router.get("/catalog", summary="Catalog entries (ids to download)")
async def catalog(request: Request) -> Response:
    entries = await asyncio.to_thread(state_of(request).services.catalog.entries)
    return _json({"entries": [{
        "id": e.id, "name": e.name, "format": e.format, "repo": e.repo, "url": e.url,
        "parameters": e.parameters, "gated": e.gated, "tags": list(e.tags),
        "quants": [{"quant": q.quant, "size": q.size} for q in e.quants],
    } for e in entries]})


@router.get("/resources", summary="RAM, each GPU's VRAM, the models disk")
async def resources(request: Request) -> Response:
    sampler = state_of(request).services.sampler
    snapshot = await asyncio.to_thread(sampler.sample)
    return _json(dataclasses.asdict(snapshot))


# -- downloads --------------------------------------------------------------------------------


def _job_id(text: str) -> str:
    try:
        return check_job_id(text)
    except InvalidInputError as exc:
        raise ApiError(400, str(exc), code="invalid_job") from None


def _live(state: ServeState, job_id: str) -> dict[str, Any]:
    service = state.services.downloads
    job = service.get_job(job_id)  # NotFoundError (404) for an unknown id
    for live in service.live_jobs():
        if live.id == job.id:
            return live.to_dict()
    return job.to_dict()


def _run(state: ServeState, job_id: str) -> None:
    """Run a job in this process, in the background."""
    state.spawn(_run_quietly(state, job_id))


async def _run_quietly(state: ServeState, job_id: str) -> None:
    try:
        await state.services.downloads.run_until_complete([job_id])
    except ModelDeckError:  # run by another process: its state shows in the job
        pass


@router.get("/downloads", summary="Download jobs in their live state")
async def downloads(request: Request) -> Response:
    service = state_of(request).services.downloads
    return _json({"jobs": [j.to_dict() for j in service.live_jobs()]})


@router.post("/downloads", status_code=201,
             summary="Start a download: catalog id, owner/repo[:QUANT] or URL")
async def start_download(body: DownloadRequest, request: Request) -> Response:
    state = state_of(request)
    services = state.services
    catalog = services.catalog
    spec = parse_source(
        body.source, is_catalog_id=lambda text: catalog.get(text) is not None,
        files=body.files, include=body.include, exclude=body.exclude, quant=body.quant,
        revision=body.revision, sha256=body.sha256,
    )
    service = services.downloads
    wanted = spec.to_json()
    job_id = None
    for job in service.list_jobs():  # the same pull again resumes it, as `modeldeck pull`
        if job.state not in ("done", "cancelled") and job.spec.to_json() == wanted:
            if job.state in ("paused", "failed"):
                service.resume(job.id)
            job_id = job.id
            break
    if job_id is None:
        job_id = service.enqueue(spec)
    if not service.runs_here(job_id):
        _run(state, job_id)
    return _json(_live(state, job_id), 201)


@router.get("/downloads/{job_id}", summary="One job in its live state")
async def download(job_id: str, request: Request) -> Response:
    return _json(_live(state_of(request), _job_id(job_id)))


@router.post("/downloads/{job_id}/pause", summary="Pause (the partial is kept)")
async def pause(job_id: str, request: Request) -> Response:
    state = state_of(request)
    job = await state.services.downloads.pause(_job_id(job_id))
    return _json(_live(state, job.id))


@router.post("/downloads/{job_id}/cancel", summary="Cancel (the partial is deleted)")
async def cancel(job_id: str, request: Request) -> Response:
    state = state_of(request)
    job = await state.services.downloads.cancel(_job_id(job_id))
    return _json(_live(state, job.id))


@router.post("/downloads/{job_id}/resume", summary="Resume a paused or failed job")
async def resume(job_id: str, request: Request) -> Response:
    state = state_of(request)
    service = state.services.downloads
    job = service.resume(_job_id(job_id))
    if not service.runs_here(job.id):
        _run(state, job.id)
    return _json(_live(state, job.id))


@router.get("/downloads/{job_id}/events",
            summary="Progress events (SSE) until the job is done, failed, cancelled or paused")
async def download_events(job_id: str, request: Request) -> Response:
    state = state_of(request)
    first = _live(state, _job_id(job_id))
    return EventStream(_follow(state, first, request))


async def _follow(state: ServeState, first: dict[str, Any], request: Request
                  ) -> AsyncIterator[bytes]:
    """The job's events as they come (or, for a job another process runs, its recorded
    state each second), then ``event: end``."""
    service = state.services.downloads
    job_id = first["id"]
    queue: asyncio.Queue[DownloadEvent | None] = asyncio.Queue()
    unsubscribe = service.subscribe(
        lambda e: queue.put_nowait(e) if e.job_id == job_id else None)
    watch = DisconnectWatch(request.receive, lambda: queue.put_nowait(None))
    try:
        yield event(_snapshot(first))
        last = (first["state"], first["done_bytes"])
        ended = first["state"] in ENDED and not service.runs_here(job_id)
        while not ended:
            try:
                item = await asyncio.wait_for(queue.get(), FOLLOW_POLL)
            except TimeoutError:
                if service.runs_here(job_id):
                    yield b": alive\n\n"
                    continue
                now = _live(state, job_id)
                if (now["state"], now["done_bytes"]) == last:
                    yield b": alive\n\n"
                    continue
                data = _snapshot(now)
            else:
                if item is None:  # the client went away
                    return
                data = item.to_dict()
            last = (data["state"], data["done_bytes"])
            yield event(data)
            ended = data["state"] in ENDED
        yield b"event: end\ndata: " + json.dumps(_live(state, job_id)).encode() + b"\n\n"
    finally:
        unsubscribe()
        watch.close()


def _snapshot(job: dict[str, Any]) -> dict[str, Any]:
    """A job dict shaped like a progress event."""
    return {"job_id": job["id"], "name": job["name"], "state": job["state"],
            "done_bytes": job["done_bytes"], "total_bytes": job["total_bytes"],
            "speed": 0.0, "eta": None, "error": job["error"], "timestamp": time.time(),
            "files": job.get("files", [])}
