"""End to end: the real ``modeldeck`` command in a detached tmux session, driven with
``send-keys`` and read back with ``capture-pane`` (what a user on a GPU pod over SSH sees)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.tiny_models import make_tiny_gguf

WIDTH, HEIGHT = 120, 40


class Tmux:
    """One tmux session on a private socket (never the user's server)."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.socket = f"modeldeck-e2e-{uuid.uuid4().hex[:8]}"
        self.session = "deck"
        # env -i: nothing leaks in from pytest (COLUMNS/LINES would fix the app's size).
        wrapped = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *command]
        self.tmux("new-session", "-d", "-s", self.session, "-x", str(WIDTH), "-y", str(HEIGHT),
                  shlex.join(wrapped))
        # A detached session may still follow tmux's default size: pin it.
        self.tmux("resize-window", "-t", self.session, "-x", str(WIDTH), "-y", str(HEIGHT))

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        if result.returncode != 0 and args[0] not in ("kill-server", "capture-pane"):
            raise RuntimeError(f"tmux {args[0]} failed: {result.stderr.strip()}")
        return result.stdout

    def keys(self, *keys: str) -> None:
        """Named keys (Enter, Escape, C-o …) as tmux key names."""
        self.tmux("send-keys", "-t", self.session, *keys)

    def type(self, text: str) -> None:
        """Literal text."""
        self.tmux("send-keys", "-t", self.session, "-l", text)

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def alive(self) -> bool:
        return subprocess.run(
            ["tmux", "-L", self.socket, "has-session", "-t", self.session],
            capture_output=True, timeout=10,
        ).returncode == 0

    def wait(self, predicate: Callable[[str], bool], what: str, timeout: float = 30.0) -> str:
        """Poll the pane until ``predicate(screen)``; fails with the last screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")

    def wait_text(self, text: str, timeout: float = 30.0) -> str:
        return self.wait(lambda s: text in s, repr(text), timeout)

    def kill(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def deck_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """State and models in ``tmp_path`` with one tiny GGUF registered through the CLI."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("HOME", "XDG_", "HF_"))}
    env.update(
        MODELDECK_STATE_DIR=str(tmp_path / "state"),
        MODELDECK_MODELS_DIR=str(tmp_path / "models"),
        MODELDECK_SCAN_HF_CACHE="0",
        MODELDECK_WORKSPACE_ROOT=str(tmp_path / "no-workspace"),
        PATH=os.environ.get("PATH", ""),
        TERM="tmux-256color",
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
    )
    model = make_tiny_gguf(tmp_path / "models" / "tinydeck.gguf")
    subprocess.run(
        [sys.executable, "-m", "tui", "add", "local", str(model), "--name", "tinydeck-e2e"],
        env=env, check=True, capture_output=True, timeout=60,
    )
    yield env


def test_dashboard_in_tmux(deck_env: dict[str, str]) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed")
    deck = Tmux([sys.executable, "-m", "tui"], deck_env)
    try:
        # The table is up (catalog + the registered model).
        deck.wait(lambda s: re.search(r"\d+ of \d+ models", s) is not None, "status line", 30)

        # Filter with /.
        # Textual forwards queued keys to the widget focused when they were queued: wait for
        # the filter line (the focus moves with it) before typing.
        deck.keys("/")
        deck.wait_text("Filter models (Esc clears)")
        deck.type("tinydeck")
        screen = deck.wait(lambda s: "1 of" in s and 'filter "tinydeck"' in s, "filtered")
        assert re.search(r"installed\s+tinydeck\s+llm\s+gguf", screen), screen  # id, kind
        deck.keys("Enter")  # back to the table, filter kept
        deck.wait_text("Delete", timeout=10)  # the table's keys are in the footer again

        # Help with ?, closed with Escape.
        deck.keys("?")
        deck.wait_text("ModelDeck keys")
        deck.keys("Escape")
        deck.wait(lambda s: "ModelDeck keys" not in s, "help closed")

        # Load it: enter on the row → "loaded" in the table.
        deck.keys("Enter")
        deck.wait(lambda s: re.search(r"loaded\s+tinydeck\s", s) is not None, "loaded", 60)

        # Parameters with F3: greedy (a deterministic answer that does not stop at once) and
        # 24 tokens at most, so the prompt line and the whole answer stay on screen.
        deck.keys("e")
        deck.wait_text("Model: tinydeck-e2e")
        # A field's text is selected when it gets the focus: typing replaces it. (Not End and
        # ctrl+u: bindings run after the key bubbles up to the App, so characters sent in the
        # same burst would be typed first.)
        deck.keys("F3")
        deck.wait_text("Generation parameters")
        deck.type("0")
        deck.wait(lambda s: re.search(r"Temperature\s+0\s", s) is not None, "temperature 0")
        deck.keys("Tab", "Tab")  # top_p, max tokens
        deck.type("24")
        deck.wait(lambda s: re.search(r"Max tokens\s+24\s", s) is not None, "max tokens 24")
        deck.keys("Enter")
        deck.wait_text("temperature 0 | top_p 0.95 | max 24 tokens")  # after "ctx … | cpu"

        # Ask: tokens and metrics show in the console.
        asked = "> Hello there"
        deck.type(asked[2:])
        deck.keys("Enter")
        deck.wait_text(asked, timeout=10)

        def after_prompt(s: str) -> str:
            return s.split(asked, 1)[1] if asked in s else ""

        metrics = re.compile(r"TTFT \d+ ms \| [\d.]+ tok/s \| (\d+) tokens?\b")
        screen = deck.wait(lambda s: metrics.search(after_prompt(s)) is not None,
                           "metrics line", 60)
        tokens = metrics.search(after_prompt(screen))
        assert tokens is not None and 1 < int(tokens.group(1)) <= 24, screen

        # Quit: Escape leaves the prompt line, q quits (no downloads: no question).
        deck.keys("Escape")
        deck.wait_text("Delete", timeout=10)  # the table's keys are back in the footer
        deck.keys("q")
        deadline = time.monotonic() + 20
        while deck.alive() and time.monotonic() < deadline:
            screen = deck.screen()
            if "Quit?" in screen:
                deck.keys("y")
            time.sleep(0.1)
        assert not deck.alive(), deck.screen()
    finally:
        deck.kill()


def test_the_api_server_from_the_dashboard_in_tmux(deck_env: dict[str, str]) -> None:
    """``A`` starts the API server inside the running dashboard; the official ``openai``
    client gets an answer from the model the dashboard lists; the panel counts it; ``A``
    stops it."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux not installed")
    openai = pytest.importorskip("openai", reason="the openai client drives the server")
    import socket

    with socket.socket() as s:  # a free port for the server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**deck_env, "MODELDECK_SERVE_PORT": str(port)}
    deck = Tmux([sys.executable, "-m", "tui"], env)
    try:
        deck.wait(lambda s: re.search(r"\d+ of \d+ models", s) is not None, "status line", 30)
        deck.keys("/")  # the model's row on screen, to see its request count
        deck.wait_text("Filter models (Esc clears)")
        deck.type("tinydeck")
        deck.wait(lambda s: "1 of" in s and 'filter "tinydeck"' in s, "filtered")
        deck.keys("Enter")
        deck.wait_text("Delete", timeout=10)
        deck.keys("A")
        deck.wait_text(f"http://127.0.0.1:{port}/v1", timeout=30)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none",
                               max_retries=0, timeout=60)
        ids = [m.id for m in client.models.list()]
        assert ids == ["tinydeck"], ids
        answer = client.chat.completions.create(
            model="tinydeck", messages=[{"role": "user", "content": "hello"}], max_tokens=8,
            temperature=0)
        assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 8
        deck.wait(lambda s: re.search(r"\b1 req/min\b", s) is not None, "1 req/min", 15)
        deck.wait(lambda s: re.search(r"loaded, 1 req", s) is not None, "the row's count", 15)
        deck.keys("A")
        deck.wait(lambda s: f"127.0.0.1:{port}/v1" not in s, "the panel hidden", 20)
        with pytest.raises(openai.APIConnectionError):
            client.models.list()
        deck.keys("q")
        deadline = time.monotonic() + 20
        while deck.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not deck.alive(), deck.screen()
    finally:
        deck.kill()
