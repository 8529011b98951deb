"""Bad settings are one line naming the key, the value and where it came from; unknown names
are a warning, not an error; nothing is created on the way."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tui.cli import main

from tests.support.checks import assert_one_line_error, run_modeldeck, tree_digest


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Models and state under ``tmp_path``, config file at ``tmp_path/config.toml``."""
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MODELDECK_CONFIG", str(tmp_path / "config.toml"))
    return tmp_path


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in this process, as a CompletedProcess for the shared checks."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["modeldeck", *args], code, out, err)


TOML_CASES = {
    "int-inf": ("concurrent_downloads = inf", "concurrent_downloads", "inf"),
    "int-nan": ("connections_per_host = nan", "connections_per_host", "nan"),
    "int-1e400": ("concurrent_downloads = 1e400", "concurrent_downloads", "inf"),
    "int-negative": ("max_loaded_models = -3", "max_loaded_models", "-3"),
    "int-overflow": ("connections_per_download = 99999999999999999999999",
                     "connections_per_download", "at most"),
    "int-fraction": ("concurrent_downloads = 2.5", "concurrent_downloads", "2.5"),
    "float-inf": ("stall_timeout = inf", "stall_timeout", "inf"),
    "float-nan": ("keep_alive_minutes = nan", "keep_alive_minutes", "nan"),
    "float-1e400": ("stall_timeout = 1e400", "stall_timeout", "inf"),
    "float-negative": ("keep_alive_minutes = -1.5", "keep_alive_minutes", "-1.5"),
    "rate-inf": ("bandwidth_limit = inf", "bandwidth_limit", "inf"),
    "rate-negative": ("bandwidth_limit = -1", "bandwidth_limit", "-1"),
    "rate-list": ("bandwidth_limit = [50]", "bandwidth_limit", "a list"),
    "path-list": ('models_dir = ["/a", "/b"]', "models_dir", "a list"),
    "path-number": ("models_dir = 5", "models_dir", "5"),
    "path-empty": ('state_dir = ""', "state_dir", "empty"),
    "path-nul": ('models_dir = "/tmp/a\\u0000b"', "models_dir", "NUL"),
    "path-inline-table": ('state_dir = { path = "/x" }', "state_dir", "a table"),
    "path-table-section": ('[models_dir]\npath = "/x"', "models_dir", "a table"),
    "extra-dirs-numbers": ("extra_dirs = [1, 2]", "extra_dirs", "1"),
    "bool-list": ("ascii = [true]", "ascii", "a list"),
    "choice-table": ("theme = { name = 'dark' }", "theme", "a table"),
    "section-not-table": ("modeldeck = 5", "modeldeck", "must be a table"),
    "syntax-error": ('models_dir = "/x"\nconcurrent_downloads = = 3', "line 2", "config.toml"),
}


@pytest.mark.parametrize("case", list(TOML_CASES))
def test_bad_config_value_is_one_line(home: Path, capsys: pytest.CaptureFixture[str],
                                      case: str) -> None:
    text, *needles = TOML_CASES[case]
    (home / "config.toml").write_text(text + "\n")
    before = tree_digest(home)
    proc = _main(capsys, "config")
    err = assert_one_line_error(proc, *needles)
    assert "config" in err
    assert tree_digest(home) == before


ENV_CASES = {
    "MODELDECK_CONCURRENT_DOWNLOADS": ["inf", "nan", "1e400", "-3", "9" * 40, "2.5"],
    "MODELDECK_STALL_TIMEOUT": ["inf", "nan", "1e400", "-1", "0"],
    "MODELDECK_KEEP_ALIVE_MINUTES": ["-1", "1e400", "nan"],
    "MODELDECK_BANDWIDTH_LIMIT": ["-5", "1e400", "9" * 400 + "T"],
    "MODELDECK_MODELS_DIR": ["", "   "],
    "MODELDECK_STATE_DIR": [""],
}


@pytest.mark.parametrize(
    ("var", "value"), [(k, v) for k, values in ENV_CASES.items() for v in values]
)
def test_bad_env_value_is_one_line(home: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    before = tree_digest(home)
    proc = _main(capsys, "config")
    key = var.removeprefix("MODELDECK_").lower()
    assert_one_line_error(proc, key, f"environment variable {var}")
    assert tree_digest(home) == before


def test_empty_command_line_path_is_refused(home: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    proc = _main(capsys, "--models-dir", "", "config")
    assert_one_line_error(proc, "models_dir", "command line", "current directory")


def test_unknown_names_warn_and_run(home: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (home / "config.toml").write_text('colour = "red"\nconcurrent_downloads = 3\n')
    monkeypatch.setenv("MODELDECK_MODEL_DIR", "/somewhere")
    proc = _main(capsys, "config", "--json")
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 2 and all(w.startswith("modeldeck: warning:") for w in warnings)
    assert "unknown setting 'colour'" in proc.stderr
    assert "MODELDECK_MODEL_DIR" in proc.stderr and "MODELDECK_MODELS_DIR?" in proc.stderr
    assert "/somewhere" not in proc.stderr  # names only: an env value may be a secret
    assert '"concurrent_downloads"' in proc.stdout


def test_bad_config_in_a_real_process(home: Path) -> None:
    (home / "config.toml").write_text("concurrent_downloads = inf\nstall_timeout = 5\n")
    before = tree_digest(home)
    assert_one_line_error(run_modeldeck("ls"), "concurrent_downloads", "inf", "config.toml")
    (home / "config.toml").write_text("")
    proc = run_modeldeck("config", env={"MODELDECK_STALL_TIMEOUT": "1e400"})
    assert_one_line_error(proc, "stall_timeout", "MODELDECK_STALL_TIMEOUT")
    before["config.toml"] = ("file", 0, tree_digest(home)["config.toml"][2])
    assert tree_digest(home) == before
