"""Adapters between the App and the services. No Textual here.

The App calls these from workers (thread workers for blocking calls, async workers for the
watch/generate loops); they return plain views (:mod:`tui.app.views`) or call the ``emit``
callbacks they are given (the App turns those into messages). Functions marked
``LEAD: TODO`` raise :class:`NotWired` until the runtime API settles; the download adapters are
drafted against today's ``tui.download.service`` and raise :class:`NotWired` when it is not
importable. The App shows a quiet notification instead of failing.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tui.app.views import JobView, MetricsView, ModelRow, build_rows

if TYPE_CHECKING:
    from tui.services import Services


class NotWired(NotImplementedError):
    """The service behind this adapter is not connected yet."""


# -- inventory and catalog (done) -----------------------------------------------------------


def load_rows(services: Services) -> list[ModelRow]:
    """All table rows: catalog entries merged with installed/discovered models (blocking)."""
    return build_rows(services.catalog.entries(), services.inventory.list_models())


def delete_model(services: Services, model_id: str) -> int:
    """Delete an installed model's files and inventory record; returns the bytes freed.

    Blocking: call from a thread worker. Goes through the lead's
    ``tui.inventory_ops.remove_model(services, model_id)``.
    """
    record = services.inventory.get_model(model_id)
    expected = record.size_bytes if record is not None else 0
    try:
        from tui.inventory_ops import remove_model
    except ImportError as exc:
        raise NotWired("tui.inventory_ops.remove_model is not available yet") from exc
    result: Any = remove_model(services, model_id)
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    freed = getattr(result, "freed_bytes", None)
    return int(freed) if isinstance(freed, int) else expected


# -- downloads (drafted against tui.download.service as of today; LEAD: confirm) --------------


def _downloads(services: Services) -> Any:
    """``services.downloads``; :class:`NotWired` while the download package is missing."""
    try:
        return services.downloads
    except ImportError as exc:
        raise NotWired(f"download service unavailable: {exc}") from exc


def job_view_from(job: Any, row_key: str | None = None) -> JobView:
    """A :class:`JobView` from a ``DownloadEvent`` or a ``JobRecord`` (duck-typed)."""

    def pick(*names: str, default: Any = None) -> Any:
        for name in names:
            value = getattr(job, name, None)
            if value is not None:
                return value
        return default

    if row_key is None:
        spec = getattr(job, "spec", None)
        catalog_id = getattr(spec, "catalog_id", None) or pick("catalog_id", "entry_id")
        row_key = f"entry:{catalog_id}" if catalog_id else None
    return JobView(
        job_id=str(pick("job_id", "id")),
        name=str(pick("name", default="download")),
        state=str(pick("state", default="queued")),
        done_bytes=int(pick("done_bytes", default=0)),
        total_bytes=pick("total_bytes"),
        speed_bps=pick("speed", "speed_bps"),
        eta_s=pick("eta", "eta_s"),
        error=pick("error"),
        row_key=row_key,
    )


async def watch_downloads(services: Services, emit: Callable[[JobView], None]) -> None:
    """Show every job, run the download queue, and ``emit`` each progress event until
    cancelled. The App calls :func:`stop_downloads` when it exits.

    LEAD: confirm that the TUI should own ``DownloadService.start()/stop()`` (it does here).
    """
    # The first use imports the download stack (httpx, huggingface_hub): keep it off the loop.
    downloads = await asyncio.to_thread(_downloads, services)
    row_keys: dict[str, str | None] = {}

    def row_key_of(job_id: str) -> str | None:
        if job_id not in row_keys:
            try:
                spec = downloads.get_job(job_id).spec
            except Exception:  # an unknown or deleted job: no table row to mirror
                spec = None
            catalog_id = getattr(spec, "catalog_id", None)
            row_keys[job_id] = f"entry:{catalog_id}" if catalog_id else None
        return row_keys[job_id]

    for job in downloads.list_jobs():
        if job.state != "cancelled":
            view = job_view_from(job)
            row_keys[view.job_id] = view.row_key
            emit(view)
    unsubscribe = downloads.subscribe(
        lambda event: emit(job_view_from(event, row_key_of(event.job_id)))
    )
    try:
        await downloads.start()
        await asyncio.Event().wait()  # until the worker is cancelled
    finally:
        unsubscribe()


async def stop_downloads(services: Services) -> None:
    """Stop the download queue if it was started (running jobs resume at the next start)."""
    if "downloads" in services.__dict__:
        await services.downloads.stop()


def start_download(services: Services, entry_id: str, quant: str | None) -> str:
    """Queue a download of a catalog entry (a quant for GGUF entries); returns the job id.

    Call on the event loop (the service wakes its scheduler with an ``asyncio.Event``).
    """
    downloads = _downloads(services)
    from tui.download.sources import JobSpec

    return str(downloads.enqueue(JobSpec(kind="catalog", catalog_id=entry_id, quant=quant)))


async def download_action(services: Services, job_id: str, action: str) -> None:
    """``pause``/``resume``/``cancel``/``retry`` one job (pause/cancel are coroutines)."""
    if action not in ("pause", "resume", "cancel", "retry"):
        raise ValueError(f"unknown download action {action!r}")
    result = getattr(_downloads(services), action)(job_id)
    if inspect.isawaitable(result):
        await result


# -- runtime (LEAD: TODO) -------------------------------------------------------------------


def load_model(services: Services, model_id: str) -> str:
    """Load an installed model for the console; returns its display name. Blocking.

    LEAD: TODO — ``services.runtime.load(model_id)`` and ``inventory.touch_last_used``.
    """
    raise NotWired("runtime not wired yet")


async def generate(
    services: Services,
    model_id: str | None,
    prompt: str,
    system_prompt: str,
    emit: Callable[[str], None],
) -> MetricsView:
    """Stream an answer: ``emit(text)`` per chunk; returns the metrics when done.

    Cancelled by cancelling the calling worker (``asyncio.CancelledError``); LEAD: TODO —
    iterate ``services.runtime.generate(...)`` and measure TTFT and tok/s, e.g.::

        start = time.perf_counter(); first = None; n = 0
        async for chunk in services.runtime.stream(model_id, prompt, system=system_prompt):
            first = first or time.perf_counter(); n += chunk.tokens; emit(chunk.text)
    """
    raise NotWired("runtime not wired yet")


def cancel_generation(services: Services) -> None:
    """Stop a generation running in a runtime thread (after the worker was cancelled).

    LEAD: TODO — ``services.runtime.cancel()``; a no-op until then.
    """


def fit_for(services: Services, rows: list[ModelRow]) -> list[ModelRow]:
    """Rows whose ``fit`` column the runtime can fill (``full``/``part``/``no``).

    LEAD: TODO — ask the runtime's estimator; returns no rows until then.
    """
    return []
