"""The model list's Kind column: what each row is for, matched by the filter, sortable, and the
first column after tok/s to give way when the table is narrow."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tui.app.views import COLUMN_KEYS, build_rows, row_cells, select_rows, sort_key
from tui.metadata.types import ModelMetadata

from tests.support.app import (
    NOW,
    fixed_entries,
    installed_record,
    make_app,
    make_services,
    wait_ready,
)

KIND = COLUMN_KEYS.index("kind")


def _records():
    lora = replace(installed_record("detail-xl", catalog_id=None, name="detail-xl"),
                   format="safetensors", path="/models/loras/detail-xl.safetensors",
                   kind="lora", metadata=ModelMetadata(format="safetensors", kind="lora"))
    t5 = replace(installed_record("t5xxl", catalog_id=None, name="t5xxl"),
                 format="safetensors", path="/models/clip/t5xxl.safetensors",
                 kind="text-encoder")
    old = installed_record()  # made without a kind (as rows before kinds): from its metadata
    return [old, lora, t5]


def test_rows_show_and_filter_by_kind() -> None:
    rows = build_rows(fixed_entries(), _records())
    by_id = {r.cli_id: r for r in rows}
    assert row_cells(by_id["detail-xl"], NOW)[KIND] == "lora"
    assert row_cells(by_id["t5xxl"], NOW)[KIND] == "text-enc"  # fits the column
    assert row_cells(by_id["llama-3.1-8b-q4"], NOW)[KIND] == "llm"
    assert [r.cli_id for r in select_rows(rows, "lora")] == ["detail-xl"]
    assert [r.cli_id for r in select_rows(rows, "text-encoder")] == ["t5xxl"]
    assert len(select_rows(rows, "llm")) == len(fixed_entries())  # every catalog LLM
    ordered = sorted(rows, key=sort_key("kind"))
    assert [r.kind for r in ordered][:2] == ["llm", "llm"] and ordered[-1].kind == "text-encoder"


async def test_the_list_shows_kinds_and_the_filter_finds_them(tmp_path: Path) -> None:
    services = make_services(tmp_path, records=_records())
    app = make_app(services)
    try:
        async with app.run_test(size=(170, 40)) as pilot:
            await wait_ready(app, pilot)
            table = app.model_table
            assert "kind" in [k for k, _ in table.shown_columns]
            line = table.render_line(table.get_row_index("model:detail-xl") + 1).text
            assert " lora " in line
            await pilot.press("slash", *"lora")
            assert table.visible_keys == ["model:detail-xl"]
    finally:
        services.close()
