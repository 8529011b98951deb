"""Removal (files and row together, crash-safe) and start-up reconciliation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.discovery import Scanner
from tui.errors import NotFoundError
from tui.inventory_ops import plan_removal, reconcile, remove_model
from tui.store import ModelFile, ModelRecord

from tests.support.gguf import write_gguf
from tests.support.safetensors import write_safetensors_folder


def _scan(settings, services) -> dict[str, ModelRecord]:
    Scanner(settings, services.inventory).scan()
    return {Path(m.path).name: m for m in services.inventory.list_models()}


def test_remove_deletes_files_and_row(services, settings) -> None:
    g = write_gguf(settings.models_dir / "a" / "a.gguf")
    st = write_safetensors_folder(settings.models_dir / "acme" / "st")
    models = _scan(settings, services)
    plan = plan_removal(settings, services.inventory, models["a.gguf"].id)
    assert plan.freed_bytes == g.stat().st_size and not plan.forget_only
    remove_model(settings, services.inventory, models["a.gguf"].id)
    assert not g.exists() and services.inventory.get_model(models["a.gguf"].id) is None
    remove_model(settings, services.inventory, models["st"].id)
    # Its recorded files go; the folder was found by a scan, not made by ModelDeck: it stays.
    assert st.is_dir() and list(st.iterdir()) == []
    with pytest.raises(NotFoundError):
        remove_model(settings, services.inventory, "nope")


def test_crash_between_mark_and_delete_is_finished_at_start(services, settings) -> None:
    g = write_gguf(settings.models_dir / "b.gguf")
    model = _scan(settings, services)["b.gguf"]
    services.inventory.set_status(model.id, "deleting")  # ... and the process died here
    report = reconcile(settings, services.inventory)
    assert report.finished_deletes == [model.id]
    assert not g.exists() and services.inventory.get_model(model.id) is None


def test_models_outside_managed_folders_are_only_forgotten(services, settings, tmp_path) -> None:
    outside = write_gguf(tmp_path / "elsewhere" / "keep.gguf")
    services.inventory.upsert_model(ModelRecord(
        id="keep", name="keep", format="gguf", path=str(outside), source="local",
        files=[ModelFile(str(outside), outside.stat().st_size)],
    ))
    plan = remove_model(settings, services.inventory, "keep")
    assert plan.forget_only and outside.exists()
    assert services.inventory.get_model("keep") is None


def test_reconcile_marks_missing_and_restores(services, settings, tmp_path) -> None:
    g = write_gguf(settings.models_dir / "c.gguf")
    model = _scan(settings, services)["c.gguf"]
    moved = tmp_path / "moved.gguf"
    g.rename(moved)
    assert reconcile(settings, services.inventory).marked_missing == [model.id]
    assert services.inventory.require_model(model.id).status == "missing"
    moved.rename(g)
    assert reconcile(settings, services.inventory).restored == [model.id]
    assert services.inventory.require_model(model.id).status == "installed"
