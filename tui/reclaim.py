"""``modeldeck reclaim``: free disk space by policy.

Candidates come in this order, until the bytes they really free (the safe delete path's own
count, :func:`tui.inventory_ops.plan_removal`) reach the target:

1. orphans: partial downloads whose job is gone (:func:`tui.maintenance.plan_prune`);
2. duplicates: a model whose every weight file is also held by another model (same sha256,
   or the same sampled hash), the copy used most recently being kept;
3. the least recently used models (never used: by install time).

Never a pinned model (``modeldeck pin``), a loaded one, or one a download or update writes to.
Models go through :func:`tui.inventory_ops.remove_model`, partials through ``prune``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tui import formatting as fmt
from tui.inventory_ops import plan_removal, remove_model
from tui.registration import WEIGHT_SUFFIXES
from tui.store import ModelRecord
from tui.store.pins import pinned_ids

ORPHAN, DUPLICATE, UNUSED = "orphan", "duplicate", "unused"


@dataclass(slots=True)
class Candidate:
    """One thing reclaim proposes: ``what`` is a model id or a path, ``size`` the bytes it
    really frees, ``why`` the reason it is proposed."""

    kind: str
    what: str
    size: int
    why: str
    model_id: str | None = None
    item: Any = None  # the prune item of an orphan
    done: bool = False
    note: str = ""


@dataclass(slots=True)
class Proposal:
    """The candidates that reach ``target`` (all of them when it cannot be met) and how much
    could be freed at most (``available``)."""

    target: int
    candidates: list[Candidate] = field(default_factory=list)
    available: int = 0

    @property
    def total(self) -> int:
        return sum(c.size for c in self.candidates)

    @property
    def met(self) -> bool:
        return self.total >= self.target


def plan_reclaim(services: Any, target: int, *, loaded: set[str], busy: set[str],
                 now: float | None = None) -> Proposal:
    """What freeing ``target`` bytes would delete; changes nothing."""
    from tui.maintenance import plan_prune

    settings, inventory = services.settings, services.inventory
    keep = pinned_ids(inventory.db) | set(loaded) | set(busy)
    every: list[Candidate] = [
        Candidate(ORPHAN, str(i.what), i.size, "partial download whose job is gone", item=i)
        for i in plan_prune(services) if i.kind == "partial" and i.size > 0
    ]
    models = inventory.list_models(status="installed")
    proposed: set[str] = set()
    for model, original, verified in _duplicates(services, models, keep):
        size = plan_removal(settings, inventory, model.id).freed_bytes
        how = "same sha256" if verified else "same size and sampled bytes"
        if size > 0:
            every.append(Candidate(DUPLICATE, model.id, size, f"a copy of {original}, {how}",
                                   model_id=model.id))
            proposed.add(model.id)
    rest = [m for m in models if m.id not in keep and m.id not in proposed]
    rest.sort(key=lambda m: (m.last_used_at or m.installed_at or 0, m.id))
    for model in rest:
        plan = plan_removal(settings, inventory, model.id)
        if plan.forget_only or plan.freed_bytes <= 0:
            continue
        why = f"last used {fmt.ago(model.last_used_at, now)}" if model.last_used_at else \
            f"never used, installed {fmt.ago(model.installed_at, now)}"
        every.append(Candidate(UNUSED, model.id, plan.freed_bytes, why, model_id=model.id))
    proposal = Proposal(target, available=sum(c.size for c in every))
    for c in every:
        if proposal.met:
            break
        proposal.candidates.append(c)
    return proposal


def _duplicates(services: Any, models: list[ModelRecord], keep: set[str]
                ) -> list[tuple[ModelRecord, str, bool]]:
    """(model, the model kept, whether sha256 says so) for each model all of whose weight
    files another model holds too. In each group of copies the one kept is a model that must
    stay (pinned, loaded, busy), else the one used (or installed) most recently."""
    from tui.discovery import Scanner

    groups = Scanner(services.settings, services.inventory).find_duplicates(models)
    owner = {f.path: m for m in models for f in m.files}
    keepers: set[str] = set()
    copy_of: dict[str, dict[str, tuple[str, bool]]] = {}  # id -> {path: (kept id, verified)}
    for group in groups:
        held = [owner[p] for p in group.paths if p in owner]
        if len({m.id for m in held}) < 2:
            continue
        kept = max(held, key=lambda m: (m.id in keep, m.last_used_at or 0,
                                        m.installed_at or 0, m.id))
        keepers.add(kept.id)
        for path in group.paths:
            m = owner.get(path)
            if m is not None and m.id != kept.id:
                copy_of.setdefault(m.id, {})[path] = (kept.id, group.verified)
    out = []
    for model in models:
        copies = copy_of.get(model.id, {})
        weights = [f.path for f in model.files if f.path.lower().endswith(WEIGHT_SUFFIXES)]
        if model.id in keep or model.id in keepers or not weights or \
                not all(p in copies for p in weights):
            continue
        out.append((model, copies[weights[0]][0], all(copies[p][1] for p in weights)))
    return out


def reclaim(services: Any, proposal: Proposal, *, loaded: set[str], busy: set[str]
            ) -> list[Candidate]:
    """Delete the proposal's candidates through the safe paths, each checked again (a model
    pinned, loaded or busy since stays); ``done``/``size`` say what went, ``note`` why not."""
    from tui.maintenance import prune

    settings, inventory = services.settings, services.inventory
    keep = pinned_ids(inventory.db) | set(loaded) | set(busy)
    for c in proposal.candidates:
        if c.kind == ORPHAN:
            [item] = prune(services, [c.item])
            c.done, c.size, c.note = item.done, item.size, item.note
            continue
        if c.model_id in keep:
            c.size, c.note = 0, "pinned, loaded or in use now; kept"
            continue
        if inventory.get_model(str(c.model_id)) is None:
            c.size, c.note = 0, "gone already"
            continue
        plan = remove_model(settings, inventory, str(c.model_id))
        c.done, c.size = True, plan.freed_bytes
        if plan.refused:
            c.note = f"{len(plan.refused)} path(s) kept: {plan.refused[0].note}"
    return proposal.candidates


# -- the dashboard's low-disk warning ------------------------------------------------------


def bytes_short(setting: str, free: int, total: int) -> int:
    """How many bytes the models volume (``free`` of ``total``) is below the
    ``low_disk_warning`` threshold (0 or less: not low)."""
    from tui.settings import low_disk_threshold

    return low_disk_threshold(setting, total) - free


def low_disk_text(setting: str, free: int, total: int) -> str | None:
    """The warning line when the volume is low, else None."""
    if total <= 0 or bytes_short(setting, free, total) <= 0:
        return None
    return f"Low disk: {fmt.size(free)} free (warning below {setting})"


def propose(services: Any, target: int) -> Proposal:
    """:func:`plan_reclaim` with the models in use now (loaded here or in the running server,
    being downloaded) kept. Blocking."""
    from tui.in_use import busy_ids, loaded_ids

    return plan_reclaim(services, target, loaded=loaded_ids(services), busy=busy_ids(services))


def carry_out(services: Any, proposal: Proposal) -> list[Candidate]:
    """:func:`reclaim` with the models in use checked again now. Blocking."""
    from tui.in_use import busy_ids, loaded_ids

    return reclaim(services, proposal, loaded=loaded_ids(services), busy=busy_ids(services))


def describe(proposal: Proposal) -> list[str]:
    """One line per candidate (kind, bytes, what, why), as ``modeldeck reclaim`` prints."""
    return [f"{c.kind:<10} {fmt.size(c.size):>10}  {c.what}  ({c.why})"
            for c in proposal.candidates]
