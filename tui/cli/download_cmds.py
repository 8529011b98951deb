"""``modeldeck pull`` and ``modeldeck jobs``: downloads from the command line.

The token is never an argument (it would show in ``ps``): it comes from ``HF_TOKEN`` or the
store of ``hf auth login`` (``CIVITAI_TOKEN`` for CivitAI). Ctrl-C during a pull pauses the
job (partial kept) and prints how to resume. :func:`run_jobs` is what ``modeldeck import`` uses
to run enqueued jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

from tui import formatting as fmt
from tui.download.jobs import JobRecord
from tui.download.progress import TERMINAL_STATES, DownloadEvent
from tui.download.sources import JobSpec, parse_source
from tui.errors import InvalidInputError, ModelDeckError
from tui.settings import parse_rate
from tui.terminal_text import clean_line


def register(subparsers: Any) -> None:
    """Add ``pull`` and ``jobs``."""
    pull = subparsers.add_parser(
        "pull", help="download a model (catalog id, owner/repo[:QUANT], civitai:ID[@VER] or URL)",
        description="Download a model into the models directory, verify it and register it.",
    )
    pull.add_argument("source", help="catalog id, owner/repo, owner/repo:QUANT, "
                      "civitai:ID[@VERSION], a CivitAI model URL or an http(s) URL")
    pull.add_argument("--file", action="append", default=[], dest="files", metavar="F",
                      help="repo file to fetch (repeatable)")
    pull.add_argument("--include", action="append", default=[], metavar="GLOB")
    pull.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    pull.add_argument("--quant", help="GGUF quantization, e.g. Q4_K_M")
    pull.add_argument("--revision", help="branch, tag or commit (default main)")
    pull.add_argument("--sha256", help="expected sha256 of a URL download")
    pull.add_argument("--connections", type=int, help="connections per file")
    pull.add_argument("--limit-rate", help="bandwidth cap for this pull, e.g. 50M")
    pull.add_argument("--allow-pickle", action="store_true",
                      help="CivitAI: accept a PyTorch pickle file (unsafe format) when there "
                      "is no SafeTensor one")
    _output_flags(pull)
    pull.set_defaults(func=cmd_pull)

    jobs = subparsers.add_parser(
        "jobs", help="list, control or clear download jobs",
        description="List download jobs with their live state, pause/resume/cancel/retry one, "
        "or clear ended ones (`jobs clear`: done, failed and cancelled; their partials go too).")
    jobs.add_argument("action", nargs="?",
                      choices=("list", "pause", "resume", "cancel", "retry", "clear"),
                      default="list")
    jobs.add_argument("job_id", nargs="?", help="job id (a unique prefix is enough)")
    jobs.add_argument("--no-wait", action="store_true",
                      help="resume/retry: only queue the job, don't run it here")
    for state in CLEARABLE:
        jobs.add_argument(f"--{state}", action="append_const", const=state, dest="clear",
                          help=f"clear: only {state} jobs")
    jobs.add_argument("--all", action="store_true",
                      help="clear: paused jobs too (their partials are deleted)")
    _output_flags(jobs)
    jobs.set_defaults(func=cmd_jobs)


def _output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="JSON output (one event per line)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


# -- pull ------------------------------------------------------------------------------------


CLEARABLE = ("done", "failed", "cancelled")
ELSEWHERE_WAIT = 10.0  # seconds `jobs pause|cancel` waits for the process running the job


def cmd_pull(args: argparse.Namespace, ctx: Any) -> int:
    """Handler of ``modeldeck pull``."""
    if args.connections is not None and args.connections < 1:
        raise InvalidInputError("--connections must be at least 1")
    try:
        limit = parse_rate(args.limit_rate) if args.limit_rate else None
    except ValueError as exc:
        raise InvalidInputError(f"--limit-rate: {exc}") from None
    services = ctx.services

    def is_catalog_id(text: str) -> bool:
        try:
            return services.catalog.get(text) is not None
        except ModelDeckError:
            raise
        except Exception:
            return False

    spec = parse_source(
        args.source, is_catalog_id=is_catalog_id, files=args.files, include=args.include,
        exclude=args.exclude, quant=args.quant, revision=args.revision, sha256=args.sha256,
        connections=args.connections, limit_rate=limit, allow_pickle=args.allow_pickle,
    )
    service = services.downloads
    job_id = _existing_job(service, spec) or service.enqueue(spec)
    return run_jobs(ctx, [job_id], json_mode=args.json, quiet=args.quiet)


def _existing_job(service: Any, spec: JobSpec) -> str | None:
    """An unfinished job with the same spec (so re-running a pull resumes it)."""
    wanted = spec.request_json()
    for job in service.list_jobs():
        if job.state not in ("done", "cancelled") and job.spec.request_json() == wanted:
            if job.state in ("paused", "failed"):
                service.resume(job.id)
            return job.id
    return None


def run_jobs(ctx: Any, job_ids: list[str], *, json_mode: bool = False, quiet: bool = False,
             report_done: bool = True) -> int:
    """Run jobs in the foreground with progress output; Ctrl-C pauses them.

    Returns 0 if all finished, 130 if paused by the user, 1 if any failed. A job that found
    everything installed already says so (and its record is not kept).
    """
    service = ctx.services.downloads
    renderer: _Renderer = _JsonRenderer() if json_mode else (
        _QuietRenderer() if quiet or not sys.stderr.isatty() else _RichRenderer())
    records = asyncio.run(_run(service, job_ids, renderer))
    renderer.close()
    failed = [r for r in records if r.state == "failed"]
    paused = [r for r in records if r.state in ("paused", "queued")]
    for r in records:
        note = service.note(r.id) if r.state == "done" else None
        if note is not None:
            if not json_mode:
                print(clean_line(f"{r.name}: {note}"))
            service.forget(r.id)
        elif r.state == "done" and not json_mode and report_done:
            where = r.dest or ""
            model = f" as {r.model_id}" if r.model_id else ""
            print(clean_line(f"{r.name}: done{model} ({where})"))
    if paused:
        ids = " ".join(r.id for r in paused)
        print(f"paused {ids}; resume with: modeldeck jobs resume {paused[0].id}", file=sys.stderr)
        return 130
    for r in failed:
        if not r.files:  # rejected before anything was planned (bad input): don't keep it
            service.forget(r.id)
    if failed:
        if len(failed) == 1 and len(records) == 1:
            raise _JobFailed(failed[0])
        for r in failed:
            print(f"modeldeck: error: {clean_line(failure_line(r))}", file=sys.stderr)
        return 1
    return 0


class _JobFailed(ModelDeckError):
    def __init__(self, job: JobRecord) -> None:
        super().__init__(failure_line(job))


def failure_line(job: JobRecord, *, named: bool = True) -> str:
    """A failed job in one line, each part said once: its name (unless the error starts with
    it already, or ``named`` is False: the caller shows it), the error, and how to retry it
    (with its id)."""
    error = " ".join((job.error or "failed").split())
    name = job.name
    if not named:
        text = error.removeprefix(f"{name}: ")
    elif error.startswith(name) or (job.files and error.startswith(job.files[0].path)):
        text = error
    else:
        text = f"{name}: {error}"
    if "`modeldeck jobs retry`" in text:
        text = text.replace("`modeldeck jobs retry`", f"`modeldeck jobs retry {job.id}`")
    elif job.files and "jobs retry" not in text:
        text += f" (retry with: modeldeck jobs retry {job.id})"
    return text


async def _run(service: Any, job_ids: list[str], renderer: _Renderer) -> list[JobRecord]:
    loop = asyncio.get_running_loop()
    warned: set[tuple[str, str]] = set()

    def on_event(event: DownloadEvent) -> None:
        renderer.update(event)
        if event.warning and (event.job_id, event.warning) not in warned:
            warned.add((event.job_id, event.warning))
            renderer.note(f"warning: {event.name}: {event.warning}")

    unsubscribe = service.subscribe(on_event)
    pausing: list[asyncio.Task[Any]] = []

    def on_signal() -> None:
        if pausing:
            return
        renderer.note("pausing…")
        for job_id in job_ids:
            task = asyncio.ensure_future(service.pause(job_id))
            pausing.append(task)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    try:
        records = await service.run_until_complete(job_ids)
        if pausing:
            await asyncio.gather(*pausing, return_exceptions=True)
            records = [service.get_job(j) for j in job_ids]
        return records
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        unsubscribe()
        await service.stop()


# -- jobs ------------------------------------------------------------------------------------


def cmd_jobs(args: argparse.Namespace, ctx: Any) -> int:
    """Handler of ``modeldeck jobs``."""
    service = ctx.services.downloads
    if args.action == "list":
        return _list_jobs(ctx, args, service)
    if args.action == "clear":
        return _clear_jobs(ctx, args, service)
    if args.clear or args.all:
        raise InvalidInputError("--done, --failed, --cancelled and --all go with `jobs clear`")
    if not args.job_id:
        raise InvalidInputError(f"jobs {args.action} needs a job id", hint="see 'modeldeck jobs'")
    if args.action in ("pause", "cancel"):
        return _halt(ctx, args, service)
    job = service.resume(args.job_id) if args.action == "resume" else service.retry(args.job_id)
    if args.no_wait:
        _report(ctx, args, job, f"{job.id} queued (it runs when the dashboard starts)")
        return 0
    return run_jobs(ctx, [job.id], json_mode=args.json, quiet=args.quiet)


def _list_jobs(ctx: Any, args: argparse.Namespace, service: Any) -> int:
    """Every job in its live state (see :meth:`DownloadService.live_jobs`)."""
    jobs = service.live_jobs()
    if args.json:
        ctx.print_json([j.to_dict() for j in jobs])
        return 0
    if not jobs:
        print("no download jobs")
        return 0
    for j in jobs:
        line = (f"{j.id}  {j.state:<11} {fmt.size(j.done_bytes):>8} / "
                f"{fmt.size(j.total_bytes):<8} {j.name}")
        if j.interrupted:
            line += f"  (not running; `modeldeck jobs resume {j.id}` continues it)"
        elif j.error:
            line += f"  ({failure_line(j, named=False) if j.state == 'failed' else j.error})"
        print(clean_line(line))
    return 0


def _halt(ctx: Any, args: argparse.Namespace, service: Any) -> int:
    """``jobs pause|cancel``: here, or asked of the process running it (and waited for)."""
    import time

    method = service.pause if args.action == "pause" else service.cancel
    job = asyncio.run(method(args.job_id))
    wanted = "paused" if args.action == "pause" else "cancelled"
    deadline = time.monotonic() + ELSEWHERE_WAIT
    while job.state != wanted and job.control and time.monotonic() < deadline:
        time.sleep(0.1)
        job = service.get_job(job.id)
    if job.state == wanted:
        _report(ctx, args, job, f"{job.id} {job.state}")
        return 0
    if job.state in TERMINAL_STATES:
        raise InvalidInputError(f"job {job.id} finished ({job.state}) before it could be "
                                f"{wanted}")
    raise InvalidInputError(
        f"job {job.id} runs in another process, which did not answer within "
        f"{ELSEWHERE_WAIT:.0f} s", hint=f"it will be {wanted} when that process sees the request")


def _clear_jobs(ctx: Any, args: argparse.Namespace, service: Any) -> int:
    """``jobs clear``: forget ended jobs (and their partials); never an installed model."""
    if args.job_id:
        raise InvalidInputError("jobs clear takes no job id",
                                hint="pick jobs with --done, --failed, --cancelled or --all")
    from tui.maintenance import clear_jobs

    states = tuple(args.clear or CLEARABLE) + (("paused",) if args.all else ())
    cleared, freed = clear_jobs(service, states)
    if args.json:
        ctx.print_json({"cleared": [j.id for j in cleared], "freed_bytes": freed})
        return 0
    for j in cleared:
        print(clean_line(f"cleared {j.id}  {j.state:<9} {j.name}"))
    print(f"cleared {len(cleared)} job{'s' if len(cleared) != 1 else ''}"
          + (f"; partials freed {fmt.size(freed)}" if freed else ""))
    return 0


def _report(ctx: Any, args: argparse.Namespace, job: JobRecord, text: str) -> None:
    if args.json:
        ctx.print_json(job.to_dict())
    else:
        print(clean_line(text))


# -- renderers -------------------------------------------------------------------------------


class _Renderer:
    def update(self, event: DownloadEvent) -> None:
        raise NotImplementedError

    def note(self, text: str) -> None:
        print(clean_line(text), file=sys.stderr)

    def close(self) -> None:
        pass


class _JsonRenderer(_Renderer):
    def update(self, event: DownloadEvent) -> None:
        sys.stdout.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def note(self, text: str) -> None:
        sys.stdout.write(json.dumps({"note": text}) + "\n")
        sys.stdout.flush()


class _QuietRenderer(_Renderer):
    """One line per change of state or retry (``x.gguf: connecting, try 3, connection
    refused``); the end is reported once, by the caller."""

    def __init__(self) -> None:
        self._states: dict[str, str] = {}

    def update(self, event: DownloadEvent) -> None:
        status = event.status
        if self._states.get(event.job_id) != status:
            self._states[event.job_id] = status
            if event.state in TERMINAL_STATES:
                return
            print(clean_line(f"{event.name}: {status}"), file=sys.stderr)


class _RichRenderer(_Renderer):
    """Progress bars on a terminal. Names are shown literally: escaped controls, no markup."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        def column(template: str, **kwargs: Any) -> TextColumn:
            return TextColumn(template, markup=False, **kwargs)

        # Rich writes its own escape sequences: straight to the terminal, not through the
        # CLI's CleanWriter (every text put in a column is cleaned here instead).
        stderr = getattr(sys.stderr, "raw", sys.stderr)
        self.progress = Progress(
            column("{task.description}", justify="left"),
            BarColumn(bar_width=None),
            column("{task.percentage:>5.1f}%"),
            column("{task.fields[size]}"),
            column("{task.fields[speed]}"),
            column("{task.fields[eta]}"),
            column("{task.fields[state]}"),
            console=Console(file=stderr),
            transient=False,
            refresh_per_second=8,
        )
        self.progress.start()
        self._jobs: dict[str, Any] = {}
        self._files: dict[tuple[str, str], Any] = {}

    def update(self, event: DownloadEvent) -> None:
        p = self.progress
        fields = {
            "size": f"{fmt.size(event.done_bytes)}/{fmt.size(event.total_bytes)}",
            "speed": fmt.rate(event.speed),
            "eta": f"ETA {fmt.duration(event.eta)}",
            "state": clean_line(event.status, 60),
        }
        task = self._jobs.get(event.job_id)
        if task is None:
            task = self._jobs[event.job_id] = p.add_task(
                clean_line(event.name, 60), total=None, **fields
            )
        p.update(task, completed=event.done_bytes, total=event.total_bytes, **fields)
        if len(event.files) > 1:
            for f in event.files:
                key = (event.job_id, f.path)
                ftask = self._files.get(key)
                ffields = {"size": f"{fmt.size(f.done_bytes)}/{fmt.size(f.total_bytes)}",
                           "speed": "", "eta": "", "state": f.state}
                if ftask is None:
                    ftask = self._files[key] = p.add_task(
                        f"  {clean_line(f.path, 60)}", total=f.total_bytes, **ffields
                    )
                p.update(ftask, completed=f.done_bytes, total=f.total_bytes, **ffields)

    def note(self, text: str) -> None:
        self.progress.console.print(clean_line(text), markup=False, highlight=False)

    def close(self) -> None:
        self.progress.stop()
