"""``modeldeck import``: queue a validated manifest's models as download jobs and run them.

Every spec is built (and so validated) before any job is written, and the jobs are written
in one transaction: a failure part-way queues nothing.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from tui.cli.context import Context
from tui.manifest import Manifest, ManifestEntry
from tui.terminal_text import clean_line


def _already_installed(known: dict[str, Any], entry: ManifestEntry) -> bool:
    """True when every file of the entry is installed with the manifest's sha256."""
    wanted = [f.sha256 for f in entry.files if f.path.endswith((".gguf", ".safetensors"))]
    return bool(wanted) and all(sha and sha in known for sha in wanted)  # no sha: unknown


def _spec_for(entry: ManifestEntry):
    from tui.download.sources import JobSpec

    if entry.source == "hf":
        return JobSpec(
            kind="hf", repo=entry.repo, revision=entry.revision,
            files=[f.path for f in entry.files], name=entry.name,
            file_sha256={f.path: f.sha256 for f in entry.files if f.sha256},
        )
    (first,) = entry.files[:1]
    if entry.source == "civitai":  # the version it was pulled at, its file by name
        model, _, version = str(entry.url).removeprefix("civitai:").partition("@")
        return JobSpec(kind="civitai", civitai_model=int(model), civitai_version=int(version),
                       files=[first.path], name=entry.name)
    return JobSpec(kind="url", url=entry.url, sha256=first.sha256, filename=first.path,
                   name=entry.name)


def run_import(ctx: Context, manifest: Manifest, *, start: bool, as_json: bool) -> int:
    """Queue every entry not already installed; with ``start``, download them now."""
    downloads = ctx.services.downloads
    specs = []
    skipped = []
    known = ctx.services.inventory.files_by_sha256()
    for entry in manifest.entries:
        if _already_installed(known, entry):
            skipped.append(entry.id)
        else:
            specs.append((entry, _spec_for(entry)))  # builds every spec before queueing any
    with ctx.services.db.write():  # one transaction: every job is queued, or none
        job_ids = [(entry.id, downloads.enqueue(spec)) for entry, spec in specs]
    results: dict[str, str] = {}
    if start and job_ids:
        async def run() -> list:
            try:
                return await downloads.run_until_complete([j for _, j in job_ids])
            finally:
                await downloads.stop()

        records = asyncio.run(run())
        for (entry_id, _), record in zip(job_ids, records, strict=True):
            results[entry_id] = record.state if not record.error else f"failed: {record.error}"
    summary = {
        "queued": [{"id": e, "job": j} for e, j in job_ids],
        "already_installed": skipped,
        "results": results,
    }
    if as_json:
        ctx.print_json(summary)
    else:
        for entry_id in skipped:
            print(f"{clean_line(entry_id)}: already installed")
        for entry_id, job_id in job_ids:
            state = results.get(entry_id, "queued (run 'modeldeck jobs resume' or the dashboard)")
            print(f"{clean_line(entry_id)}: job {job_id[:8]} {clean_line(state)}")
    failed = [r for r in results.values() if r != "done"]
    if failed:
        print(f"modeldeck: error: {len(failed)} of {len(results)} imports did not finish",
              file=sys.stderr)
        return 1
    return 0
