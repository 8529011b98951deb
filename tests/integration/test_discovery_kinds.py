"""Kinds and formats end to end: a real tree scanned into real SQLite, the real CLI (``scan``,
``ls --kind``, ``info``, ``rm``, ``run``, ``fit``), a Hugging Face cache holding two revisions
of one repo, downloads from the fake Hub, and an inventory from before kinds existed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from tui.cli import main
from tui.discovery import Scanner
from tui.download.sources import JobSpec
from tui.settings import Settings
from tui.store import Database, Inventory, ModelRecord
from tui.store.health import split_sql
from tui.store.schema import MIGRATIONS

from tests.fakehub import FakeHub
from tests.support import formats as F
from tests.support.checks import assert_one_line_error, run_modeldeck, tree_digest
from tests.support.gguf import write_gguf, write_split_gguf


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """The real CLI in-process on a models dir and a state dir under tmp_path."""
    models, state = tmp_path / "models", tmp_path / "state"
    models.mkdir()
    monkeypatch.setenv("MODELDECK_MODELS_DIR", str(models))
    monkeypatch.setenv("MODELDECK_STATE_DIR", str(state))
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "false")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        return code, out, err

    def models_json(*extra: str) -> dict[str, dict]:
        code, out, _ = run("ls", "--json", *extra)
        assert code == 0
        return {m["path"]: m for m in json.loads(out)}

    run.models, run.state, run.json = models, state, models_json  # type: ignore[attr-defined]
    run.env = {"MODELDECK_MODELS_DIR": str(models), "MODELDECK_STATE_DIR": str(state),  # type: ignore[attr-defined]
               "MODELDECK_SCAN_HF_CACHE": "false"}
    return run


def _mixed_tree(models: Path) -> dict[str, Path]:
    return {
        "checkpoint": F.write_checkpoint(models / "checkpoints" / "sdxl_base.safetensors", "sdxl"),
        "lora": F.write_lora(models / "loras" / "detail.safetensors", rank=32),
        "flux-lora": F.write_lora(models / "loras" / "style.safetensors", style="flux"),
        "vae": F.write_vae(models / "vae" / "sdxl_vae.safetensors"),
        "t5": F.write_text_encoder(models / "clip" / "t5xxl.safetensors", "t5"),
        "controlnet": F.write_controlnet(models / "controlnet" / "canny.safetensors"),
        "diffusers": F.write_diffusers(models / "diffusers" / "sdxl"),
        "embedding": F.write_hf_folder(models / "emb" / "minilm", "BertModel",
                                       sentence_transformers=True),
        "mlx": F.write_mlx(models / "mlx" / "qwen-4bit"),
        "vlm": write_gguf(models / "vl" / "Qwen2-VL-2B-Instruct-Q4_K_M.gguf"),
        "projector": F.write_mmproj(models / "vl" / "mmproj-Qwen2-VL-2B-Instruct-f16.gguf"),
        "vocab": F.write_vocab_gguf(models / "vocab" / "ggml-vocab-llama-bpe.gguf"),
        "llm": write_gguf(models / "llm" / "tiny-Q4_K_M.gguf", seed=5),
        "onnx": F.write_onnx(models / "onnx" / "model.onnx"),
        "tflite": F.write_tflite(models / "tflite" / "mobile.tflite"),
        "coreml": F.write_mlpackage(models / "coreml" / "Tiny.mlpackage"),
        "ckpt": F.write_torch(models / "pt" / "old.ckpt"),
    }


EXPECTED = {
    "checkpoint": ("diffusion", "safetensors"), "lora": ("lora", "safetensors"),
    "flux-lora": ("lora", "safetensors"), "vae": ("vae", "safetensors"),
    "t5": ("text-encoder", "safetensors"), "controlnet": ("controlnet", "safetensors"),
    "diffusers": ("diffusion", "safetensors"), "embedding": ("embedding", "safetensors"),
    "mlx": ("llm", "mlx"), "vlm": ("vlm", "gguf"), "llm": ("llm", "gguf"),
    "onnx": ("llm", "onnx"), "tflite": ("llm", "tflite"), "coreml": ("llm", "coreml"),
    "ckpt": ("llm", "pytorch"),
}


def test_a_scan_registers_every_kind_and_format(cli) -> None:
    paths = _mixed_tree(cli.models)
    code, out, _ = cli("scan")
    assert code == 0
    assert f"{len(EXPECTED)} models ({len(EXPECTED)} new" in out
    kinds_line = next(line for line in out.splitlines() if line.startswith("Kinds: "))
    assert "2 lora" in kinds_line and "1 vae" in kinds_line and "1 vlm" in kinds_line
    assert re.search(r"note .*ggml-vocab-llama-bpe\.gguf: vocabulary only \(tokenizer\), "
                     r"not a model", out)
    models = cli.json()
    got = {name: (models[str(p)]["kind"], models[str(p)]["format"])
           for name, p in paths.items() if str(p) in models}
    assert got == EXPECTED
    assert str(paths["vocab"]) not in models and str(paths["projector"]) not in models
    vlm = models[str(paths["vlm"])]
    assert str(paths["projector"]) in [f["path"] for f in vlm["files"]]
    assert vlm["metadata"]["extra"]["projector"]["file"] == paths["projector"].name

    loras = cli.json("--kind", "lora")
    assert sorted(Path(p).name for p in loras) == ["detail.safetensors", "style.safetensors"]
    code, out, _ = cli("ls", "--kind", "vae")
    header, row = out.splitlines()[:2]
    assert header.split()[:3] == ["ID", "KIND", "FORMAT"] and row.split()[1] == "vae"
    code, out, _ = cli("ls")
    assert re.search(r"old\s+llm\s+pytorch\*", out) and "* unsafe format" in out

    code, out, _ = cli("info", models[str(paths["lora"])]["id"])
    assert re.search(r"kind:\s+LoRA adapter \(SDXL, rank 32\); managed, not runnable here", out)
    code, out, _ = cli("info", models[str(paths["onnx"])]["id"])
    assert re.search(r"opset:\s+17", out) and "input_ids [batch, 4] → logits" in out
    code, out, _ = cli("info", models[str(paths["ckpt"])]["id"])
    assert re.search(r"warning:\s+unsafe format", out)

    code, out, _ = cli("scan", "--json")
    report = json.loads(out)
    assert report["files_read"] == 0 and not report["added"] and not report["updated"]
    assert report["kinds"]["lora"] == 2


def test_a_projector_two_quantizations_share_goes_with_the_last(cli) -> None:
    folder = cli.models / "vl"
    q4 = write_gguf(folder / "Qwen2-VL-2B-Instruct-Q4_K_M.gguf")
    q8 = write_gguf(folder / "Qwen2-VL-2B-Instruct-Q8_0.gguf", seed=1)
    proj = F.write_mmproj(folder / "mmproj-Qwen2-VL-2B-Instruct-f16.gguf")
    cli("scan")
    models = cli.json()
    assert models[str(q4)]["kind"] == models[str(q8)]["kind"] == "vlm"
    code, out, _ = cli("rm", models[str(q4)]["id"], "-y")
    assert code == 0 and not q4.exists() and proj.exists()
    assert f"also a file of {models[str(q8)]['id']}" in out
    code, out, _ = cli("rm", models[str(q8)]["id"], "-y")
    assert code == 0 and not q8.exists() and not proj.exists()


def test_info_on_any_shard_describes_the_whole_split_set(cli) -> None:
    shards = write_split_gguf(cli.models / "big", "big-Q8_0", 3)
    whole = []
    for shard in shards:
        code, out, _ = cli("info", str(shard), "--json")
        assert code == 0
        data = json.loads(out)
        whole.append((data["path"], data["metadata"]["parameters"],
                      data["metadata"]["architecture"], data["metadata"]["split_count"]))
    assert whole == [(str(shards[0]), 3 * 16 * 64, "llama", 3)] * 3
    code, out, _ = cli("info", str(shards[1]))
    assert re.search(r"split set:\s+3 shards", out) and re.search(r"architecture:\s+llama", out)
    shards[2].unlink()
    proc = run_modeldeck("info", str(shards[1]), env=cli.env)
    assert_one_line_error(proc, "missing shard(s) 3 of 3")


# -- the Hugging Face cache: one model, several revisions ---------------------------------------


def _cache_revision(repo: Path, commit: str, files: dict[str, bytes],
                    refs: tuple[str, ...] = ()) -> None:
    """Lay ``files`` out as huggingface_hub does: blobs named by sha256, snapshot links."""
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


def test_two_revisions_of_one_cached_repo_are_one_model(
        cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELDECK_SCAN_HF_CACHE", "true")
    src = tmp_path / "src"
    old = write_gguf(src / "a.gguf", seed=1).read_bytes()
    new = write_gguf(src / "b.gguf", seed=2).read_bytes()
    repo = Path(os.environ["HF_HOME"]) / "hub" / "models--acme--Tiny-GGUF"
    c1, c2, c3 = "1" * 40, "2" * 40, "3" * 40
    name = "tiny-Q4_K_M.gguf"
    _cache_revision(repo, c1, {name: old}, refs=("tags/v1",))
    _cache_revision(repo, c2, {name: old}, refs=("main",))  # same blob as v1
    _cache_revision(repo, c3, {name: new})  # detached, another blob
    # A row from before: the v1 revision registered as a model of its own.
    inventory = Inventory(Database(cli.state / "modeldeck.db"))
    inventory.upsert_model(ModelRecord(id="tiny-v1", name="tiny", format="gguf",
                                       path=str(repo / "snapshots" / c1 / name),
                                       source="hf-cache", source_ref="acme/Tiny-GGUF"))
    inventory.db.close()

    code, out, _ = cli("scan")
    assert code == 0
    (model,) = cli.json().values()
    assert model["path"] == str(repo / "snapshots" / c2 / name) and model["revision"] == c2
    revisions = model["metadata"]["extra"]["revisions"]
    assert [(r["commit"], r["refs"], r["detached"]) for r in revisions] == [
        (c2, ["main"], False), (c1, ["tags/v1"], False), (c3, [], True)]
    assert len(model["files"]) == 3
    assert model["size_bytes"] == len(old) + len(new)  # the shared blob counted once
    code, out, _ = cli("info", model["id"])
    assert re.search(r"revisions:\s+222222222222 \(main\), 111111111111 \(tags/v1\), "
                     r"333333333333 \(detached\)", out)
    code, out, _ = cli("export")  # the model's own revision, not every cached one
    (entry,) = json.loads(out)["models"]
    assert entry["revision"] == c2 and [f["path"] for f in entry["files"]] == [name]

    code, out, _ = cli("rm", model["id"], "-y", "--json")
    assert code == 0 and json.loads(out)["freed_bytes"] == len(old) + len(new)
    assert not repo.exists()


# -- running what cannot run -------------------------------------------------------------------


def test_a_model_that_cannot_run_here_gets_one_line_and_fits_by_size(cli, tmp_path) -> None:
    lora = F.write_lora(cli.models / "loras" / "detail.safetensors", rank=32)
    onnx = F.write_onnx(cli.models / "onnx" / "phi.onnx")
    adapter = F.write_gguf_lora(tmp_path / "elsewhere" / "adapter.gguf")  # not registered
    cli("scan")
    models = cli.json()
    lora_id, onnx_id = models[str(lora)]["id"], models[str(onnx)]["id"]
    before = tree_digest(tmp_path, skip=(cli.state,))
    proc = run_modeldeck("run", lora_id, "-p", "hello", env=cli.env)
    assert_one_line_error(proc, f"{lora_id} is a LoRA adapter (SDXL, rank 32): ModelDeck "
                                "manages it but cannot run it here")
    proc = run_modeldeck("run", onnx_id, "-p", "hello", env=cli.env)
    assert_one_line_error(proc, f"{onnx_id} is an ONNX model: ModelDeck manages it but cannot "
                                "run it here")
    proc = run_modeldeck("run", str(adapter), "-p", "hello", env=cli.env)
    assert_one_line_error(proc, "adapter.gguf is a LoRA adapter (llama, rank 4)")
    for target, size in ((lora_id, lora.stat().st_size), (str(adapter), adapter.stat().st_size)):
        code, out, _ = cli("fit", target, "--json")
        result = json.loads(out)
        assert code == 0 and result["estimate"]["weights_bytes"] == size
        assert result["estimate"]["kv_cache_bytes"] == 0
    assert tree_digest(tmp_path, skip=(cli.state,)) == before


def test_a_pickle_that_would_run_code_is_registered_flagged_and_never_run(cli) -> None:
    marker = cli.models.parent / "PWNED"
    (cli.models / "pt").mkdir()
    evil = cli.models / "pt" / "evil.pt"
    evil.write_bytes(F.malicious_pickle(f"touch {marker}"))
    code, out, _ = cli("scan")
    assert code == 0 and not marker.exists()
    (model,) = cli.json().values()
    assert model["metadata"]["extra"]["suspicious_imports"] == ["os.system"]
    code, out, _ = cli("info", model["id"])
    assert re.search(r"imports:\s+os\.system — could run code", out)
    assert not marker.exists()


# -- downloads ---------------------------------------------------------------------------------


async def test_a_pulled_repo_registers_its_kinds(hub: FakeHub, service, tmp_path: Path) -> None:
    src = tmp_path / "src"
    model = write_gguf(src / "Tiny-VL-Q4_K_M.gguf").read_bytes()
    proj = F.write_mmproj(src / "mmproj-f16.gguf").read_bytes()
    lora = F.write_lora(src / "lora.safetensors", style="flux", rank=4).read_bytes()
    hub.add_repo("acme/vl", {"Tiny-VL-Q4_K_M.gguf": model, "mmproj-f16.gguf": proj})
    hub.add_repo("acme/flux-lora", {"pytorch_lora_weights.safetensors": lora})
    jobs = await service.run_until_complete([
        service.enqueue(JobSpec(kind="hf", repo="acme/vl", include=["*"])),
        service.enqueue(JobSpec(kind="hf", repo="acme/flux-lora", include=["*"])),
    ])
    assert [j.state for j in jobs] == ["done", "done"], [j.error for j in jobs]
    records = {r.source_ref: r for r in service.inventory.list_models()}
    vl = records["acme/vl"]
    assert vl.kind == "vlm" and sorted(Path(f.path).name for f in vl.files) == [
        "Tiny-VL-Q4_K_M.gguf", "mmproj-f16.gguf"]
    assert (records["acme/flux-lora"].kind, records["acme/flux-lora"].metadata.extra[
        "lora_rank"]) == ("lora", 4)


# -- an inventory from before kinds -------------------------------------------------------------


def test_migration_8_gives_old_rows_a_kind_and_the_next_scan_reads_files_again(
        settings: Settings) -> None:
    path = write_gguf(settings.models_dir / "old-Q4_K_M.gguf")
    settings.state_dir.mkdir(parents=True)
    conn = sqlite3.connect(settings.db_path)
    for script in MIGRATIONS[:7]:
        for statement in split_sql(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 7")
    meta = {"format": "gguf", "architecture": "llama", "parameters": 3}  # no kind then
    conn.execute(
        "INSERT INTO models (id, name, format, path, source, status, size_bytes, metadata, "
        "installed_at) VALUES ('old', 'old', 'gguf', ?, 'scan', 'installed', ?, ?, 1.0)",
        (str(path), path.stat().st_size, json.dumps(meta)))
    st = path.stat()
    conn.execute("INSERT INTO model_files (model_id, path, size, mtime_ns) VALUES "
                 "('old', ?, ?, ?)", (str(path), st.st_size, st.st_mtime_ns))
    conn.execute("INSERT INTO scan_cache (path, size, mtime_ns, metadata, scanned_at) VALUES "
                 "(?, ?, ?, ?, 1.0)", (str(path), st.st_size, st.st_mtime_ns, json.dumps(meta)))
    conn.commit()
    conn.close()

    inventory = Inventory(Database(settings.db_path))
    try:
        assert inventory.db.schema_version == len(MIGRATIONS) >= 8
        assert inventory.get_model("old").kind == "llm"  # from its metadata meanwhile
        assert inventory.scan_cache_all() == {}
        report = Scanner(settings, inventory).scan()
        assert report.files_read == 1 and report.updated == ["old"]
        with inventory.db.read() as read:
            assert read.execute("SELECT kind FROM models WHERE id = 'old'").fetchone()[0] == "llm"
        assert inventory.get_model("old").metadata.kind == "llm"
    finally:
        inventory.db.close()


def test_a_manifest_of_every_format_imports(cli, tmp_path: Path) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"modeldeck_manifest": 1, "models": [
        {"id": f"m-{fmt}", "format": fmt, "source": "hf", "repo": f"acme/{fmt}",
         "revision": "a" * 40, "files": [{"path": f"model.{fmt}", "size": 10}]}
        for fmt in ("gguf", "safetensors", "mlx", "onnx", "tflite", "coreml", "pytorch")]}))
    code, out, _ = cli("import", str(manifest), "--dry-run")
    assert code == 0 and out.count("would fetch") == 7
