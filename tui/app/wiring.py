"""Adapters between the App and the services. No Textual here.

The App calls these from workers (thread workers for blocking calls such as SQLite, the Hub
client and file registration; async workers for the runtime and the download service, which
are asyncio-native); they return plain views (:mod:`tui.app.views`) or call the ``emit``
callbacks they are given (the App turns those into messages). Errors are the services'
one-line :class:`~tui.errors.ModelDeckError` subclasses; :class:`NotWired` remains for a
download package that cannot be imported.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tui.app.views import JobView, ModelRow, build_rows

if TYPE_CHECKING:
    from tui.download.jobs import JobRecord
    from tui.download.progress import DownloadEvent
    from tui.services import Services


class NotWired(NotImplementedError):
    """The service behind this adapter is not connected yet."""


# -- inventory and catalog (done) -----------------------------------------------------------


def load_rows(services: Services) -> list[ModelRow]:
    """All table rows: catalog entries merged with installed/discovered models, each marked
    when the last update check saw a newer commit on the Hub (blocking)."""
    from tui.store.history import HistoryStore

    rows = build_rows(services.catalog.entries(), services.inventory.list_models())
    outdated = HistoryStore(services.db).outdated()
    for row in rows:
        row.update = row.model_id in outdated
    return rows


def remote_rows(services: Services) -> list[ModelRow]:
    """Rows of the registered remote engines' models (``<remote>/<id>``, status ``remote``);
    blocking network, a few seconds at most. Unreachable remotes give none."""
    from tui.remote.models import remote_listing

    rows, _warnings = remote_listing(services.settings.state_dir, cached=True)
    return [ModelRow(key=f"remote:{model_id}", name=model_id, status="remote",
                     format="remote", model_id=model_id) for model_id, _remote in rows]


def check_updates(services: Services) -> set[str]:
    """Ask the Hub about every Hub model (blocking, network) and remember the answers (which
    :func:`load_rows` marks); returns the ids of the models the Hub has newer commits of."""
    from tui.hub.client import HubClient
    from tui.updates import check_updates as check

    built = services.__dict__.get("downloads")
    hub = getattr(built, "hub", None) or HubClient()
    checks = check(services.settings, services.inventory, hub, services.catalog)
    return {c.model.id for c in checks if c.outdated}


def plan_delete(services: Services, model_id: str) -> tuple[int, bool, list[str]]:
    """``(bytes freed, forget_only, lines)`` of deleting a model, without deleting (blocking).

    ``lines`` are the plan's :func:`tui.inventory_ops.describe` lines, the list ``modeldeck
    rm`` prints: each file with its size, folders, cache entries and refused paths.
    """
    from tui.inventory_ops import describe, plan_removal

    plan = plan_removal(services.settings, services.inventory, model_id)
    return plan.freed_bytes, plan.forget_only, describe(plan)


def delete_model(services: Services, model_id: str) -> tuple[int, list[str]]:
    """Delete an installed model's files and inventory record.

    Returns the bytes really freed and one line per recorded path left alone (and why).
    Blocking: call from a thread worker.
    """
    from tui.inventory_ops import refusal, remove_model

    plan = remove_model(services.settings, services.inventory, model_id)
    return plan.freed_bytes, [refusal(f) for f in plan.refused]


def add_local(services: Services, path: str, name: str | None = None) -> str:
    """Register a model already on disk (a .gguf file or a model folder); returns the entry id.

    Same steps as ``modeldeck add --path``: read the metadata first (fails before anything is
    written), add the catalog entry, then the inventory record. Blocking.
    """
    from pathlib import Path

    from tui.errors import InvalidInputError, NotFoundError
    from tui.registration import build_record, group_model_files, read_metadata
    from tui.store import ModelFile

    p = Path(path).expanduser()
    if not p.exists():
        raise NotFoundError(f"no such file or folder: {p}")
    candidates = [p] if p.is_file() else [*p.glob("*.gguf"), *p.glob("*.safetensors")]
    groups = group_model_files(candidates)
    if not groups:
        raise InvalidInputError(f"{p} is neither a .gguf file nor a model folder")
    form, main, members = groups[0]
    meta = read_metadata(form, main, members if form == "gguf" else None)
    entry = services.catalog.add_local(p, name=name)
    files = [
        ModelFile(str(m.resolve()), m.stat().st_size, None, m.stat().st_mtime_ns) for m in members
    ]
    existing = services.inventory.find_by_path(str(main.resolve()))
    record = build_record(
        model_id=existing.id if existing else entry.id, fmt=form, path=main.resolve(),
        files=files, metadata=meta, source="local", source_ref=str(main.resolve()),
        catalog_id=entry.id, name=name,
    )
    services.inventory.upsert_model(record)
    return entry.id


def add_hf_files(services: Services, repo: str, picks: list[tuple[str, str | None]]) -> list[str]:
    """One catalog entry per picked ``(path, quant)`` of a Hub repo; returns the entry ids."""
    ids = []
    for path, quant in picks:
        entry = services.catalog.add_hf(repo, files=[path], quant=quant)
        ids.append(entry.id)
    return ids


def add_url(services: Services, url: str, sha256: str | None) -> str:
    """A catalog entry for a direct URL (optional sha256); returns the entry id."""
    sha = (sha256 or "").strip().lower() or None
    if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
        from tui.errors import InvalidInputError

        raise InvalidInputError("sha256 must be 64 hex digits")
    return services.catalog.add_url(url.strip(), sha256=sha).id


def list_repo(repo: str) -> Any:
    """The Hub listing of ``repo`` (blocking; ``HF_ENDPOINT`` decides the server)."""
    from tui.hub.client import HubClient, validate_repo_id

    return HubClient().list_repo(validate_repo_id(repo.strip()))


def search_hub(query: str, limit: int = 30) -> list[Any]:
    """GGUF repos on the Hub matching ``query`` (blocking)."""
    from tui.hub.client import HubClient

    return HubClient().search_gguf(query.strip() or None, limit)


# -- downloads ---------------------------------------------------------------------------------


def _downloads(services: Services) -> Any:
    """``services.downloads``; :class:`NotWired` while the download package is missing."""
    try:
        return services.downloads
    except ImportError as exc:
        raise NotWired(f"download service unavailable: {exc}") from exc


def job_view_from(event: DownloadEvent, row_key: str | None = None) -> JobView:
    """The panel's view of one service event (``row_key``: the table row the job feeds)."""
    return JobView(
        job_id=event.job_id, name=event.name, state=event.state, done_bytes=event.done_bytes,
        total_bytes=event.total_bytes, speed_bps=event.speed, eta_s=event.eta,
        error=event.error, row_key=row_key, warning=event.warning,
        retry=_retry_text(event.attempt, event.detail), wait_for=event.wait_for,
        wait_s=event.wait_s, updated_at=event.timestamp,
    )


def job_view_from_record(job: JobRecord) -> JobView:
    """The panel's view of a job as persisted (before the service sends events about it)."""
    return JobView(
        job_id=job.id, name=job.name, state=job.state, done_bytes=job.done_bytes,
        total_bytes=job.total_bytes, error=job.error, row_key=_row_key(job.spec.catalog_id),
        updated_at=job.updated_at or None,
    )


def _row_key(catalog_id: str | None) -> str | None:
    return f"entry:{catalog_id}" if catalog_id else None


def _retry_text(attempt: int | None, detail: str | None) -> str | None:
    """``try 3, connection refused`` while a job's requests keep failing."""
    if attempt is None:
        return None
    return f"try {attempt}, {detail}" if detail else f"try {attempt}"


def _row_key_of(downloads: Any, job_id: str) -> str | None:
    """The table row of a job the listing did not have (one SQLite read: call in a thread)."""
    try:
        return _row_key(downloads.get_job(job_id).spec.catalog_id)
    except Exception:  # an unknown or deleted job: no table row to mirror
        return None


async def follow_downloads(
    services: Services, emit: Callable[[JobView], None], *, event_rate: float | None = None
) -> None:
    """Show every job, run the download queue, and ``emit`` a view of each progress event,
    until cancelled. ``event_rate`` sets the service's progress events per second per job
    (its ``EventThrottle``, the one rate limit). SQLite is read in threads, never on the loop.
    The App owns the service's stop: it calls :func:`stop_downloads` when it exits
    (unfinished jobs stay queued and resume at the next start).
    """
    # The first use imports the download stack (httpx, huggingface_hub): keep it off the loop.
    downloads = await asyncio.to_thread(_downloads, services)
    if event_rate is not None:
        downloads.event_rate = event_rate
    events: asyncio.Queue[DownloadEvent] = asyncio.Queue()
    unsubscribe = downloads.subscribe(events.put_nowait)  # before the listing: nothing missed
    try:
        row_keys: dict[str, str | None] = {}
        for job in await asyncio.to_thread(downloads.list_jobs):
            view = job_view_from_record(job)
            row_keys[job.id] = view.row_key
            emit(view)
        await downloads.start()
        while True:
            event = await events.get()
            if event.job_id not in row_keys:
                row_keys[event.job_id] = await asyncio.to_thread(
                    _row_key_of, downloads, event.job_id)
            emit(job_view_from(event, row_keys[event.job_id]))
    finally:
        unsubscribe()


def job_record(services: Services, job_id: str) -> JobRecord | None:
    """A job as persisted, with its spec and files (blocking); None if it is gone."""
    from tui.download.jobs import JobStore

    return JobStore(services.db).get(job_id)


def clear_finished(services: Services) -> list[str]:
    """Forget the finished jobs (done, cancelled: nothing of theirs is on disk but installed
    models, which stay); the ids cleared. ``modeldeck jobs clear --done --cancelled``."""
    from tui.maintenance import clear_jobs

    cleared, _freed = clear_jobs(_downloads(services), ("done", "cancelled"))
    return [job.id for job in cleared]


# -- the live picture: other processes' changes, and the folders --------------------------


class ForeignJobs:
    """Job rows other processes persisted, as :class:`JobView` with a speed and ETA measured
    from successive rows (the process running a job saves its progress about twice a second).
    """

    def __init__(self) -> None:
        from tui.download.progress import SpeedMeter

        self._meter = SpeedMeter
        self._meters: dict[str, Any] = {}

    def view(self, job: Any) -> JobView:
        """The view of a :class:`~tui.store.changes.JobSnapshot`."""
        meter = self._meters.get(job.id)
        if meter is None:
            meter = self._meters[job.id] = self._meter()
        speed = meter.update(job.done_bytes, job.updated_at) if job.updated_at else 0.0
        running = job.state == "downloading"
        eta = None
        if running and job.total_bytes is not None and speed > 1:
            eta = max(0.0, (job.total_bytes - job.done_bytes) / speed)
        if job.state not in ("downloading", "stalled", "connecting"):
            self._meters.pop(job.id, None)
        return JobView(
            job_id=job.id, name=job.name, state=job.state, done_bytes=job.done_bytes,
            total_bytes=job.total_bytes, speed_bps=speed if running else None, eta_s=eta,
            error=job.error, row_key=_row_key(job.catalog_id), updated_at=job.updated_at or None,
        )

    def forget(self, job_id: str) -> None:
        """Drop a removed job's meter."""
        self._meters.pop(job_id, None)


def prime_changes(services: Services) -> None:
    """Read the change feed's baseline (blocking): call just before reading what is shown."""
    if not services.changes.primed:
        services.changes.prime()


def follow_changes(
    services: Services,
    *,
    emit_job: Callable[[JobView], None],
    drop_job: Callable[[str], None],
    models_changed: Callable[[], None],
    failed: Callable[[str], None],
) -> None:
    """Follow what other processes change in the inventory (a thread of its own; the
    callbacks run there): jobs they run (``emit_job``; jobs this process runs send their own
    events), jobs removed (``drop_job``), installed models or custom entries
    (``models_changed``), and a broken or deleted inventory (``failed``, once)."""
    foreign = ForeignJobs()

    def on_change(changes: Any) -> None:
        runs_here = getattr(services.__dict__.get("downloads"), "runs_here", None)
        for job in changes.jobs:
            if runs_here is None or not runs_here(job.id):
                emit_job(foreign.view(job))
        for job_id in changes.removed_jobs:
            foreign.forget(job_id)
            drop_job(job_id)
        if changes.models or changes.catalog:
            models_changed()

    services.changes.start(on_change, failed)


def watch_folders(services: Services, problems: Callable[[list[str]], None]) -> None:
    """Start discovery: finish what a crash cut short (an ``organize`` move, a delete: as
    every CLI command does), one incremental scan, then follow the managed folders (a thread
    of its own). What it registers or marks missing reaches the table through the change
    feed; ``problems`` gets one line per file that changed and could not be registered, and
    one per move or delete finished at start."""
    from tui.inventory_ops import reconcile
    from tui.terminal_text import clean_line

    report = reconcile(services.settings, services.inventory)
    if report.finished_moves or report.refused:
        problems([clean_line(line, 300) for line in [*report.finished_moves, *report.refused]])

    def on_scan(report: Any, changed: list[str]) -> None:
        wanted = set(changed)
        lines = [clean_line(error if path in error else f"{path}: {error}", 300)
                 for path, error in report.errors if path in wanted]
        if lines:
            problems(lines)

    watcher = services.folder_watcher
    watcher.on_scan = on_scan
    watcher.start()


def stop_live(services: Services) -> None:
    """Stop the change feed and discovery threads, if started (blocking, briefly)."""
    for name in ("folder_watcher", "changes"):
        if name in services.__dict__:
            services.__dict__[name].stop()


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


# -- runtime -------------------------------------------------------------------------------

FIT_SHORT = {"gpu": "gpu", "partial": "part", "cpu": "cpu", "wont_fit": "no"}


def runtime_built(services: Services) -> bool:
    """Whether ``services.runtime`` was created (nothing to stop otherwise)."""
    return "runtime" in services.__dict__


async def load_model(
    services: Services, model_id: str, force: bool = False, options: Any = None
) -> str:
    """Load an installed model; returns its display name.

    ``options`` is a :class:`~tui.runtime.types.LoadOptions` (None: the runtime's defaults).
    Raises the runtime's errors (``WontFitError`` unless ``force``, ``LoadError`` …).
    """
    import dataclasses

    from tui.runtime.types import LoadOptions

    if force:
        options = dataclasses.replace(options or LoadOptions(), force=True)
    info = await services.runtime.load(model_id, options)
    return info.name


async def unload_model(services: Services, model_id: str, force: bool = False) -> bool:
    """Unload a model; False when it was not loaded. A model answering other clients raises
    ``ModelBusyError`` unless ``force`` (their answers are stopped, saying why)."""
    if not runtime_built(services):
        return False
    return await services.runtime.unload(model_id, "requested", force=force)


def busy_models(services: Services) -> list[str]:
    """Loaded models with answers running or queued (stopping or not)."""
    if not runtime_built(services):
        return []
    return [s.model_id for s in services.runtime.stats() if s.running or s.queued]


async def settle(services: Services, model_id: str, timeout: float = 3.0) -> None:
    """Wait (at most ``timeout`` s) until ``model_id`` answers nothing: the console's answer
    was just cancelled and its thread is stopping (a load right after must not take it for
    another client's). Still busy after that: others are answering."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while model_id in busy_models(services) and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def unload_busy(services: Services) -> None:
    """Unload every model answering requests, stopping those answers (the user said so)."""
    for model_id in busy_models(services):
        await unload_model(services, model_id, force=True)


def subscribe_runtime(services: Services, callback: Callable[[Any], None]) -> Callable[[], None]:
    """Follow the runtime's lifecycle events (loading/loaded/unloading/unloaded/failed)."""
    return services.runtime.subscribe(callback)


async def close_runtime(services: Services) -> None:
    """Unload everything and stop the runtime threads, if the runtime was built."""
    if runtime_built(services):
        await services.runtime.aclose()


async def start_server(services: Services) -> Any:
    """Start the API server (``modeldeck serve``) in the running loop over ``services``, on
    the settings' host, port and API key; returns its
    :class:`~tui.serve.server.ServerHandle`. The serving stack is imported in a thread (the
    loop keeps drawing). Raises InvalidInputError (one line) when another ``modeldeck
    serve`` runs for this state dir, the key is missing or unreadable, or the address
    cannot be bound."""
    import importlib

    from tui.errors import InvalidInputError
    from tui.serve.state import read_state

    other = await asyncio.to_thread(read_state, services.settings.state_dir)
    if other is not None:
        raise InvalidInputError(
            f"modeldeck serve already runs for this state dir at {other.url} (pid {other.pid})",
            hint="use that server, or stop it first")
    await asyncio.to_thread(lambda: services.runtime)  # its first use imports it
    server = await asyncio.to_thread(importlib.import_module, "tui.serve.server")
    return await server.start_server(services)


async def fit_for(services: Services, rows: list[ModelRow]) -> list[ModelRow]:
    """Rows with their ``fit`` column filled (``gpu``/``part``/``cpu``/``no``).

    Installed models go through ``runtime.fit`` (reads the file's header); catalog rows use
    :func:`~tui.runtime.fit.estimate_from_catalog`. Rows whose fit cannot be told are left out.
    """
    import dataclasses

    from tui.errors import ModelDeckError
    from tui.runtime.fit import check_fit, estimate_from_catalog

    runtime = await asyncio.to_thread(lambda: services.runtime)  # its first use imports it
    snapshot = await asyncio.to_thread(runtime.memory_probe)
    verdicts: dict[str, str] = {}

    # The slots a load would give the model (as ``runtime.fit`` counts for installed rows).
    slots = services.settings.parallel_requests

    def catalog_verdicts() -> None:  # pure arithmetic, but 10,000 rows: not on the loop
        for row in rows:
            if not row.installed and row.parameters:
                estimate = estimate_from_catalog(
                    row.parameters, quantization=row.quant, weights_bytes=row.size_bytes,
                    parallel=slots if row.format == "gguf" else 1,
                )
                verdicts[row.key] = check_fit(estimate, snapshot).verdict

    await asyncio.to_thread(catalog_verdicts)
    for row in rows:
        if row.installed and row.model_id is not None:
            try:
                verdicts[row.key] = (await runtime.fit(row.model_id)).verdict
            except (ModelDeckError, OSError) as exc:
                log_debug(f"fit of {row.key}: {exc}")
    out: list[ModelRow] = []
    for row in rows:
        short = FIT_SHORT.get(verdicts.get(row.key, ""), "")
        if short != row.fit:
            out.append(dataclasses.replace(row, fit=short))
    return out


def log_debug(text: str) -> None:
    """Debug log (fit failures are expected for rows whose files are gone)."""
    import logging

    logging.getLogger("tui.app").debug(text)
