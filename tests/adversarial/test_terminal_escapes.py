"""Nothing from a file, a server or a model reaches the terminal raw.

Hostile strings (CSI clear-screen, OSC 52 clipboard write, OSC 8 hyperlink, BEL, C1 CSI, a
bidi override, Rich markup) are put in a GGUF's name, architecture, chat template and file
name, in a safetensors folder's ``config.json`` and name, in a custom catalog entry, in a
download's file name, and in the text an OpenAI-compatible server streams. The real CLI runs
on pipes and on a pseudo-terminal; the dashboard renders under Pilot. Every byte shown must
be free of control characters, with the hostile text still visible (escaped, markup literal).
"""

from __future__ import annotations

import html
import json
import os
import pty
import re
import select
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tui.terminal_text import CleanWriter, clean, clean_line

from tests.adversarial.hostile_openai import HOSTILE, HostileServer
from tests.support.checks import REPO, assert_no_control_chars, run_modeldeck, tree_digest
from tests.support.gguf import write_gguf
from tests.support.safetensors import write_safetensors_folder

pytestmark = pytest.mark.timeout(120)

ESCAPED = "\\x1b[2J\\x1b]52;c;"  # how the start of HOSTILE shows once cleaned
IN_NAME = HOSTILE.replace("/", "\u2215")  # HOSTILE as a file name ("/" is a separator)


# -- the sanitizer ----------------------------------------------------------------------------


def test_clean_escapes_every_control_and_keeps_the_rest() -> None:
    text = "ok é 日本 \x00\x07\x08\x1b[2J\x7f\x85\x9b\u202e\u2066\u2028\udc9b\r\n\t end"
    line = clean_line(text)
    assert_no_control_chars(line)
    assert "\n" not in line and "\t" not in line
    assert line == ("ok é 日本 \\x00\\x07\\x08\\x1b[2J\\x7f\\x85\\x9b\\u202e\\u2066\\u2028"
                    "\\udc9b\\r\\n\\t end")
    assert clean(text).endswith("\\r\n\t end")  # multi-line text keeps \n and \t
    line.encode("utf-8")  # no lone surrogate left: printing cannot fail
    assert clean_line("x" * 50, 10) == "x" * 9 + "…"
    assert clean_line("[bold]plain[/]") == "[bold]plain[/]"  # markup is the dashboard's job


def test_clean_is_the_same_chunk_by_chunk() -> None:
    """An escape sequence split across streamed deltas is caught: cleaning is per character."""
    whole = "a\x1b]52;c;SGVsbG8=\x07b\x1b[2Jc"
    for cut in range(len(whole) + 1):
        assert clean(whole[:cut]) + clean(whole[cut:]) == clean(whole)


def test_clean_writer_cleans_whatever_is_written() -> None:
    class Sink:
        def __init__(self) -> None:
            self.parts: list[str] = []

        def write(self, text: str) -> int:
            self.parts.append(text)
            return len(text)

    sink = Sink()
    writer = CleanWriter(sink)  # type: ignore[arg-type]
    print("x\x1b[2J", HOSTILE, file=writer)  # type: ignore[arg-type]
    assert_no_control_chars("".join(sink.parts))
    assert writer.raw is sink


# -- the CLI, on pipes and on a terminal -------------------------------------------------------


@pytest.fixture
def hostile_home(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Models with hostile metadata and names in a managed models dir; the CLI's env."""
    models, state = tmp_path / "models", tmp_path / "state"
    write_gguf(models / f"evil{IN_NAME}.gguf", name=f"name{HOSTILE}", chat_template=HOSTILE)
    write_gguf(models / "arch.gguf", arch=f"llama{HOSTILE}", name="plain")
    folder = write_safetensors_folder(models / f"st{IN_NAME}")
    config = json.loads((folder / "config.json").read_text())
    config.update(_name_or_path=f"cfg{HOSTILE}", model_type=f"llama{HOSTILE}")
    (folder / "config.json").write_text(json.dumps(config))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / f"corrupt{IN_NAME}.gguf").write_bytes(b"GGUF" + b"\xff" * 60)
    state.mkdir()
    yield {
        "MODELDECK_MODELS_DIR": str(models),
        "MODELDECK_STATE_DIR": str(state),
        "MODELDECK_CONFIG": str(tmp_path / "none.toml"),
        "MODELDECK_SCAN_HF_CACHE": "0",
        "OUTSIDE": str(outside),
    }


def run_on_pty(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """``python -m tui ARGS`` with stdout and stderr on a pseudo-terminal; (exit code, output).

    Output post-processing is off on the terminal, so a ``\\r`` in the output is one the
    program wrote (a tty would otherwise turn every ``\\n`` into ``\\r\\n``).
    """
    full = dict(os.environ)
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH")]))
    master, slave = pty.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    proc = subprocess.Popen([sys.executable, "-m", "tui", *args], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=full, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


# What a Rich progress display writes on a terminal by itself: CSI sequences (colours, cursor,
# erase line) and carriage returns. Data never contains a raw ESC, so removing these leaves any
# hostile C1 or other control character in place.
RICH_OWN = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def both_ways(*args: str, env: dict[str, str], progress: bool = False
              ) -> tuple[int, str, str]:
    """Run on pipes and on a terminal; both clean; (exit code, stdout, stderr) of the pipes.

    ``progress``: the command draws a Rich progress display on the terminal (its own
    sequences are set aside first).
    """
    proc = run_modeldeck(*args, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert_no_control_chars(proc.stdout)
    assert_no_control_chars(proc.stderr)
    code, shown = run_on_pty(*args, env=env)
    assert code == proc.returncode, shown
    assert "Traceback" not in shown, shown
    assert_no_control_chars(RICH_OWN.sub("", shown) if progress else shown)
    return proc.returncode, proc.stdout, proc.stderr


def test_scan_ls_info_catalog_show_hostile_strings_escaped(
    hostile_home: dict[str, str], tmp_path: Path
) -> None:
    env = hostile_home
    before = tree_digest(tmp_path, skip=(Path(env["MODELDECK_STATE_DIR"]),))
    code, out, _ = both_ways("scan", env=env)
    assert code == 0 and "3 models" in out
    code, out, _ = both_ways("ls", env=env)
    assert code == 0 and "3 models" in out
    shown = []
    for model in json.loads(run_modeldeck("ls", "--json", env=env).stdout):
        code, out, _ = both_ways("info", model["id"], env=env)
        assert code == 0
        shown.append(out)
    text = "\n".join(shown)
    assert f"name:             name{ESCAPED}" in text  # GGUF general.name
    assert f"architecture:     llama{ESCAPED}" in text  # GGUF architecture, config model_type
    assert f"name:             cfg{ESCAPED}" in text  # config.json _name_or_path
    assert f"evil{ESCAPED}" in text and f"st{ESCAPED}" in text  # file and folder names
    assert "[bold]red[/]" in text  # markup printed as it is
    # A corrupt file outside the managed folders: one clean error line.
    proc = run_modeldeck("info", str(Path(env["OUTSIDE"]) / f"corrupt{IN_NAME}.gguf"), env=env)
    line = proc.stderr.strip()
    assert proc.returncode != 0 and len(line.splitlines()) == 1 and "corrupt\\x1b[2J" in line
    both_ways("info", str(Path(env["OUTSIDE"]) / f"corrupt{IN_NAME}.gguf"), env=env)
    # A custom catalog entry named by the user, shown by catalog and info.
    proc = run_modeldeck("add", "url", "http://127.0.0.1:9/x.gguf", "--name", f"entry{HOSTILE}",
                         "--id", "hostile-entry", env=env)
    assert proc.returncode == 0, proc.stderr
    proc = run_modeldeck("add", "url", f"http://127.0.0.1:9/x{IN_NAME}.gguf", env=env)
    assert "x\\x1b[2J" in proc.stderr  # refused (a control character), shown escaped
    assert_no_control_chars(proc.stdout + proc.stderr)
    code, out, _ = both_ways("catalog", "--custom", env=env)
    assert code == 0 and "hostile-entry" in out
    code, out, _ = both_ways("info", "hostile-entry", env=env)
    assert code == 0 and f"entry{ESCAPED}" in out
    # JSON is JSON: escapes as \\u001b, never raw.
    for args in (("ls", "--json"), ("catalog", "--json"), ("info", "hostile-entry", "--json")):
        proc = run_modeldeck(*args, env=env)
        assert proc.returncode == 0 and "\\u001b[2J" in proc.stdout
        assert_no_control_chars(proc.stdout)
    assert tree_digest(tmp_path, skip=(Path(env["MODELDECK_STATE_DIR"]),)) == before


def test_unknown_id_with_escapes_is_one_clean_line(hostile_home: dict[str, str]) -> None:
    code, _, err = both_ways("rm", f"gone{HOSTILE}", "-y", env=hostile_home)
    assert code != 0 and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def server() -> Iterator[HostileServer]:
    srv = HostileServer().start()
    yield srv
    srv.stop()


def test_run_streams_model_text_escaped(server: HostileServer, hostile_home: dict[str, str]
                                        ) -> None:
    """The server streams ESC/OSC/CSI/BEL/C1 split across deltas; stdout shows them escaped,
    on pipes and on a terminal; the metrics on stderr are clean too."""
    args = ("run", "--endpoint", server.url(), "--model", "escapes", "-p", "hi")
    code, out, err = both_ways(*args, env=hostile_home)
    assert code == 0, err
    assert out == ("hello \\x1b]52;c;SGVsbG8=\\x07 \\x1b[2J \\x9b31m [bold]x[/] \\u202eevil\\r\n"
                   "end\n")
    assert "11 tokens" in err


def test_run_server_error_is_one_clean_line(server: HostileServer, hostile_home: dict[str, str]
                                            ) -> None:
    args = ("run", "--endpoint", server.url(), "--model", "sseerror", "-p", "hi")
    code, _, err = both_ways(*args, env=hostile_home)
    errors = [line for line in err.splitlines() if line.startswith("modeldeck: error:")]
    assert code == 1 and len(errors) == 1 and "\\x1b[2J" in errors[0]


def test_pull_of_a_hostile_file_name(server: HostileServer, hostile_home: dict[str, str]) -> None:
    """A URL whose file name holds a C1 CSI, a bidi override and markup: the name ModelDeck
    makes of it has neither (each becomes ``_``), and the progress (Rich on a terminal, plain
    lines on pipes), the error and ``jobs`` show its markup literally."""
    url = f"http://127.0.0.1:{server.port}/x/evil%C2%9B31m%E2%80%AE%5Bbold%5Dred.gguf"
    code, _, err = both_ways("pull", url, env=hostile_home, progress=True)
    assert code == 1 and "evil_31m_[bold]red.gguf" in err
    code, out, _ = both_ways("jobs", env=hostile_home)
    assert code == 0 and "evil_31m_[bold]red.gguf" in out


# -- the dashboard -----------------------------------------------------------------------------


async def test_dashboard_shows_hostile_text_literally(tmp_path: Path) -> None:
    """Names in the table, a download's name and error, a notification, the console's model
    line, streamed text and error, and the delete dialog: rendered with no control character
    and with their markup printed as typed."""
    from textual.command import CommandPalette

    from tui.app.messages import DeletePlanned
    from tui.app.screens import ConfirmScreen
    from tui.app.views import JobView, MetricsView

    from tests.support.app import installed_record, make_app, make_services, wait_for, wait_ready

    services = make_services(tmp_path, records=[
        installed_record(model_id="evil", catalog_id=None, name=f"tbl[bold]A[/]{HOSTILE}"),
    ])
    app = make_app(services)
    try:
        async with app.run_test(size=(220, 60), notifications=True) as pilot:
            await wait_ready(app, pilot)
            panel = app.downloads_panel
            panel.post_job(JobView("j1", f"job[bold]B[/]{HOSTILE}", "queued"))
            panel.post_job(JobView("j1", f"job[bold]B[/]{HOSTILE}", "failed",
                                   error=f"err[bold]C[/]{HOSTILE}"))
            assert await wait_for(pilot, lambda: len(app._notifications) == 1)  # the failure
            app.notify(f"ntf[bold]D[/]{HOSTILE}", title=f"ttl{HOSTILE}")
            app.show_console = True
            console = app.prompt_console
            console.set_model(f"mdl[bold]E[/]{HOSTILE}")
            console.start_answer("hi")
            for piece in ("tok[bold]F[/] \x1b", "]52;c;SGVsbG8=\x07 \x9b31m", "\x1b[2J done"):
                console.append_tokens(piece)
            console.finish_answer(MetricsView(), error=f"gen[bold]G[/]{HOSTILE}")
            await pilot.pause()
            # the text of the SVG as shown (entities decoded, no-break spaces as spaces)
            screen = html.unescape(app.export_screenshot()).replace("\xa0", " ")
            assert_no_control_chars(screen)
            for marker in ("tbl[bold]A[/]", "job[bold]B[/]", "err[bold]C[/]", "ntf[bold]D[/]",
                           "mdl[bold]E[/]", "tok[bold]F[/]", "gen[bold]G[/]"):
                assert marker in screen, marker
            assert "\\x1b]52;c;SGVsbG8=\\x07" in screen  # split across deltas, still escaped
            row = app.model_table.get_model_row("model:evil")
            assert row is not None
            app.post_message(DeletePlanned(row, 1 << 20, False))
            assert await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            await pilot.pause()
            assert_no_control_chars(html.unescape(app.export_screenshot()))
            question = str(app.screen.query_one("#confirm-question").render())
            assert question.startswith(f"Delete tbl[bold]A[/]{ESCAPED}")
            assert_no_control_chars(question)
            await pilot.press("escape")
            assert await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen))
            app.action_pick_model()  # the quick switch: a palette of installed models' names
            assert await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
            await pilot.pause(0.2)
            palette = html.unescape(app.export_screenshot()).replace("\xa0", " ")
            assert_no_control_chars(palette)
            assert "tbl[bold]A[/]\\x1b[2J" in palette
    finally:
        services.close()
