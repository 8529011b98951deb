"""The download service: a persistent job queue over the segmented engine.

Plain asyncio (no Textual). Typical use::

    service = DownloadService(settings, db, inventory, catalog)
    await service.start()                  # restore jobs left queued/downloading, run queue
    job_id = service.enqueue(JobSpec(kind="hf", repo="owner/name", quant="Q4_K_M"))
    unsubscribe = service.subscribe(lambda event: ...)   # DownloadEvent callbacks
    await service.run_until_complete([job_id])
    await service.stop()

Every job is persisted (spec, plan, validators, segment offsets) so a crash, ``kill -9`` or
pause resumes from the bytes on disk: a Hub file pinned to a commit with the sha256 the Hub
confirms always does; anything else only under ``If-Range`` with a strong validator.

Each file is resolved once (:mod:`tui.download.resolve`) and the answer, a signed CDN URL for
a Hub LFS file, serves all its pieces; :class:`ResolveCache` keeps it (in memory only: it is a
credential) until it nears expiry or the CDN refuses it. A ``429`` from the resolver is waited
out (``RateLimit``'s ``t=`` or ``Retry-After``), shared by every file of that origin, with the
job in the ``waiting`` state ("waiting for the Hub's rate limit, 42s"); retries give up only
after ``give_up_after`` minutes without progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from tui import formatting as fmt
from tui.download import engine, rawfetch
from tui.download.aio import in_thread
from tui.download.engine import (
    FileTransfer,
    TransferContext,
    give_up_error,
    untrusted,
    wait_reason,
)
from tui.download.errors import (
    ChecksumMismatchError,
    DownloadError,
    RemoteNotFoundError,
    failure_reason,
    gated_message,
    redact,
)
from tui.download.http import (
    HttpStatusError,
    RetryPolicy,
    Transport,
    make_client,
    origin,
    strip_query,
)
from tui.download.jobs import JobFile, JobRecord, JobStore
from tui.download.partials import remove_partial
from tui.download.planner import (
    STAGE_DIR,
    Claim,
    Plan,
    file_source,
    installed_match,
    place_files,
    plan_civitai,
    plan_hub,
    plan_url,
    resolve_catalog,
    stage_update,
    update_target,
)
from tui.download.preflight import DestLock, check_free_space, network_fs_warning
from tui.download.progress import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    DownloadEvent,
    EventThrottle,
    FileProgress,
    SpeedMeter,
)
from tui.download.ratelimit import TokenBucket
from tui.download.resolve import ResolveCache, Resolved, resolve
from tui.download.sources import JobSpec
from tui.download.verify import fsync_dir, git_blob_sha1_file, sha256_file
from tui.errors import InvalidInputError, ModelDeckError, StoreError
from tui.hub.client import HubClient, hub_endpoint
from tui.settings import Settings
from tui.store.db import Database
from tui.store.inventory import Inventory

log = logging.getLogger(__name__)

Subscriber = Callable[[DownloadEvent], None]
SMALL_FILE = 2 * engine.MIN_SEGMENT


class _Stop(Exception):
    """Internal: why a runner was cancelled."""


class _Runtime:
    """In-memory state of one running job: counters, speed, throttle."""

    def __init__(self, job: JobRecord, event_rate: float = 10.0) -> None:
        self.job = job
        self.state = "queued"
        self.error: str | None = None
        self.wait: tuple[str, int] | None = None  # a "waiting" job: (what for, seconds left)
        self.warning: str | None = None
        self.meter = SpeedMeter()
        self.throttle = EventThrottle(event_rate)
        self.stop_reason: str | None = None  # paused | cancelled | queued (shutdown) | failed
        self.attempt: int | None = None  # the try under way while requests keep failing
        self.detail: str | None = None  # why the last try failed
        self.note: str | None = None  # what a job that downloaded nothing did
        self.persisted: tuple[str, int] | None = None  # (state, done bytes) last flushed
        self.store_error: StoreError | None = None  # the inventory broke or vanished mid-run
        self.task: asyncio.Task[None] | None = None

    @property
    def done(self) -> int:
        return sum(f.done_bytes for f in self.job.files)

    @property
    def total(self) -> int | None:
        files = self.job.files
        if not files or any(f.size is None for f in files):
            return None
        return sum(f.size or 0 for f in files)


class DownloadService:
    """Jobs, queue, verification and registration of downloads."""

    # Seconds between persisting state, progress and segment offsets (only when they changed):
    # what a kill -9 can lose, and how soon another process sees progress.
    flush_interval = 0.5
    # Progress events per second of a job while its state stays the same (a change of state
    # always goes out at once): the one rate limit between the engine and what shows progress
    # (the dashboard lowers it). Read when a job starts running.
    event_rate = 10.0

    def __init__(
        self, settings: Settings, db: Database, inventory: Inventory, catalog: Any = None
    ) -> None:
        self.settings = settings
        self.db = db
        self.inventory = inventory
        self.catalog = catalog
        self.jobs = JobStore(db)
        self.hub = HubClient()
        self.policy = RetryPolicy(give_up_after=settings.give_up_after * 60)
        self.resolved = ResolveCache(clock=lambda: self.policy.clock())
        self._resolve_locks: dict[str, asyncio.Lock] = {}
        self._holds: dict[tuple[str, str, int | None], float] = {}  # origin -> rate-limited until
        self.bucket = TokenBucket(settings.bandwidth_limit)
        self._client: Any = None
        self._transport: Transport | None = None
        self._subscribers: list[Subscriber] = []
        self._runtimes: dict[str, _Runtime] = {}
        self._queue: list[str] = []
        self._scheduler: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._changed: asyncio.Condition | None = None
        self._sha: dict[str, str] = {}  # dest -> sha256 computed while downloading
        self._verified: dict[str, str] = {}  # dest -> how it was verified (see ModelFile)
        self._background: set[asyncio.Future[None]] = set()
        self._elsewhere: dict[str, DownloadError] = {}  # job id -> "running in pid N"
        self._notes: dict[str, str] = {}  # job id -> what it did instead of downloading

    # -- subscriptions --------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every progress event; returns an unsubscribe function."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    async def events(self, job_id: str | None = None) -> AsyncIterator[DownloadEvent]:
        """Async iterator of events (of one job, or all); ends when the consumer stops."""
        queue: asyncio.Queue[DownloadEvent] = asyncio.Queue()

        def put(event: DownloadEvent) -> None:
            if job_id is None or event.job_id == job_id:
                queue.put_nowait(event)

        unsubscribe = self.subscribe(put)
        try:
            while True:
                yield await queue.get()
        finally:
            unsubscribe()

    def _emit(self, rt: _Runtime, *, force: bool = False) -> None:
        now = time.monotonic()
        if not (force or rt.throttle.allow(rt.state, now)):
            return
        if force:
            rt.throttle.allow(rt.state, now)
        done, total = rt.done, rt.total
        speed = rt.meter.update(done, now)
        eta = (total - done) / speed if total is not None and speed > 1 else None
        event = DownloadEvent(
            job_id=rt.job.id, name=rt.job.name, state=rt.state, done_bytes=done,
            total_bytes=total, speed=speed, eta=eta, error=rt.error, warning=rt.warning,
            detail=_wait_text(rt.wait) or rt.detail, wait_for=rt.wait[0] if rt.wait else None,
            wait_s=rt.wait[1] if rt.wait else None,
            files=tuple(FileProgress(f.path, f.done_bytes, f.size, f.state)
                        for f in rt.job.files),
            attempt=rt.attempt, note=rt.note,
        )
        self._publish(event)

    def _publish(self, event: DownloadEvent) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("download event subscriber failed")

    def _set_state(self, rt: _Runtime, state: str, error: str | None = None,
                   wait: tuple[str, int] | None = None) -> None:
        changed = state != rt.state or error != rt.error or wait != rt.wait
        rt.state, rt.error, rt.wait = state, error, wait
        if changed:
            self._emit(rt, force=True)

    def _event_for(self, job: JobRecord) -> DownloadEvent:
        return DownloadEvent(
            job_id=job.id, name=job.name, state=job.state, done_bytes=job.done_bytes,
            total_bytes=job.total_bytes, speed=0.0, eta=None, error=job.error,
            files=tuple(FileProgress(f.path, f.done_bytes, f.size, f.state) for f in job.files),
        )

    # -- queue ----------------------------------------------------------------------------

    def enqueue(self, spec: JobSpec) -> str:
        """Persist a new queued job and return its id (it runs once the service runs)."""
        if (
            spec.kind == "catalog"
            and self.catalog is not None
            and self.catalog.get(spec.catalog_id) is None
        ):
            raise InvalidInputError(f"no catalog entry {spec.catalog_id!r}")
        job = self.jobs.create(spec)
        self._queue_job(job.id)
        self._publish(self._event_for(job))
        return job.id

    def _queue_job(self, job_id: str) -> None:
        if job_id not in self._queue and job_id not in self._runtimes:
            self._queue.append(job_id)
        if self._wake is not None:
            self._wake.set()

    def list_jobs(self) -> list[JobRecord]:
        """Every job, oldest first (state as persisted; running ones are flushed each second)."""
        return self.jobs.list()

    def get_job(self, job_id: str) -> JobRecord:
        """One job (unique id prefixes accepted); :class:`NotFoundError` if unknown."""
        return self.jobs.require(job_id)

    async def start(self) -> None:
        """Reconcile and restore jobs left queued/downloading, then run the queue."""
        for job in self.jobs.list(ACTIVE_STATES):
            if self._held_elsewhere(job.id):
                continue
            self._queue_job(job.id)
        self._ensure_scheduler()

    async def stop(self) -> None:
        """Stop running jobs (they stay queued and resume at the next start) and close."""
        for rt in list(self._runtimes.values()):
            rt.stop_reason = rt.stop_reason or "queued"
            if rt.task is not None:
                rt.task.cancel()
        await self._await_runners(list(self._runtimes))
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None
        self._queue.clear()
        if self._client is not None:
            rawfetch.close_connector(self._client)
            await self._client.aclose()
            self._client = None
            self._transport = None

    async def run_until_complete(self, job_ids: list[str]) -> list[JobRecord]:
        """Run these jobs (queueing them if needed) until each is done/failed/paused/cancelled.

        Returns the final records. Does not raise for failed jobs (check ``record.state``);
        raises :class:`DownloadError` if a job is being run by another process.
        """
        job_ids = [self.jobs.require(j).id for j in job_ids]
        for job_id in job_ids:
            self._elsewhere.pop(job_id, None)
        for job_id in job_ids:
            job = self.jobs.require(job_id)
            if job.state in ACTIVE_STATES:
                self._queue_job(job_id)
        self._ensure_scheduler()
        assert self._changed is not None
        async with self._changed:
            await self._changed.wait_for(
                lambda: all(j not in self._queue and j not in self._runtimes for j in job_ids)
            )
        for job_id in job_ids:
            if job_id in self._elsewhere:
                raise self._elsewhere.pop(job_id)
        return [self.jobs.require(j) for j in job_ids]

    def _ensure_scheduler(self) -> None:
        if self._wake is None:
            self._wake = asyncio.Event()
            self._changed = asyncio.Condition()
        if self._scheduler is None or self._scheduler.done():
            self._scheduler = asyncio.create_task(self._schedule(), name="modeldeck-downloads")
            self._scheduler.add_done_callback(_log_task_error)
        self._wake.set()

    async def _schedule(self) -> None:
        assert self._wake is not None
        while True:
            while self._queue and len(self._runtimes) < self.settings.concurrent_downloads:
                job_id = self._queue.pop(0)
                job = self.jobs.get(job_id)
                if job is None or job.state not in ACTIVE_STATES:
                    await self._notify()
                    continue
                rt = _Runtime(job, self.event_rate)
                self._runtimes[job_id] = rt
                rt.task = asyncio.create_task(self._run(rt), name=f"download-{job_id}")
                rt.task.add_done_callback(self._runner_done(job_id))
            self._wake.clear()
            await self._wake.wait()

    def _runner_done(self, job_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            _log_task_error(task)
            self._runtimes.pop(job_id, None)
            if self._wake is not None:
                self._wake.set()
            notify = asyncio.ensure_future(self._notify())
            self._background.add(notify)
            notify.add_done_callback(self._background.discard)

        return done

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def _await_runners(self, job_ids: list[str]) -> None:
        tasks = [rt.task for j in job_ids if (rt := self._runtimes.get(j)) and rt.task]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- control ---------------------------------------------------------------------------

    async def pause(self, job_id: str) -> JobRecord:
        """Pause a job: the partial and segment offsets are kept."""
        return await self._halt(job_id, "paused")

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancel a job and delete its partial files."""
        return await self._halt(job_id, "cancelled")

    async def _halt(self, job_id: str, state: str) -> JobRecord:
        job = self.jobs.require(job_id)
        rt = self._runtimes.get(job.id)
        if rt is not None and rt.task is not None:
            rt.stop_reason = state
            rt.task.cancel()
            await self._await_runners([job.id])
            return self.jobs.require(job.id)
        _refuse_ended(job, state)
        if job.id in self._queue:
            self._queue.remove(job.id)
        if self._held_elsewhere(job.id):
            self.jobs.request(job.id, "pause" if state == "paused" else "cancel")
            return self.jobs.require(job.id)
        if state == "cancelled":
            self._delete_partials(job)
        self.jobs.set_state(job.id, state)
        job = self.jobs.require(job.id)
        self._publish(self._event_for(job))
        await self._notify()
        return job

    def resume(self, job_id: str) -> JobRecord:
        """Queue a paused (or failed) job again; it continues from its partial files."""
        job = self.jobs.require(job_id)
        _refuse_unreadable(job)
        if job.state in ("done", "cancelled"):
            raise InvalidInputError(f"job {job.id} is {job.state}; use retry to start it again")
        if job.state not in ACTIVE_STATES:
            self.jobs.set_state(job.id, "queued")
        self._queue_job(job.id)
        return self.jobs.require(job.id)

    def retry(self, job_id: str) -> JobRecord:
        """Queue a failed or cancelled job again (a failed one resumes from its partials)."""
        job = self.jobs.require(job_id)
        _refuse_unreadable(job)
        if job.state == "cancelled":
            self.jobs.reset_files(job.id)
        elif job.state == "done":
            raise InvalidInputError(f"job {job.id} is already done")
        self.jobs.set_state(job.id, "queued")
        self._queue_job(job.id)
        return self.jobs.require(job.id)

    def forget(self, job_id: str) -> int:
        """Delete an ended (done, failed, cancelled) or paused job's record, its partials and
        its lock; returns the bytes the partials freed. Running jobs are refused, as are
        jobs another process runs."""
        job = self.jobs.require(job_id)
        if job.id in self._runtimes or job.id in self._queue or (
                job.state in ACTIVE_STATES and self._held_elsewhere(job.id)):
            raise InvalidInputError(f"job {job.id} is {job.state}; pause or cancel it first")
        freed = self._delete_partials(job) if job.state != "done" else 0
        self.jobs.delete(job.id)
        if job.spec.update_of:  # its staging folders, if ModelDeck's and empty now
            from tui.inventory_ops import remove_empty_dirs

            remove_empty_dirs(self.inventory, {p for f in job.files for p in Path(f.dest).parents
                                               if STAGE_DIR in p.parts})
        lock = self._job_lock(job.id)
        if lock.path.exists():
            with contextlib.suppress(DownloadError, OSError):
                lock.acquire()
                lock.release(remove=True)
        return freed

    def _delete_partials(self, job: JobRecord) -> int:
        """Delete the job's partial files that nothing else uses (see
        :func:`tui.download.partials.remove_partial`); the bytes freed."""
        return sum(
            remove_partial(f.dest, jobs=self.jobs, inventory=self.inventory, exclude=job.id,
                           root=Path(self.settings.models_dir))
            for f in job.files if f.state != "installed"
        )

    def live_jobs(self) -> list[JobRecord]:
        """Every job, oldest first, in its true state now: a job this process runs with its
        in-memory state and bytes; one another process runs as that process last recorded it
        (at most ``flush_interval`` old); one recorded as running by a process that is gone
        as ``queued`` with ``interrupted`` set (it resumes at the next start or
        ``modeldeck jobs resume``)."""
        jobs = self.jobs.list()
        for job in jobs:
            rt = self._runtimes.get(job.id)
            if rt is not None:
                job.state, job.done_bytes, job.error = rt.state, rt.done, rt.error
                job.total_bytes = rt.total if rt.total is not None else job.total_bytes
            elif job.state in ACTIVE_STATES and job.state != "queued" and not (
                    self._held_elsewhere(job.id)):
                job.state, job.interrupted = "queued", True
        return jobs

    def note(self, job_id: str) -> str | None:
        """What a job this process ran did when that was not a download (see
        :attr:`DownloadEvent.note`)."""
        return self._notes.get(job_id)

    def _job_lock(self, job_id: str) -> DestLock:
        return DestLock(self.settings.state_dir / "jobs" / job_id)

    def runs_here(self, job_id: str) -> bool:
        """Whether this process is running the job now (its events come from here)."""
        return job_id in self._runtimes

    def _held_elsewhere(self, job_id: str) -> bool:
        if job_id in self._runtimes:
            return False
        lock = self._job_lock(job_id)
        try:
            lock.acquire()
        except DownloadError:
            return True
        lock.release()
        return False

    # -- running a job ---------------------------------------------------------------------

    def _transport_for(self) -> Transport:
        if self._transport is None:
            s = self.settings
            pool = max(s.connections_per_host, s.connections_per_download) * 2 + 4
            self._client = make_client(pool_size=pool, stall_timeout=s.stall_timeout)
            self._transport = Transport(self._client, s.connections_per_host)
        return self._transport

    async def _run(self, rt: _Runtime) -> None:
        job = rt.job
        lock = self._job_lock(job.id)
        try:
            lock.acquire()
        except DownloadError as exc:
            log.info("job %s runs in another process", job.id)
            self._elsewhere[job.id] = DownloadError(
                f"job {job.id} ({job.name}) is already running in another process "
                f"({str(exc).split(' by ', 1)[-1].split(' (')[0]})",
                hint="pause it there or wait for it",
            )
            return
        flusher: asyncio.Task[None] | None = None
        try:
            self._set_state(rt, "connecting")
            self.jobs.set_state(job.id, "connecting", clear_control=False)
            rt.persisted = ("connecting", job.done_bytes)
            flusher = asyncio.create_task(self._flush_loop(rt), name=f"flush-{job.id}")
            plan = await self._plan(job)
            if plan.installed:
                self._already_installed(rt, plan)
                return
            await self._download_all(rt, plan)
            self._set_state(rt, "verifying")
            done = asyncio.ensure_future(asyncio.to_thread(self._finish, job, plan))
            try:
                records = await asyncio.shield(done)
            except asyncio.CancelledError:
                records = await done  # files are in place: finish registering, then stop
            rt.job.model_id = records[0].id if records else None
            self._set_state(rt, "done")
        except asyncio.CancelledError:
            reason = rt.stop_reason or "queued"
            if reason == "failed" and rt.store_error is not None:
                self._fail(rt, str(rt.store_error))
            else:
                await self._on_stop(rt, reason)
            if rt.stop_reason is None:
                raise
        except Exception as exc:
            message = str(exc) if isinstance(exc, ModelDeckError) else (
                f"{type(exc).__name__}: {exc}")
            message = redact(" ".join(message.split()))
            if not isinstance(exc, ModelDeckError):
                log.error("download %s failed: %s", job.id, message)
            self._fail(rt, message)
        finally:
            if flusher is not None:
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await flusher
            lock.release(remove=rt.state in TERMINAL_STATES)

    async def _on_stop(self, rt: _Runtime, reason: str) -> None:
        if reason == "cancelled":
            self._delete_partials(rt.job)
        self._record(rt, reason)
        self._set_state(rt, reason)

    def _fail(self, rt: _Runtime, message: str) -> None:
        self._record(rt, "failed", message)
        self._set_state(rt, "failed", message)

    def _record(self, rt: _Runtime, state: str, error: str | None = None) -> None:
        """Persist a job's end state; a broken or vanished inventory is reported once, by the
        next read (the caller's), not raised from here."""
        try:
            self._save(rt)
            self.jobs.set_state(rt.job.id, state, error=error)
        except StoreError as exc:
            rt.store_error = rt.store_error or exc
            log.info("job %s: could not record %s: %s", rt.job.id, state, exc)

    def _save(self, rt: _Runtime) -> None:
        if rt.job.files:
            snapshot = [_copy_file(f) for f in rt.job.files]
            self.jobs.save_files(rt.job.id, snapshot)

    async def _flush_loop(self, rt: _Runtime) -> None:
        """Every ``flush_interval``: persist the job's live state (``downloading``,
        ``stalled``, ``waiting``, ``verifying``…), byte counts and segment offsets when they
        changed (what ``modeldeck jobs`` in another process shows), and apply a pause or
        cancel asked for by another process. The one place progress is written while a job
        runs."""
        while True:
            await asyncio.sleep(self.flush_interval)
            snapshot = [_copy_file(f) for f in rt.job.files]
            now = (rt.state, sum(f.done_bytes for f in snapshot))
            state = rt.state if rt.state in ACTIVE_STATES else None
            try:
                # The live state goes with the bytes: other processes show it (tui.store.changes).
                if now != rt.persisted:
                    await in_thread(self.jobs.save_files, rt.job.id, snapshot, state)
                    rt.persisted = now
                control = await in_thread(self.jobs.control, rt.job.id)
            except StoreError as exc:  # e.g. the inventory was deleted: stop, keep the partial
                rt.store_error = exc
                if rt.task is not None:
                    rt.stop_reason = rt.stop_reason or "failed"
                    rt.task.cancel()
                return
            if control in ("pause", "cancel") and rt.task is not None:
                rt.stop_reason = "paused" if control == "pause" else "cancelled"
                rt.task.cancel()
                return
            self._emit(rt)

    async def _plan(self, job: JobRecord) -> Plan:
        spec = job.spec
        models_dir = Path(self.settings.models_dir)
        if job.files:  # resuming: the plan (pinned to a commit) is in the database
            root = Path(job.dest) if job.dest else models_dir
            return _plan_from_record(job, root)
        if spec.kind == "catalog":
            spec = resolve_catalog(spec, self.catalog)
        folder = await in_thread(self._kind_folder, spec)
        if spec.kind == "hf":
            listing = await in_thread(self.hub.list_repo, str(spec.repo), spec.revision)
            plan = plan_hub(spec, listing, models_dir, self.hub, folder)
        elif spec.kind == "civitai":
            from tui.civitai.client import CivitaiClient

            version = await in_thread(CivitaiClient().version, int(spec.civitai_model or 0),
                                      spec.civitai_version)
            plan = plan_civitai(spec, version, models_dir, self.settings.organize_by_kind)
        else:
            plan = plan_url(spec, models_dir, folder)
        plan = await in_thread(self._against_installed, spec, plan)
        if plan.update_of:
            spec.update_of = plan.update_of
        if plan.installed:  # nothing to fetch: recorded as there already, nothing claimed
            for f in plan.files:
                f.state, f.done_bytes = "installed", f.size or 0
            self.jobs.set_plan(job.id, str(plan.root), plan.files, spec)
        else:
            with self.db.write():  # claim the destinations in one transaction (other processes)
                place_files(plan, spec, lambda dest: self._claims_at(dest, job.id))
                self.jobs.set_plan(job.id, str(plan.root), plan.files, spec)
        job.spec = spec
        job.files = plan.files
        job.dest = str(plan.root)
        return plan

    def _kind_folder(self, spec: JobSpec) -> str | None:
        """The kind folder a new download goes to (None: the flat layout). A Hub repo already
        installed stays where it is (so pulling it again is a no-op or an update)."""
        from tui.layout import hub_root_of, kind_folder

        if spec.kind == "hf" and spec.repo:
            models_dir = Path(self.settings.models_dir)
            for m in self.inventory.list_models(status="installed"):
                root = hub_root_of(models_dir, str(spec.repo), [f.path for f in m.files]) \
                    if m.source_ref == spec.repo else None
                if root is not None:
                    rel = root.relative_to(models_dir).parts
                    return rel[0] if len(rel) == 3 else None
        if not self.settings.organize_by_kind:
            return None
        catalog = self.catalog if spec.catalog_id else None
        entry = catalog.get(spec.catalog_id) if catalog is not None else None
        return kind_folder(entry.kind if entry is not None else "llm")

    def _against_installed(self, spec: JobSpec, plan: Plan) -> Plan:
        """Compare a fresh plan with what is installed from the same source: all of it there
        already (same commit / URL, same sha256, files unchanged) → ``plan.installed``; the
        same repo's model at another commit → an update of it (only changed files, staged)."""
        from tui.inventory_ops import file_unchanged

        models = [m for m in self.inventory.list_models(status="installed")
                  if m.source_ref == plan.source_ref]
        if not models:
            return plan
        plan.installed = installed_match(plan, spec, models, file_unchanged)
        if plan.installed:
            return plan
        target = self.inventory.get_model(spec.update_of) if spec.update_of else (
            update_target(plan, models))
        if target is not None and target.revision != plan.revision:
            from tui.updates import make_dirs

            plan = stage_update(plan, target, file_unchanged)
            make_dirs(self.inventory, plan.root, {Path(f.dest).parent for f in plan.files})
        return plan

    def _already_installed(self, rt: _Runtime, plan: Plan) -> None:
        """Finish a job whose files are all installed already: done, nothing written."""
        ids = ", ".join(m.id for m in plan.installed)
        if plan.revision:
            what = f"commit {plan.revision[:7]}"
        else:
            sha = next((f.sha256 for m in plan.installed for f in m.files if f.sha256), None)
            what = f"sha256 {sha[:12]}…" if sha else "same URL"
        rt.note = self._notes[rt.job.id] = f"already installed as {ids} ({what}); nothing to do"
        rt.job.model_id = plan.installed[0].id
        self.jobs.set_model(rt.job.id, rt.job.model_id)
        self._record(rt, "done")
        self._set_state(rt, "done")

    def _claims_at(self, dest: Path, job_id: str) -> list[Claim]:
        """Who else holds ``dest``: unfinished jobs, an installed model, or a file on disk."""
        claims = [
            Claim(f"job {other}", file_source(spec, f), f.sha256,
                  hint=f"wait for job {other} or cancel it (`modeldeck jobs cancel {other}`)")
            for other, spec, f in self.jobs.files_at(str(dest), exclude=job_id)
        ]
        record = self.inventory.find_by_path(str(dest))
        if record is None and dest.resolve() != dest:
            record = self.inventory.find_by_path(str(dest.resolve()))
        if record is not None:
            sha = next((f.sha256 for f in record.files
                        if f.path in (str(dest), str(dest.resolve()))), None)
            ref = record.source_ref
            source = f"{ref}@{record.revision}" if ref and record.revision else ref
            claims.append(Claim(f"model {record.id}", source, sha,
                                hint=f"remove it first (`modeldeck rm {record.id}`) or set "
                                "MODELDECK_MODELS_DIR elsewhere", path=dest))
        elif not claims and (dest.exists() or dest.is_symlink()):
            claims.append(Claim("a file ModelDeck did not download", path=dest))
        return claims

    async def _download_all(self, rt: _Runtime, plan: Plan) -> None:
        job = rt.job
        self._preflight(job, plan)
        todo = [f for f in job.files if f.state != "installed" or not Path(f.dest).exists()]
        small = [f for f in todo if f.size is not None and f.size < SMALL_FILE]
        large = [f for f in todo if f not in small]
        connections = job.spec.connections or self.settings.connections_per_download
        ctx = self._context(rt)
        if small:
            sem = asyncio.Semaphore(max(1, connections))

            async def one(f: JobFile) -> None:
                async with sem:
                    await self._download_file(rt, f, ctx, 1)

            try:
                async with asyncio.TaskGroup() as tg:
                    for f in small:
                        tg.create_task(one(f))
            except BaseExceptionGroup as group:
                raise engine.first_error(group) from None
        for f in large:
            await self._download_file(rt, f, ctx, connections)

    def _preflight(self, job: JobRecord, plan: Plan) -> None:
        remaining = 0
        for f in job.files:
            if f.state == "installed" or f.size is None:
                continue
            have = 0
            with contextlib.suppress(OSError):
                st = os.stat(f.dest + ".part")
                have = min(f.size, st.st_blocks * 512, st.st_size)
            remaining += max(0, f.size - have)
        check_free_space(plan.root, remaining, disk_usage=_disk_usage)
        warning = network_fs_warning(plan.root)
        if warning:
            log.warning("%s", warning)
            rt = self._runtimes.get(job.id)
            if rt is not None and rt.warning != warning:
                rt.warning = warning
                self._emit(rt, force=True)

    def _context(self, rt: _Runtime) -> TransferContext:
        job = rt.job
        buckets = [self.bucket]
        if job.spec.limit_rate:
            buckets.append(TokenBucket(job.spec.limit_rate))
        endpoint = hub_endpoint()
        first_url = job.files[0].url if job.files else ""
        hub_like = job.spec.kind == "hf" or (
            first_url and origin(first_url) == origin(endpoint))

        def on_bytes(n: int) -> None:
            cleared = n > 0 and rt.attempt is not None
            if cleared:  # bytes arrive again: the retry count is history
                rt.attempt = rt.detail = None
            if rt.state != "downloading":
                self._set_state(rt, "downloading")
            elif cleared:
                self._emit(rt, force=True)
            elif n:
                self._emit(rt)

        def on_state(state: str) -> None:
            if state != rt.state and rt.state in ("downloading", "stalled", "connecting",
                                                  "waiting"):
                self._set_state(rt, state)

        def on_retry(attempt: int, reason: str) -> None:
            self._retrying(rt, attempt, reason)

        token = self.hub.token if hub_like else None
        auth_origin = endpoint if hub_like else None
        if job.spec.kind == "civitai":  # CIVITAI_TOKEN, only to CivitAI's own origin
            from tui.civitai.client import civitai_endpoint, civitai_token

            token, auth_origin = civitai_token, civitai_endpoint()

        async def resolve_file(url: str, stale: Resolved | None) -> Resolved:
            return await self._resolve(rt, url, stale, token, auth_origin)

        async def wait(seconds: float, why: str | None) -> None:
            await self._wait(rt, seconds, why)

        return TransferContext(
            transport=self._transport_for(),
            policy=self.policy,
            buckets=buckets,
            token=token,
            auth_origin=auth_origin,
            on_bytes=on_bytes,
            on_state=on_state,
            on_retry=on_retry,
            map_error=lambda exc: _map_http_error(job, exc),
            resolve=resolve_file,
            wait=wait,
        )

    # -- resolving and waiting ---------------------------------------------------------------

    async def _resolve(self, rt: _Runtime, url: str, stale: Resolved | None,
                       token: Any, auth_origin: str | None) -> Resolved:
        """Where ``url``'s bytes are: the cached answer while it is fresh and not ``stale``,
        else the resolver's (one call at a time per URL)."""
        lock = self._resolve_locks.setdefault(url, asyncio.Lock())
        async with lock:
            cached = self.resolved.fresh(url, stale)
            if cached is not None:
                return cached
            res = await self._resolve_now(rt, url, token, auth_origin)
            self.resolved.put(res)
            log.debug("resolved %s to %s", strip_query(url), res.shown)
            return res

    async def _resolve_now(self, rt: _Runtime, url: str, token: Any, auth_origin: str | None
                           ) -> Resolved:
        """Resolve ``url``, waiting out rate limits and retrying errors until
        ``give_up_after`` passes; the Hub's refusals are mapped to one-line errors."""
        policy = self.policy
        since = policy.clock()
        failures = 0
        while True:
            await self._hold(rt, url)
            why: str | None = None
            try:
                return await resolve(self._transport_for(), url, token=token,
                                     auth_origin=auth_origin, clock=policy.clock)
            except HttpStatusError as exc:
                if not exc.retryable:
                    raise _map_http_error(rt.job, exc) from None
                retry_after, reason = exc.retry_after, str(exc)
                why = wait_reason(exc, hub_endpoint())
                if exc.status == 429 and retry_after:
                    # Every file from this origin waits for the window: one shared hold.
                    key = origin(url)
                    self._holds[key] = max(self._holds.get(key, 0.0),
                                           policy.clock() + policy.delay(1, retry_after))
                    retry_after = None
            except (httpx.HTTPError, OSError) as exc:
                if (bad_tls := untrusted(exc, url)) is not None:
                    raise bad_tls from None
                retry_after, reason = None, failure_reason(exc)
            failures += 1
            delay = policy.delay(failures, retry_after)
            held = self._holds.get(origin(url), 0.0) - policy.clock()
            if policy.exhausted(failures, since, max(delay, held)):
                name = next((f.path for f in rt.job.files if f.url == url), _label(url))
                raise give_up_error(name, policy, failures, since, max(delay, held),
                                    reason, asked=held > 0 or retry_after is not None)
            self._retrying(rt, failures + 1, reason)
            if held <= 0:
                await self._wait(rt, delay, why)

    def _retrying(self, rt: _Runtime, attempt: int, reason: str) -> None:
        """Show the try under way and why the last one failed (``try 3, connection
        refused``) until bytes flow again."""
        rt.attempt, rt.detail = attempt, redact(" ".join(reason.split()))[:120]
        self._emit(rt, force=True)

    async def _hold(self, rt: _Runtime, url: str) -> None:
        """Wait while ``url``'s origin is rate-limited (a 429 told every file to wait)."""
        key = origin(url)
        left = self._holds.get(key, 0.0) - self.policy.clock()
        if left > 0:
            hub = key == origin(hub_endpoint())
            await self._wait(rt, left, "the Hub's rate limit" if hub else
                             f"the rate limit of {key[1]}")

    async def _wait(self, rt: _Runtime, seconds: float, why: str | None) -> None:
        """Sleep ``seconds``; when the server asked for the wait (``why``) and it is a second
        or more, the job shows ``waiting`` with the seconds left, updated each second."""
        policy = self.policy
        if why is None or seconds < 1:
            await policy.sleep(seconds)
            return
        end = policy.clock() + seconds
        before = rt.state if rt.state != "waiting" else "connecting"
        try:
            while (left := end - policy.clock()) > 0:
                self._set_state(rt, "waiting", wait=(why, math.ceil(left)))
                await policy.sleep(min(1.0, left))
        finally:
            if rt.state == "waiting":
                self._set_state(rt, before)

    async def _download_file(
        self, rt: _Runtime, jf: JobFile, ctx: TransferContext, connections: int
    ) -> None:
        dest = Path(jf.dest)
        part = dest.with_name(dest.name + ".part")
        lock = DestLock(dest)
        lock.acquire()
        try:
            if await self._already_there(jf, dest, part):
                return
            dest.parent.mkdir(parents=True, exist_ok=True)
            for attempt in (1, 2):
                jf.state = "downloading"
                transfer = FileTransfer(ctx, jf, part, connections)
                sha256, sha1, size = await transfer.run()
                self._verified[jf.dest] = _verification(jf, size_known=transfer.size_known)
                problem = _check(jf, sha256, sha1, size)
                if problem is None:
                    break
                log.warning("verification failed for %s: %s", jf.path, problem)
                ctx.on_bytes(-jf.done_bytes)
                jf.segments, jf.done_bytes = None, 0
                with contextlib.suppress(OSError):
                    os.unlink(part)
                if attempt == 2:
                    jf.state = "failed"
                    raise ChecksumMismatchError(
                        f"{jf.path} failed verification twice ({problem})",
                        hint="the source may be corrupt; check the URL or --sha256",
                    )
            os.replace(part, dest)
            await in_thread(fsync_dir, dest.parent)
            jf.state = "installed"
            jf.done_bytes = jf.size or jf.done_bytes
            self._sha[jf.dest] = sha256
            self.jobs.save_files(rt.job.id, [_copy_file(jf)])
        finally:
            lock.release(remove=True)

    async def _already_there(self, jf: JobFile, dest: Path, part: Path) -> bool:
        """True if ``dest`` already holds the verified file (crash after rename, re-pull)."""
        if not dest.is_file():
            return False
        size = dest.stat().st_size
        if jf.size is not None and size != jf.size:
            return False
        if jf.sha256 is None and jf.blob_sha1 is None and jf.state != "installed":
            return False  # nothing to verify it against: download again
        sha256 = await in_thread(sha256_file, dest)
        sha1 = None
        if jf.blob_sha1 and not jf.sha256:
            sha1 = await in_thread(git_blob_sha1_file, dest)
        if jf.state != "installed" and _check(jf, sha256, sha1, size) is not None:
            return False
        with contextlib.suppress(OSError):
            os.unlink(part)
        jf.size = size
        jf.state, jf.done_bytes, jf.segments = "installed", size, None
        self._sha[jf.dest] = sha256
        self._verified.setdefault(jf.dest, _verification(jf, size_known=True))
        return True

    def _finish(self, job: JobRecord, plan: Plan) -> list[Any]:
        """Register verified files and mark the job done in one transaction (in a thread).
        An update swaps its staged files in first (:func:`tui.updates.finish_update`)."""
        from tui.registration import register_download

        files = [
            (Path(f.dest), int(f.size or 0), self._sha.get(f.dest) or f.sha256) for f in job.files
        ]
        verified = {Path(f.dest): v for f in job.files if (v := self._verified.get(f.dest))}
        if job.spec.update_of:
            from tui.updates import finish_update

            records = finish_update(self.settings, self.inventory, job.spec.update_of, plan,
                                    files, verified)
            with self.db.write():
                self.jobs.save_files(job.id, [_copy_file(f) for f in job.files])
                self.jobs.set_model(job.id, records[0].id if records else None)
                self.jobs.set_state(job.id, "done")
            return records
        with self.db.write():
            records = register_download(
                self.inventory, model_root=plan.root, files=files, source=plan.source,
                source_ref=plan.source_ref, revision=plan.revision, catalog_id=plan.catalog_id,
                name=plan.name, verified=verified,
                tracked=(job.spec.revision or "main") if job.spec.kind == "hf" else None,
                **_source_details(job.spec),
            )
            self.jobs.save_files(job.id, [_copy_file(f) for f in job.files])
            self.jobs.set_model(job.id, records[0].id if records else None)
            self.jobs.set_state(job.id, "done")
        return records


def _refuse_ended(job: JobRecord, state: str) -> None:
    """One line for pausing or cancelling a job that is not going anywhere (a failed job may
    still be cancelled: that drops its partial)."""
    verb = "pause" if state == "paused" else "cancel"
    if job.state in TERMINAL_STATES and not (state == "cancelled" and job.state == "failed"):
        hint = (f"`modeldeck jobs retry {job.id}` runs it again"
                if job.state in ("failed", "cancelled") else None)
        raise InvalidInputError(f"job {job.id} already finished ({job.state}); nothing to {verb}",
                                hint=hint)
    if job.state == "paused" and state == "paused":
        raise InvalidInputError(f"job {job.id} is already paused; nothing to pause",
                                hint=f"`modeldeck jobs resume {job.id}` continues it")


def _wait_text(wait: tuple[str, int] | None) -> str | None:
    """``waiting for the Hub's rate limit, 42s``."""
    return f"waiting for {wait[0]}, {fmt.duration(wait[1])}" if wait else None


def _refuse_unreadable(job: JobRecord) -> None:
    if job.unreadable:
        raise InvalidInputError(f"job {job.id}: {job.error}")


def _copy_file(f: JobFile) -> JobFile:
    return JobFile(
        path=f.path, url=f.url, dest=f.dest, size=f.size, sha256=f.sha256,
        blob_sha1=f.blob_sha1, etag=f.etag, last_modified=f.last_modified,
        commit_hash=f.commit_hash, state=f.state, done_bytes=f.done_bytes,
        segments=[list(s) for s in f.segments] if f.segments is not None else None,
        error=f.error, position=f.position,
    )


def _plan_from_record(job: JobRecord, root: Path) -> Plan:
    spec = job.spec
    revision = job.files[0].commit_hash if job.files else None
    if spec.kind == "hf":
        source, ref = ("catalog" if spec.catalog_id else "hf"), str(spec.repo)
    elif spec.kind == "civitai":
        source, ref = "civitai", f"civitai:{spec.civitai_model}@{spec.civitai_pinned}"
    else:
        source, ref = ("catalog" if spec.catalog_id else "url"), str(spec.url)
    return Plan(root=root, files=job.files, source=source, source_ref=ref, revision=revision,
                catalog_id=spec.catalog_id, name=spec.name, update_of=spec.update_of)


def _source_details(spec: JobSpec) -> dict[str, Any]:
    """What a CivitAI job knows from the API: the kind (from its type) and base model."""
    if spec.kind != "civitai":
        return {}
    from tui.metadata.kinds import normalise_family

    extra: dict[str, Any] = {"civitai": {"model": spec.civitai_model,
                                         "version": spec.civitai_pinned}}
    family = normalise_family(spec.base_model)
    if family:
        extra["base_model"], extra["base_family"] = spec.base_model, family
    return {"kind": spec.model_kind, "extra": extra}


def _verification(jf: JobFile, *, size_known: bool) -> str:
    """How a finished file was checked: against its sha256 or git blob id when known, else
    by its size and the ranges every answer had to match (never installed otherwise)."""
    if jf.sha256:
        return "sha256"
    if jf.blob_sha1:
        return "git-blob"
    return "size+ranges" if size_known else "ranges"


def _check(jf: JobFile, sha256: str, sha1: str | None, size: int) -> str | None:
    """None if the file matches what we expected, else what is wrong."""
    if jf.size is not None and size != jf.size:
        return f"size {size} != expected {jf.size}"
    if jf.sha256 and sha256 != jf.sha256.lower():
        return f"sha256 {sha256[:12]}… != expected {jf.sha256[:12]}…"
    if not jf.sha256 and jf.blob_sha1 and sha1 and sha1 != jf.blob_sha1.lower():
        return f"git blob id {sha1[:12]}… != expected {jf.blob_sha1[:12]}…"
    return None


def _map_http_error(job: JobRecord, exc: HttpStatusError) -> Exception:
    """One line for an error answer. Gated/private comes from the Hub's own answers only
    (its origin); a CDN's 401/403 is the CDN refusing, never "gated"."""
    spec = job.spec
    where = spec.repo if spec.kind == "hf" else redact(str(spec.url))[:200]
    from_hub = origin(exc.url) == origin(hub_endpoint())
    if spec.kind == "civitai":
        where = spec.describe()
        from tui.civitai.client import TOKEN_HINT, civitai_endpoint, civitai_token

        if exc.status in (401, 403) and origin(exc.url) == origin(civitai_endpoint()):
            if civitai_token():
                return DownloadError(f"CivitAI refused CIVITAI_TOKEN for {where} (HTTP "
                                     f"{exc.status})", hint="check the key, or whether the "
                                     "file needs early access on civitai.com")
            return DownloadError(f"{where} needs a CivitAI login to download (HTTP "
                                 f"{exc.status})", hint=TOKEN_HINT)
    if exc.status in (401, 403):
        if from_hub and (spec.kind == "hf" or exc.error_code in ("GatedRepo", "RepoNotFound")):
            return gated_message(str(spec.repo or where))
        if spec.kind == "hf":
            host = _host(exc.url)
            return DownloadError(f"the download server {host} refused {where} (HTTP "
                                 f"{exc.status})", hint="retry later with `modeldeck jobs "
                                 "retry`; this is not an access problem with the repo")
        return DownloadError(f"access denied (HTTP {exc.status}) for {where}",
                             hint="the server needs credentials ModelDeck does not have")
    if exc.status == 404:
        return RemoteNotFoundError(f"not found (HTTP 404): {redact(exc.url.split('?')[0])}")
    if exc.status == 416:
        return DownloadError(f"the server refused the byte range for {where} (HTTP 416)",
                             hint="run `modeldeck jobs retry` to start over")
    return DownloadError(f"HTTP {exc.status} for {where}")


def _host(url: str) -> str:
    return urlsplit(url).netloc or "the server"


def _label(url: str) -> str:
    """A file's name for a message: its path in the repo for a Hub URL, else the URL (no
    query: it may be a signature), at most 200 characters."""
    path = urlsplit(url).path
    if "/resolve/" in path:
        return unquote(path.split("/resolve/", 1)[1].partition("/")[2])[:200] or path[:200]
    return redact(strip_query(url))[:200]


def _disk_usage(path: str) -> Any:
    import shutil

    return shutil.disk_usage(path)


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("download task %s crashed: %s", task.get_name(), redact(repr(exc)))
