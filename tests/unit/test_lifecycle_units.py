"""Pure pieces of the job lifecycle and updates: file names and ids from URLs, the short
reason of a failed try, the status phrase of an event, the table's update marker, and the
checks on an update journal read back from the inventory."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import httpx
import pytest

from tui.app.views import UPDATE_LABEL, JobView, ModelRow, job_speed_text, status_label
from tui.download.errors import failure_reason
from tui.download.progress import DownloadEvent
from tui.download.sources import url_filename
from tui.errors import InvalidInputError
from tui.safe_paths import MAX_FILE_NAME_BYTES, check_name_bytes, fit_filename, slugify
from tui.store.history import _kept_files
from tui.updates import _valid_pending


@pytest.mark.parametrize(("url", "name"), [
    ("https://x/m/%E6%A8%A1%E5%9E%8B-Q4_K_M.gguf", "模型-Q4_K_M.gguf"),
    ("https://x/m/%EF%BC%B1%EF%BC%94.gguf?download=1", "Q4.gguf"),  # NFKC: fullwidth
    ("https://x/m/a%2Fb.gguf", "a_b.gguf"),
    ("https://x/m/evil%1B%5B2J%E2%80%AE.gguf", "evil_[2J_.gguf"),
    ("https://x/m/..", "download"),
    ("https://x/", "download"),
    ("https://x/m/%FF%FE.gguf", "\ufffd\ufffd.gguf"),
])
def test_url_file_names(url: str, name: str) -> None:
    assert url_filename(url) == name


def test_long_names_keep_their_extension_within_250_bytes() -> None:
    for raw in ("a" * 300 + ".gguf", "模" * 120 + "-Q4_K_M.gguf",
                "x" * 400 + "-00002-of-00003.gguf", "é" * 200):
        name = fit_filename(raw)
        assert len(name.encode()) <= MAX_FILE_NAME_BYTES
        assert len((name + ".part").encode()) <= 255
        assert name.encode().decode() == name  # cut on a character boundary
        if "." in raw:
            assert name.endswith(raw[raw.index("-0") if "-0000" in raw else raw.rindex("."):])
    assert fit_filename("short.gguf") == "short.gguf"


def test_hub_names_longer_than_the_file_system_allows_are_refused() -> None:
    check_name_bytes("dir/" + "a" * 250)
    with pytest.raises(InvalidInputError, match="251 bytes long"):
        check_name_bytes("dir/" + "a" * 251)


@pytest.mark.parametrize(("text", "slug"), [
    ("模型-Q4_K_M", "模型-q4_k_m"),
    ("Ｑ４ Model", "q4-model"),
    ("Модель v2", "модель-v2"),
    ("हिन्दी मॉडल", "हिन्दी-मॉडल"),
    ("model.gguf", "model.gguf"),
    ("a  --  b", "a-b"),
])
def test_slugify_keeps_readable_unicode(text: str, slug: str) -> None:
    assert slugify(text) == slug


def test_slugify_falls_back_to_something_readable() -> None:
    assert slugify("🦙🦙", fallback="example.com") == "example.com"
    assert slugify("!!!") == "model"
    assert slugify("x" * 200) == "x" * 80


class _Status(Exception):
    status = 503


def test_failure_reasons_are_short_and_say_what_happened() -> None:
    assert failure_reason(httpx.ConnectError("[Errno 111] Connection refused")) == (
        "connection refused")
    assert failure_reason(httpx.ConnectError("[Errno -2] Name or service not known")) == (
        "host not found")
    assert failure_reason(httpx.ConnectTimeout("slow")) == "connecting timed out"
    assert failure_reason(httpx.ReadTimeout("x")) == "no data (stalled)"
    assert failure_reason(httpx.RemoteProtocolError("response ended early")) == (
        "connection dropped")
    assert failure_reason(OSError(errno.ECONNRESET, "reset")) == "connection reset"
    assert failure_reason(_Status()) == "HTTP 503"
    assert failure_reason(ValueError("x")) == "ValueError"


def test_event_status_phrase() -> None:
    event = DownloadEvent(job_id="j", name="n", state="connecting", done_bytes=0,
                          total_bytes=None, speed=0.0, eta=None, attempt=3,
                          detail="connection refused")
    assert event.status == "connecting, try 3, connection refused"
    assert event.to_dict()["attempt"] == 3
    quiet = DownloadEvent(job_id="j", name="n", state="downloading", done_bytes=1,
                          total_bytes=2, speed=1.0, eta=1.0)
    assert quiet.status == "downloading"


def test_dashboard_shows_update_marker_and_retries() -> None:
    row = ModelRow(key="model:x", name="x", status="installed", model_id="x", update=True)
    assert status_label(row) == UPDATE_LABEL
    row.status = "loaded"
    assert status_label(row) == "loaded"  # what is happening now comes first
    view = JobView(job_id="j", name="n", state="connecting", retry="try 2, connection refused")
    assert job_speed_text(view) == "try 2, connection refused"


def test_damaged_kept_file_lists_read_as_empty() -> None:
    good = [{"path": "/m/a", "kept": "/m/.modeldeck-prev/c/a", "size": 3}]
    assert len(_kept_files(json.dumps(good))) == 1
    for bad in ("nope{", "[1]", json.dumps([{"path": "/m/a", "kept": 3, "size": 1}]),
                json.dumps([{**good[0], "size": True}]), json.dumps({"a": 1}), None, 7):
        assert _kept_files(bad) == []


def test_update_journals_must_stay_in_the_models_own_folders() -> None:
    root = Path("/models/acme/st")
    swap = {"final": str(root / "w.safetensors"),
            "staged": str(root / ".modeldeck-update/bbbbbbbbbbbb/w.safetensors"),
            "kept": str(root / ".modeldeck-prev/aaaaaaaaaaaa/w.safetensors"),
            "size": 10, "sha256": "0" * 64}
    good = {"commit": "b" * 40, "swaps": [swap],
            "cleanup": [str(root / ".modeldeck-update/bbbbbbbbbbbb")]}
    assert _valid_pending(good, root)
    for change in ({"final": "/etc/passwd"}, {"final": str(root / "../other/w")},
                   {"staged": str(root / "w2")}, {"kept": "/tmp/k"}, {"size": -1},
                   {"sha256": "zz"}, {"final": 5}):
        assert not _valid_pending({**good, "swaps": [{**swap, **change}]}, root), change
    assert not _valid_pending({**good, "commit": "main"}, root)
    assert not _valid_pending({**good, "cleanup": ["/"]}, root)
