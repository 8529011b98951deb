"""Settings: defaults < TOML < env < overrides, with sources; nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.errors import InvalidInputError
from tui.settings import load_settings, parse_rate


def test_defaults_use_user_dirs_and_write_nothing(tmp_path: Path) -> None:
    s = load_settings(env={"MODELDECK_WORKSPACE_ROOT": str(tmp_path / "absent")},
                      config_path=tmp_path / "none.toml")
    assert s.models_dir.name == "models"
    assert s.source_of("models_dir") == "default"
    assert s.concurrent_downloads == 2 and s.bandwidth_limit == 0
    assert not s.models_dir.exists() and not s.state_dir.exists()
    assert s.config_path is None


def test_workspace_pod_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "workspace"
    ws.mkdir()
    monkeypatch.setenv("MODELDECK_WORKSPACE_ROOT", str(ws))
    s = load_settings(env={}, config_path=tmp_path / "none.toml")
    assert s.models_dir == ws / "models"
    assert s.state_dir == ws / ".modeldeck"
    assert s.db_path == ws / ".modeldeck" / "modeldeck.db"


def test_precedence_file_env_override(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        'models_dir = "/m/file"\nconcurrent_downloads = 4\nbandwidth_limit = "50M"\n'
        'extra_dirs = ["/a", "/b"]\ntheme = "light"\n'
    )
    env = {"MODELDECK_CONCURRENT_DOWNLOADS": "3", "MODELDECK_KEEP_ALIVE_MINUTES": "0"}
    s = load_settings(env=env, config_path=cfg, overrides={"models_dir": "/m/cli"})
    assert s.models_dir == Path("/m/cli") and s.source_of("models_dir") == "command line"
    assert s.concurrent_downloads == 3
    assert s.source_of("concurrent_downloads") == "env MODELDECK_CONCURRENT_DOWNLOADS"
    assert s.bandwidth_limit == 50 * 2**20
    assert s.source_of("bandwidth_limit") == f"file {cfg}"
    assert s.extra_dirs == (Path("/a"), Path("/b"))
    assert s.keep_alive_minutes == 0
    assert s.theme == "light"
    assert s.config_path == cfg


def test_serving_settings(tmp_path: Path) -> None:
    s = load_settings(env={}, config_path=tmp_path / "none.toml")
    assert (s.parallel_requests, s.queue_limit) == (4, 32)
    env = {"MODELDECK_PARALLEL_REQUESTS": "8", "MODELDECK_QUEUE_LIMIT": "0"}
    s = load_settings(env=env, config_path=tmp_path / "none.toml")
    assert (s.parallel_requests, s.queue_limit) == (8, 0)  # 0: no waiting, refuse at once


def test_server_settings(tmp_path: Path) -> None:
    s = load_settings(env={}, config_path=tmp_path / "none.toml")
    assert (s.serve_host, s.serve_port, s.serve_api_key_env) == (
        "127.0.0.1", 8765, "MODELDECK_SERVE_API_KEY")
    assert s.serve_api_key_file is None and s.serve_cors_origins == ()
    assert not s.serve_with_dashboard
    cfg = tmp_path / "c.toml"
    cfg.write_text('serve_cors_origins = ["http://localhost:3000/", "https://app.example"]\n'
                   'serve_api_key_file = "~/key"\nserve_host = "[::1]"\n')
    env = {"MODELDECK_SERVE_PORT": "0", "MODELDECK_SERVE_API_KEY": "not-a-setting-no-warning"}
    s = load_settings(env=env, config_path=cfg)
    assert s.serve_cors_origins == ("http://localhost:3000", "https://app.example")
    assert s.serve_api_key_file == Path.home() / "key" and s.serve_host == "::1"
    assert s.serve_port == 0 and not s.warnings


def test_config_env_var_points_at_file(tmp_path: Path) -> None:
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text("[modeldeck]\nmax_loaded_models = 2\n")
    s = load_settings(env={"MODELDECK_CONFIG": str(cfg)})
    assert s.max_loaded_models == 2


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MODELDECK_CONCURRENT_DOWNLOADS": "zero"}, "MODELDECK_CONCURRENT_DOWNLOADS"),
        ({"MODELDECK_CONCURRENT_DOWNLOADS": "0"}, "at least 1"),
        ({"MODELDECK_BANDWIDTH_LIMIT": "fast"}, "bandwidth_limit"),
        ({"MODELDECK_THEME": "pink"}, "dark, light"),
        ({"MODELDECK_SCAN_HF_CACHE": "maybe"}, "boolean"),
        ({"MODELDECK_PARALLEL_REQUESTS": "0"}, "MODELDECK_PARALLEL_REQUESTS"),
        ({"MODELDECK_QUEUE_LIMIT": "-1"}, "MODELDECK_QUEUE_LIMIT"),
        ({"MODELDECK_SERVE_HOST": "my host"}, "MODELDECK_SERVE_HOST"),
        ({"MODELDECK_SERVE_PORT": "70000"}, "at most 65535"),
        ({"MODELDECK_SERVE_API_KEY_ENV": "MY-KEY"}, "environment variable name"),
        ({"MODELDECK_SERVE_CORS_ORIGINS": "evil.example"}, "http(s)://host"),
        ({"MODELDECK_SERVE_MAX_TOKENS": "0"}, "MODELDECK_SERVE_MAX_TOKENS"),
        ({"MODELDECK_SERVE_WITH_DASHBOARD": "sometimes"}, "boolean"),
    ],
)
def test_bad_env_values_name_the_variable(tmp_path: Path, env: dict, needle: str) -> None:
    with pytest.raises(InvalidInputError) as exc:
        load_settings(env=env, config_path=tmp_path / "none.toml")
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("models_dir = \n")
    with pytest.raises(InvalidInputError, match="cannot read config file"):
        load_settings(env={}, config_path=cfg)
    cfg.write_text("colour = 'red'\n")  # unknown keys warn, they do not stop ModelDeck
    s = load_settings(env={}, config_path=cfg)
    assert any("unknown setting 'colour'" in w for w in s.warnings)


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("50M", 50 * 2**20), ("1.5G", int(1.5 * 2**30)), ("800k/s", 800 * 1024),
     ("2GiB", 2 * 2**30), (1000, 1000)],
)
def test_parse_rate(text: str, value: int) -> None:
    assert parse_rate(text) == value


def test_parse_rate_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        parse_rate("lots")
