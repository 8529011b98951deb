"""Plain tests of the dashboard's view models (no Textual)."""

from __future__ import annotations

import subprocess
import sys

from tui.app.views import (
    COLUMN_KEYS,
    COLUMNS,
    FLEX_ENOUGH,
    FLEX_FLOOR,
    JobView,
    MetricsView,
    ModelRow,
    ascii_sparkline,
    build_rows,
    fit_columns,
    format_ago,
    format_params,
    format_size,
    job_speed_text,
    metrics_text,
    row_cells,
    row_status_for_job,
    select_rows,
    text_bar,
)

from tests.support.app import NOW, fixed_entries, installed_record


def test_views_do_not_import_textual() -> None:
    code = "import sys, tui.app.views, tui.app.wiring; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_installed_model_takes_over_its_catalog_row() -> None:
    rows = build_rows(fixed_entries(), [installed_record()])
    keys = [r.key for r in rows]
    assert keys.count("entry:llama-3.1-8b-instruct-gguf") == 1
    llama = rows[0]
    assert llama.status == "installed"
    assert llama.model_id == "llama-3.1-8b-q4"
    assert llama.name == "Llama 3.1 8B Instruct"
    assert llama.quants == ("Q4_K_M", "Q8_0")
    assert {r.status for r in rows[1:]} == {"available"}


def test_uncatalogued_and_second_install_get_own_rows() -> None:
    records = [
        installed_record(),
        installed_record("llama-q8", name="llama-q8"),
        installed_record("local-x", catalog_id=None, name="my-finetune"),
    ]
    rows = build_rows(fixed_entries(), records)
    keys = {r.key for r in rows}
    assert {"model:llama-q8", "model:local-x"} <= keys
    assert len(rows) == len(fixed_entries()) + 2


def test_cells_and_formatters() -> None:
    row = build_rows(fixed_entries(), [installed_record()])[0]
    cells = row_cells(row, NOW)
    assert cells == ("installed", "llama-3.1-8b-q4", "Llama 3.1 8B Instruct", "llm", "", "gguf",
                     "Q4_K_M", "8.0B", "4.6Gi", "", "41.7", "3h ago")
    assert row.cli_id == "llama-3.1-8b-q4"  # the installed model's id ...
    available = build_rows(fixed_entries(), [])[0]
    assert row_cells(available, NOW)[1] == available.cli_id == "llama-3.1-8b-instruct-gguf"
    assert format_size(0) == "" and format_size(512) == "512B" and format_size(1 << 30) == "1.0Gi"
    assert format_params(494_000_000) == "494M"
    assert format_ago(None, NOW) == "" and format_ago(NOW - 30, NOW) == "now"
    assert format_ago(NOW - 3 * 86400, NOW) == "3d ago"
    downloading = ModelRow(key="k", name="x", status="downloading", progress=0.42)
    assert row_cells(downloading, NOW)[0] == "downloading 42%"


def test_fit_columns_hides_by_priority_and_gives_id_the_rest() -> None:
    full = sum(c.width + 2 for c in COLUMNS)  # every column at its least width
    assert dict(fit_columns(full)) == {c.key: c.width for c in COLUMNS}
    wide = dict(fit_columns(full + 30))  # ID up to FLEX_ENOUGH, Name the rest
    assert wide["id"] == FLEX_ENOUGH and wide["name"] == 20 + 30 - (FLEX_ENOUGH - 24)
    hidden_at: dict[str, int] = {}  # column -> widest width at which it is hidden
    for width in range(full, 30, -1):
        layout = fit_columns(width)
        keys = [key for key, _ in layout]
        assert keys == [k for k in COLUMN_KEYS if k in keys]  # table order kept
        ident = dict(layout)["id"]
        if sum(w + 2 for _, w in layout) <= width:
            assert sum(w + 2 for _, w in layout) == width  # ID takes every free cell
            assert ident >= 24 or len(keys) == 5
        for key in set(COLUMN_KEYS) - set(keys):
            hidden_at.setdefault(key, width)
    # Name goes first (the id says which model), then Base, Used, tok/s, Kind, Params, Format.
    order = sorted(hidden_at, key=lambda k: -hidden_at[k])
    assert order == ["name", "base", "last_used", "tps", "kind", "params", "format"]
    assert [k for k, _ in fit_columns(10)] == ["status", "id", "quant", "size", "fit"]
    assert dict(fit_columns(10))["id"] == FLEX_FLOOR
    narrow = {"status": 15, "id": 26, "format": 4, "quant": 6, "params": 6, "size": 5, "fit": 4}
    assert dict(fit_columns(80)) == narrow


def test_select_rows_filters_and_sorts() -> None:
    rows = build_rows(fixed_entries(), [installed_record()])
    assert [r.name for r in select_rows(rows, "qwen")] == ["Qwen2.5 7B Instruct"]
    assert [r.name for r in select_rows(rows, "q4_k_m gem")] == ["Gemma 2 2B it"]
    # NFKC and case folding on both sides: full-width and upper case find the same rows.
    assert [r.name for r in select_rows(rows, "ＱＷＥＮ")] == ["Qwen2.5 7B Instruct"]
    assert [r.name for r in select_rows(rows, "ｑｗｅｎ　Ｑ４_ｋ")] == ["Qwen2.5 7B Instruct"]
    assert [r.key for r in select_rows(rows, "llama-3.1-8b-q4")] == [rows[0].key]  # the id
    assert [r.status for r in select_rows(rows, status_filter="installed")] == ["installed"]
    by_size = [r.name for r in select_rows(rows, sort_column="size")]
    assert by_size[0] == "Gemma 2 2B it" and by_size[-1] == "Phi 3.5 mini Instruct"
    assert select_rows(rows, sort_column="size", reverse=True)[0].name == "Phi 3.5 mini Instruct"


def test_job_and_metrics_text() -> None:
    view = JobView("j", "x", "downloading", 50, 100, 2_000_000, 125)
    assert view.fraction == 0.5 and view.active
    assert job_speed_text(view) == "1.9Mi/s ETA 2m05s"
    assert job_speed_text(JobView("j", "x", "failed", error="disk full")) == "disk full"
    assert row_status_for_job(JobView("j", "x", "stalled")) == "downloading"
    assert row_status_for_job(JobView("j", "x", "done")) == "installed"
    assert not JobView("j", "x", "paused").active
    assert metrics_text(MetricsView(210, 42.0, 128)) == "TTFT 210 ms | 42.0 tok/s | 128 tokens"


def test_ascii_bars_have_no_block_glyphs() -> None:
    assert text_bar(0.5, 8, ascii=True) == "####...."
    assert text_bar(None, 3, ascii=True) == "???"
    spark = ascii_sparkline([0, 50, 100], 5)
    assert spark.isascii() and len(spark) == 5
    assert text_bar(1.0, 4) == "████"


def test_launch_module_imports_textual_lazily() -> None:
    code = "import sys, tui.cli.launch; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_styles_dir_points_at_the_tcss() -> None:
    from tui.app.paths import styles_dir

    assert (styles_dir() / "app.tcss").is_file()


def test_launch_app_builds_from_context(tmp_path, monkeypatch) -> None:
    from tui.app.app import ModelDeckApp
    from tui.cli.context import Context
    from tui.cli.launch import launch_app

    ran: list[ModelDeckApp] = []
    monkeypatch.setattr(ModelDeckApp, "run", lambda self, **kw: ran.append(self))
    ctx = Context({"models_dir": str(tmp_path / "m"), "state_dir": str(tmp_path / "s")})
    try:
        assert launch_app(ctx) == 0
    finally:
        ctx.close()
    assert ran and ran[0].services is ctx.services


def test_job_view_carries_the_event_warning() -> None:
    from tui.app.wiring import job_view_from
    from tui.download import DownloadEvent

    event = DownloadEvent("j", "Qwen", "downloading", 5, 10, 1.0, 5.0, warning="on nfs4")
    view = job_view_from(event)
    assert view.warning == "on nfs4" and view.fraction == 0.5
