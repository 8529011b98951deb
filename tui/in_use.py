"""Which installed models are in use now: loaded (here or in a running ``modeldeck serve``)
or being downloaded or updated. ``organize`` and ``reclaim`` leave those alone."""

from __future__ import annotations

from typing import Any


def loaded_ids(services: Any) -> set[str]:
    """Models loaded in this process's runtime (if it was started) or in the running server
    ``serve.json`` names (if one answers). InvalidInputError when the server needs an API key
    this process does not have: without asking it, nothing can be called unloaded."""
    ids: set[str] = set()
    if "runtime" in services.__dict__:  # only a runtime this process started has models
        ids |= {m.id for m in services.runtime.loaded()}
    from tui.serve.client import ServerError, find_server

    client = find_server(services.settings)
    if client is not None:
        try:
            ids |= {str(m.get("id")) for m in client.ps()}
        except ServerError as exc:
            raise ServerError(f"cannot ask the running server what it has loaded: {exc}",
                              exc.status, hint="stop it or try again") from None
    return ids


def busy_ids(services: Any) -> set[str]:
    """Models a download or an update is writing to: a job not done or cancelled that names
    the model (or updates it), or plans one of its files."""
    jobs = services.downloads.jobs
    ids: set[str] = set()
    for job in jobs.list():
        if job.state in ("done", "cancelled"):
            continue
        ids |= {i for i in (job.model_id, job.spec.update_of) if i}
    dests = jobs.dests_in_flight()
    if dests:
        for model in services.inventory.list_models():
            if any(f.path in dests for f in model.files):
                ids.add(model.id)
    return ids

