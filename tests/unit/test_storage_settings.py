"""Storage settings (``organize_by_kind``, ``low_disk_warning``) and the kind layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.errors import InvalidInputError
from tui.layout import hub_root_of, kind_folder
from tui.reclaim import low_disk_text
from tui.settings import Settings, load_settings, low_disk_threshold

GIB = 1 << 30


def test_organize_by_kind_is_on_for_users_and_can_be_turned_off(tmp_path: Path) -> None:
    cfg = tmp_path / "none.toml"
    assert load_settings(env={}, config_path=cfg).organize_by_kind is True
    off = load_settings(env={"MODELDECK_ORGANIZE_BY_KIND": "0"}, config_path=cfg)
    assert off.organize_by_kind is False
    # a Settings built directly (tests, embedding) keeps the flat layout
    assert Settings(models_dir=tmp_path, state_dir=tmp_path).organize_by_kind is False


@pytest.mark.parametrize(("value", "total", "threshold"), [
    ("10G", 500 * GIB, 10 * GIB), ("5%", 200 * GIB, 10 * GIB), ("0", 100, 0),
    (" 2.5% ", 1000, 25),
])
def test_low_disk_threshold(tmp_path: Path, value: str, total: int, threshold: int) -> None:
    setting = load_settings(env={"MODELDECK_LOW_DISK_WARNING": value},
                            config_path=tmp_path / "none.toml").low_disk_warning
    assert low_disk_threshold(setting, total) == threshold


@pytest.mark.parametrize("value", ["lots", "-1G", "150%", "nan%", "%"])
def test_bad_low_disk_warning_is_one_clear_error(tmp_path: Path, value: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        load_settings(env={"MODELDECK_LOW_DISK_WARNING": value},
                      config_path=tmp_path / "none.toml")
    assert "low_disk_warning" in str(err.value) and "\n" not in str(err.value)


def test_low_disk_text() -> None:
    assert low_disk_text("10G", 11 * GIB, 500 * GIB) is None
    assert "Low disk: 9.0 GiB free" in str(low_disk_text("10G", 9 * GIB, 500 * GIB))
    assert low_disk_text("5%", 9 * GIB, 500 * GIB) is not None
    assert low_disk_text("0", 0, 500 * GIB) is None
    assert low_disk_text("10G", 0, 0) is None  # no reading


def test_kind_folders_and_hub_roots() -> None:
    assert kind_folder("lora") == "lora" and kind_folder("projector") == "vlm"
    assert kind_folder("nonsense") == "other" and kind_folder(None) == "other"
    m = Path("/m")
    assert hub_root_of(m, "acme/x", ["/m/acme/x/a.gguf"]) == m / "acme/x"
    assert hub_root_of(m, "acme/x", ["/m/llm/acme/x/a.gguf", "/m/llm/acme/x/b/c"]) == \
        m / "llm/acme/x"
    assert hub_root_of(m, "acme/x", ["/m/llm/acme/x/a.gguf", "/m/acme/x/b"]) is None
    assert hub_root_of(m, "acme/x", []) is None
