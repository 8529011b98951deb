"""``modeldeck serve``'s management API (``/api``, ``/metrics``, ``/docs``) through ``httpx``,
downloads against the fake Hub, and the CLI (``serve``, ``ps``, ``load``, ``unload``) as real
processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

pytest.importorskip("llama_cpp")

from tui.serve.state import read_state
from tui.store import Database, Inventory

from tests.fakehub import FakeHub
from tests.support.checks import REPO, assert_one_line_error, run_modeldeck
from tests.support.runtime import register_model
from tests.support.serve import LIMIT, serve_settings, served, wait_until
from tests.support.tiny_models import tiny_gguf

ASK = [{"role": "user", "content": "tell me about the water model"}]


def api(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=LIMIT)


def sse(lines: list[str]) -> list[tuple[str, dict]]:
    """``(event name, data)`` of each SSE event in ``lines``."""
    out, name = [], "message"
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, json.loads(line[6:])))
            name = "message"
    return out


def follow(c: httpx.Client, job_id: str) -> list[tuple[str, dict]]:
    with c.stream("GET", f"/api/downloads/{job_id}/events") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return sse(list(r.iter_lines()))


def test_load_ps_unload(tmp_path: Path) -> None:
    with served(serve_settings(tmp_path), {"tiny": (tiny_gguf(), "gguf")}) as s, \
            api(s.url) as c:
        assert c.get("/api/ps").json() == {"models": []}
        r = c.post("/api/models/tiny/load",
                   json={"context_length": 256, "parallel": 2, "keep_alive": "10m"})
        assert r.status_code == 200, r.text
        info = r.json()
        assert (info["id"], info["context_length"], info["slots"]) == ("tiny", 256, 2)
        assert info["keep_alive_s"] == 600 and 0 < info["unload_in_s"] <= 600
        assert info["memory_bytes"] > 0 and info["fit"]
        (ps,) = c.get("/api/ps").json()["models"]
        assert ps["id"] == "tiny" and ps["running"] == ps["queued"] == 0
        (m,) = c.get("/api/models").json()["models"]
        assert m["loaded"] and m["runtime"]["slots"] == 2 and m["format"] == "gguf"
        assert m["metrics"]["load_seconds"] is not None
        assert c.get("/api/models/tiny").json()["id"] == "tiny"
        # the same options again: already loaded as asked; others reload it
        assert c.post("/api/models/tiny/load", json={}).json()["slots"] == 2
        assert c.post("/api/models/tiny/load", json={"parallel": 1}).json()["slots"] == 1

        assert c.post("/api/models/tiny/unload").json() == {"id": "tiny", "unloaded": True}
        assert c.post("/api/models/tiny/unload").json() == {"id": "tiny", "unloaded": False}
        assert c.get("/api/ps").json() == {"models": []}

        for path, body, status in [
            ("/api/models/nope/load", {}, 404),
            ("/api/models/tiny/load", {"gpu_layers": -3}, 400),
            ("/api/models/tiny/load", {"context_length": "big"}, 400),
            ("/api/models/tiny/load", {"batch": 3}, 400),  # unknown option
            ("/api/models/tiny/load", {"threads": 0}, 400),
            ("/api/models/tiny/load", {"keep_alive": "forever"}, 400),
        ]:
            r = c.post(path, json=body)
            assert r.status_code == status, (path, body, r.text)
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_a_busy_model_is_not_unloaded_unless_forced(tmp_path: Path) -> None:
    settings = serve_settings(tmp_path, parallel_requests=1)
    with served(settings, {"tiny": (tiny_gguf(), "gguf")}, stream_buffer=1) as s, \
            api(s.url) as c:
        c.post("/api/models/tiny/load")
        held = s.hold("tiny")
        r = c.post("/api/models/tiny/unload")
        assert r.status_code == 409 and "answering 1 request" in r.json()["error"]["message"]
        r = c.delete("/api/models/tiny")
        assert r.status_code == 409 and "unload it first" in r.json()["error"]["message"]
        assert c.post("/api/models/tiny/unload", json={"force": True}).json()["unloaded"]
        assert c.get("/api/ps").json() == {"models": []}
        held.release()


def test_download_followed_to_done_then_served_then_deleted(hub: FakeHub,
                                                            tmp_path: Path) -> None:
    data = tiny_gguf().read_bytes()
    hub.add_repo("acme/tiny-GGUF", {"tiny-Q8_0.gguf": data, "tiny-Q4_0.gguf": b"GGUF"})
    with served(serve_settings(tmp_path)) as s, api(s.url) as c:
        r = c.post("/api/downloads", json={"source": "acme/tiny-GGUF:Q8_0"})
        assert r.status_code == 201, r.text
        job = r.json()
        assert job["name"] == "acme/tiny-GGUF:Q8_0"
        events = follow(c, job["id"])
        assert events[-1][0] == "end" and events[-1][1]["state"] == "done"
        states = [d["state"] for name, d in events if name == "message"]
        assert states[-1] == "done"
        model_id = events[-1][1]["model_id"]
        assert c.get(f"/api/downloads/{job['id']}").json()["state"] == "done"
        assert [j["id"] for j in c.get("/api/downloads").json()["jobs"]] == [job["id"]]
        dest = tmp_path / "models/acme/tiny-GGUF/tiny-Q8_0.gguf"
        assert dest.read_bytes() == data

        # the new model answers at once (loaded on demand)
        r = c.post("/v1/chat/completions", json={"model": model_id, "messages": ASK,
                                                 "max_tokens": 4})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4
        assert c.delete(f"/api/models/{model_id}").status_code == 409  # loaded
        c.post(f"/api/models/{model_id}/unload")
        r = c.delete(f"/api/models/{model_id}")
        assert r.status_code == 200, r.text
        gone = r.json()
        assert gone["freed_bytes"] == len(data) and gone["deleted"] == [str(dest)]
        assert not dest.exists()
        assert c.get("/api/models").json() == {"models": []}
        assert c.delete(f"/api/models/{model_id}").status_code == 404

        # a follower of an ended job gets its state and the end at once
        assert follow(c, job["id"])[-1][0] == "end"


def test_download_pause_resume_cancel(hub: FakeHub, tmp_path: Path) -> None:
    data = b"GGUF" + bytes(range(256)) * (16 << 10)  # 4 MiB
    hub.add_repo("acme/slow", {"s-Q4_0.gguf": data})
    hub.add_fault("s-Q4_0.gguf", "slow", times=None, rate=256 << 10)
    with served(serve_settings(tmp_path)) as s, api(s.url) as c:
        job = c.post("/api/downloads", json={"source": "acme/slow:Q4_0"}).json()
        jid = job["id"]
        wait_until(lambda: c.get(f"/api/downloads/{jid}").json()["done_bytes"] > 0,
                   "the download to start")
        r = c.post(f"/api/downloads/{jid}/pause")
        assert r.status_code == 200 and r.json()["state"] == "paused"
        assert follow(c, jid)[-1][1]["state"] == "paused"
        partial = c.get(f"/api/downloads/{jid}").json()["done_bytes"]
        assert 0 < partial < len(data)
        # the same pull again resumes the paused job rather than starting another
        again = c.post("/api/downloads", json={"source": "acme/slow:Q4_0"})
        assert again.status_code == 201 and again.json()["id"] == jid
        wait_until(lambda: c.get(f"/api/downloads/{jid}").json()["state"] == "downloading",
                   "the job to run again")
        r = c.post(f"/api/downloads/{jid}/cancel")
        assert r.json()["state"] == "cancelled"
        assert not list((tmp_path / "models").rglob("*.part"))
        r = c.post(f"/api/downloads/{jid}/pause")
        assert r.status_code == 400 and "cancelled" in r.json()["error"]["message"]
        for bad in ("../x", "zz", "0123456789abcdef" * 5):
            assert c.get(f"/api/downloads/{bad}").status_code in (400, 404)
        assert c.get("/api/downloads/abcdef123456").status_code == 404
        r = c.post("/api/downloads", json={"source": "not a source"})
        assert r.status_code == 400 and "pull" in r.json()["error"]["message"]


def test_resources_metrics_and_docs(tmp_path: Path) -> None:
    with served(serve_settings(tmp_path), {"tiny": (tiny_gguf(), "gguf")}) as s, \
            api(s.url) as c:
        res = c.get("/api/resources").json()
        assert res["ram_total"] > 0 and res["disks"] and "gpus" in res
        c.post("/v1/chat/completions", json={"model": "tiny", "messages": ASK,
                                             "max_tokens": 4})
        with c.stream("POST", "/v1/chat/completions", json={
                "model": "tiny", "messages": ASK, "max_tokens": 4, "stream": True}) as r:
            r.read()
        c.post("/v1/chat/completions", json={"model": "nope", "messages": ASK})
        text = c.get("/metrics").text
        assert 'modeldeck_requests_total{endpoint="chat",model="tiny",status="200"} 2.0' in text
        assert 'modeldeck_completion_tokens_total{model="tiny"} 8.0' in text
        assert 'modeldeck_time_to_first_token_seconds_count{model="tiny"} 2.0' in text
        assert 'modeldeck_tokens_per_second_count{model="tiny"} 2.0' in text
        assert 'modeldeck_queue_depth{model="tiny"} 0.0' in text
        assert 'modeldeck_requests_running{model="tiny"} 0.0' in text
        assert "modeldeck_loaded_models 1.0" in text
        assert 'model="nope"' not in text  # labels are ids of installed models only
        assert "modeldeck_download_bytes_total 0.0" in text
        docs = c.get("/docs")
        assert docs.status_code == 200 and "swagger-ui" in docs.text
        paths = c.get("/openapi.json").json()["paths"]
        for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings",
                     "/v1/models", "/api/ps", "/api/models/{model_id}/load",
                     "/api/downloads/{job_id}/events", "/api/resources", "/metrics"):
            assert path in paths, path
        cat = c.get("/api/catalog").json()["entries"]
        assert cat and {"id", "name", "quants"} <= set(cat[0])


# -- the CLI ----------------------------------------------------------------------------------


def _cli_env(tmp_path: Path) -> dict[str, str]:
    return {"MODELDECK_STATE_DIR": str(tmp_path / "state"),
            "MODELDECK_MODELS_DIR": str(tmp_path / "models"),
            "MODELDECK_KEEP_ALIVE_MINUTES": "0"}


def test_cli_serve_ps_load_unload(tmp_path: Path) -> None:
    env = _cli_env(tmp_path)
    db = Database(tmp_path / "state" / "modeldeck.db")
    register_model(Inventory(db), "tiny", tiny_gguf(), "gguf")
    db.close()
    assert "no modeldeck serve is running" in run_modeldeck("ps", env=env).stdout
    assert_one_line_error(run_modeldeck("unload", "tiny", env=env), "not loaded")
    here = run_modeldeck("load", "tiny", "--ctx", "256", env=env)
    assert here.returncode == 0 and "loaded tiny" in here.stdout
    assert "unloaded as this command exits" in here.stdout

    full = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tui", "serve", "--port", "0"], env=full,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: read_state(tmp_path / "state") is not None or proc.poll() is not None,
                   "the server to start")
        info = read_state(tmp_path / "state")
        assert info is not None and info.pid == proc.pid and not info.auth
        assert "nothing loaded" in run_modeldeck("ps", env=env).stdout
        loaded = run_modeldeck("load", "tiny", "--ctx", "256", "--parallel", "2",
                               "--keep-alive", "-1", env=env)
        assert loaded.returncode == 0, loaded.stderr
        assert "loaded tiny" in loaded.stdout and info.url in loaded.stdout
        table = run_modeldeck("ps", env=env).stdout.splitlines()
        assert table[0].split()[:4] == ["ID", "MEMORY", "CONTEXT", "SLOTS"]
        assert table[1].split()[0] == "tiny" and "never" in table[1]
        data = json.loads(run_modeldeck("ps", "--json", env=env).stdout)
        assert data["server"] == info.url and data["models"][0]["slots"] == 2
        with httpx.Client(base_url=info.url, timeout=LIMIT) as c:  # one process, one runtime
            assert c.post("/v1/completions", json={"model": "tiny", "prompt": "the",
                                                   "max_tokens": 3}).status_code == 200
        assert_one_line_error(run_modeldeck("serve", "--port", "0", env=env), "already runs")
        assert_one_line_error(run_modeldeck("load", "nope", env=env), "nope")
        assert_one_line_error(run_modeldeck("load", "../etc", env=env), "not a ModelDeck")
        done = run_modeldeck("unload", "tiny", env=env)
        assert done.returncode == 0 and "unloaded tiny" in done.stdout
        assert_one_line_error(run_modeldeck("unload", "tiny", env=env), "not loaded")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=LIMIT)
    assert proc.returncode == 0, err
    assert "serving on http://127.0.0.1:" in out and "ssh -N -L" in out
    assert "Traceback" not in err
    assert not (tmp_path / "state" / "serve.json").exists()
    assert "no modeldeck serve is running" in run_modeldeck("ps", env=env).stdout
