"""Hostile ONNX, ORT, TFLite, Core ML, PyTorch and diffusers files: each is refused with one
line (or read with its bad part set aside), within bounded memory, never executed, and a scan
of a tree full of them registers the good models, lists each bad file once and touches
nothing.

Files are made with the real writers and then damaged (cut, a length or count patched), or
assembled byte by byte where no writer would produce them.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tui.errors import MetadataError
from tui.metadata import pytorch as torch_reader
from tui.metadata.coreml import read_coreml
from tui.metadata.diffusers import read_diffusers_folder
from tui.metadata.onnx import read_onnx
from tui.metadata.pytorch import read_pytorch_file
from tui.metadata.safetensors import read_safetensors_file
from tui.metadata.tflite import read_tflite

from tests.support import formats as F
from tests.support.checks import assert_no_control_chars, run_modeldeck, tree_digest
from tests.support.formats import pb_field, pb_varint
from tests.support.gguf import write_gguf

PEAK_LIMIT = 32 << 20  # what reading any one hostile file may allocate at most


def refused(read: Callable[[Path], object], path: Path, *needles: str) -> str:
    """``read(path)`` raises MetadataError: one line naming the file and ``needles``, within
    :data:`PEAK_LIMIT` of memory."""
    tracemalloc.start()
    try:
        with pytest.raises(MetadataError) as info:
            read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = str(info.value)
    assert "\n" not in text and str(path) in text, text
    for needle in needles:
        assert needle in text, text
    assert peak < PEAK_LIMIT, f"{peak} bytes allocated"
    return text


# -- ONNX ----------------------------------------------------------------------------------------


def _onnx_bytes(tmp_path: Path) -> bytes:
    pytest.importorskip("onnx", reason="the onnx package writes the real file being damaged")
    return F.write_onnx(tmp_path / "good.onnx").read_bytes()


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.75])
def test_a_truncated_onnx_file(tmp_path: Path, cut: float) -> None:
    data = _onnx_bytes(tmp_path)
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: int(len(data) * cut)])
    refused(read_onnx, path, "truncated ONNX model")


def _model(*graph_fields: bytes) -> bytes:
    """A ModelProto: IR version 8, a graph of ``graph_fields``, opset 17."""
    return pb_field(1, 8) + pb_field(7, b"".join(graph_fields)) + pb_field(8, pb_field(2, 17))


def _tensor(*dims: int, name: str = "W") -> bytes:
    return b"".join(pb_field(1, d) for d in dims) + pb_field(2, 1) + pb_field(8, name)


@pytest.mark.parametrize(("data", "needle"), [
    (pb_field(1, 8) + pb_varint(7 << 3 | 2) + pb_varint(1 << 40) + b"\0" * 64, "runs past"),
    (pb_field(1, 8) + b"\x38" + b"\xff" * 11, "longer than 10 bytes"),
    (_model(pb_field(5, _tensor(1 << 62, 1 << 62))), "more than 2**63 elements"),
    (_model(pb_field(5, _tensor((1 << 64) - 1))), "negative dimension"),
    (_model(pb_field(5, b"".join(pb_field(1, 2) for _ in range(65)))), "more than 64 dim"),
    (pb_field(1, 8) + pb_varint(7 << 3 | 3), "wire type 3"),
    (b"<html>404 Not Found</html>", "not a valid ONNX model"),
    (pb_field(2, "just a producer name"), "no IR version and no graph"),
    (_model(pb_field(5, _tensor(4))) + pb_field(7, b""), "two graphs"),
])
def test_a_hostile_onnx_protobuf(tmp_path: Path, data: bytes, needle: str) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    refused(read_onnx, path, needle)


def test_deep_nesting_in_an_onnx_graph_is_skipped_not_followed(tmp_path: Path) -> None:
    nested = b""
    for _ in range(5000):  # what the onnx package would recurse into until its limit
        nested = pb_field(99, nested)
    path = tmp_path / "deep.onnx"
    path.write_bytes(_model(pb_field(99, nested), pb_field(5, _tensor(4, 3))))
    assert read_onnx(path).parameters == 12


def test_an_onnx_file_past_protobufs_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.onnx"
    with open(path, "wb") as f:
        f.truncate((2 << 30) + 1)  # sparse: nothing is written, nothing may be read
    refused(read_onnx, path, "2 GiB")


def test_an_external_data_path_that_leaves_the_folder_is_not_listed(tmp_path: Path) -> None:
    ext = pb_field(13, pb_field(1, "location") + pb_field(2, "../../etc/passwd"))
    path = tmp_path / "ext.onnx"
    path.write_bytes(_model(pb_field(5, _tensor(4, 3) + pb_field(14, 1) + ext)))
    meta = read_onnx(path)
    assert meta.parameters == 12 and "external_data" not in meta.extra


# -- ORT and TFLite (FlatBuffers) -----------------------------------------------------------------


@pytest.mark.parametrize(("write", "needle"), [
    (lambda p: F.write_ort(p, init_count=0x7FFFFFFF), "2,147,483,647 entries"),
    (lambda p: F.write_ort(p, init_count=3), "past the end"),
    (lambda p: p.write_bytes(struct.pack("<I", 0xFFFFFF00) + b"ORTM" + bytes(32)), "past the end"),
    (lambda p: p.write_bytes(b"\x08\0\0\0ORTM"), "past the end"),
    (lambda p: p.write_bytes(bytes(16)), "no ORTM identifier"),
])
def test_a_hostile_ort_file(tmp_path: Path, write, needle: str) -> None:
    path = tmp_path / "bad.ort"
    write(path)
    refused(read_onnx, path, needle)


@pytest.mark.parametrize(("write", "needle"), [
    (lambda p: F.write_tflite(p, tensor_count=0x7FFFFFFF), "2,147,483,647 entries"),
    (lambda p: F.write_tflite(p, tensor_count=7), "past the end"),
    (lambda p: F.write_tflite(p, buffer_size=1 << 60), "more than the file holds"),
    (lambda p: F.write_tflite(p, shape=(-4, 3)), "negative dimension"),
    (lambda p: F.write_tflite(p, shape=(2**31 - 1,) * 3), "more than 2**63 elements"),
    (lambda p: p.write_bytes(struct.pack("<I", 1 << 31) + b"TFL3" + bytes(8)), "past the end"),
    (lambda p: p.write_bytes(b"TFL3"), "no TFL3 identifier"),
])
def test_a_hostile_tflite_file(tmp_path: Path, write, needle: str) -> None:
    path = tmp_path / "bad.tflite"
    write(path)
    refused(read_tflite, path, needle)


def test_a_truncated_tflite_file(tmp_path: Path) -> None:
    data = F.write_tflite(tmp_path / "good.tflite").read_bytes()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: len(data) // 2])
    refused(read_tflite, path, "not a valid TFLite model")


# -- Core ML -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "needle"), [
    (F.mlmodel_bytes()[:-5] + pb_varint(2 << 3 | 2) + pb_varint(1 << 35), "runs past"),
    (F.mlmodel_bytes()[:20], "truncated Core ML model"),
    (pb_field(1, 7), "no specification version or model type"),
    (F.mlmodel_bytes() + pb_field(500, b""), "two model types"),
])
def test_a_hostile_mlmodel(tmp_path: Path, data: bytes, needle: str) -> None:
    path = tmp_path / "bad.mlmodel"
    path.write_bytes(data)
    refused(read_coreml, path, needle)


def test_a_package_manifest_that_points_outside_the_package(tmp_path: Path) -> None:
    package = F.write_mlpackage(tmp_path / "P.mlpackage")
    secret = tmp_path / "secret.mlmodel"
    secret.write_bytes(F.mlmodel_bytes())
    manifest = json.loads((package / "Manifest.json").read_text())
    manifest["itemInfoEntries"]["A1"]["path"] = "../../secret.mlmodel"
    (package / "Manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MetadataError, match="leaves the package"):
        read_coreml(package)


def test_a_huge_or_special_manifest_is_not_read(tmp_path: Path) -> None:
    package = F.write_mlpackage(tmp_path / "P.mlpackage")
    (package / "Manifest.json").write_text(" " * (2 << 20))
    with pytest.raises(MetadataError, match="larger than 1 MiB"):
        read_coreml(package)
    (package / "Manifest.json").unlink()
    os.mkfifo(package / "Manifest.json")
    with pytest.raises(MetadataError, match="a FIFO, not a regular file"):
        read_coreml(package)


# -- PyTorch pickles -------------------------------------------------------------------------------


def _eocd(entries: int, cd_size: int = 46) -> bytes:
    """A zip end record declaring ``entries`` entries."""
    return b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, entries & 0xFFFF, entries & 0xFFFF,
                                      cd_size, 0, 0)


@pytest.mark.parametrize(("data", "needle"), [
    pytest.param(b"PK\x03\x04" + bytes(40) + _eocd(60_000, 64 << 20 | 1), "directory",
                 id="zip-directory-too-big"),
    pytest.param(b"PK\x03\x04" + bytes(40), "no end record", id="zip-no-end-record"),
    pytest.param(b"PK\x03\x04garbage" + _eocd(1), "not a valid zip archive", id="zip-garbage"),
    pytest.param(b"\x80\x02t.", "stack underflow", id="underflow"),
    pytest.param(b"L" + b"9" * 5000 + b"L\n.", "not a valid pickle", id="5000-digit-long"),
    pytest.param(b"\x80\x02}q\x00(X\x01\x00\x00\x00a", "not a valid pickle",
                 id="truncated"),
    pytest.param(b"\x80\x02q\x01.", "memo of nothing", id="memo-of-nothing"),
    pytest.param(b"\x00\x01\x02\x03 raw", "neither a zip archive nor a pickle", id="raw"),
    pytest.param(b"", "empty file", id="empty"),
])
def test_a_hostile_pickle_file(tmp_path: Path, data: bytes, needle: str) -> None:
    path = tmp_path / "bad.pt"
    path.write_bytes(data)
    refused(read_pytorch_file, path, needle)


def test_a_zip_without_a_data_pkl_or_with_a_huge_one(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "other.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("notes.txt", "not a checkpoint")
    refused(read_pytorch_file, path, "without one PyTorch data.pkl")
    monkeypatch.setattr(torch_reader, "MAX_PICKLE_BYTES", 1024)
    big = F.write_zip_pickle(tmp_path / "big.pt", b"\x80\x02N" + b"N0" * 2000 + b".")
    refused(read_pytorch_file, big, "limit 0 MiB", "not inspected")


def test_a_pickle_past_the_opcode_budget_is_inspected_in_part(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_reader, "MAX_OPCODES", 1000)
    data = b"\x80\x02cos\nsystem\nq\x000" + b"N0" * 5000 + b"N."
    path = tmp_path / "long.pt"
    path.write_bytes(data)
    meta = read_pytorch_file(path)
    assert meta.extra["unsafe_format"] is True
    assert meta.extra["suspicious_imports"] == ["os.system"]
    assert meta.extra["pickle_inspected"].startswith("in part")


def test_a_pickle_deeper_than_the_stack_cap(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch_reader, "MAX_STACK", 100)
    path = tmp_path / "deep.pt"
    path.write_bytes(b"\x80\x02" + b"(" * 1000 + b".")
    refused(read_pytorch_file, path, "stack or memo beyond")


def test_malicious_pickles_never_run(tmp_path: Path) -> None:
    """GLOBAL, STACK_GLOBAL (protocol 4), INST and REDUCE of os.system, in a bare pickle, in
    a torch-style zip and in a legacy torch file's object pickle: named, never run."""
    marker = tmp_path / "PWNED"
    cmd = f"touch {marker}"

    class Evil:
        def __reduce__(self):
            return (os.system, (cmd,))

    legacy = F.write_torch(tmp_path / "legacy.pt", legacy=True).read_bytes()
    cut = legacy.index(b"\x80\x02}", 30)  # the object's pickle starts after the header pickles
    variants = {
        "global.pt": F.malicious_pickle(cmd),
        "inst.pt": b"(S'" + cmd.encode() + b"'\nios\nsystem\n.",
        "stack_global.pt": pickle.dumps({"w": Evil()}, protocol=4),
        "zip.pt": None,
        "legacy-evil.pt": legacy[:cut] + pickle.dumps({"w": Evil()}, protocol=2),
    }
    for name, data in variants.items():
        path = tmp_path / name
        if data is None:
            F.write_zip_pickle(path, pickle.dumps([Evil()], protocol=2))
        else:
            path.write_bytes(data)
        meta = read_pytorch_file(path)
        assert meta.extra["unsafe_format"] is True
        assert meta.extra["suspicious_imports"] in (["os.system"], ["posix.system"]), name
    assert not marker.exists()


# -- safetensors headers and diffusers folders ----------------------------------------------------


def test_a_lora_header_with_escape_sequences_names_no_family_from_them(tmp_path: Path) -> None:
    path = F.write_lora(tmp_path / "l.safetensors",
                        metadata={"ss_base_model_version": "\x1b[2J\x1b]0;pwned\x07" * 50})
    meta = read_safetensors_file(path)
    assert meta.extra["base_family"] == "sdxl"  # from the key layout; the header's is unusable


@pytest.mark.parametrize(("index", "needle"), [
    ({"_class_name": "P", "../../etc": ["diffusers", "X"]}, "not a plain folder name"),
    ({"_class_name": "P", **{f"c{i}": ["d", "X"] for i in range(40)}}, "more than 32 comp"),
    ({"unet": ["diffusers", "UNet2DConditionModel"]}, "no pipeline _class_name"),
    ([1, 2, 3], "not a JSON object"),
])
def test_a_hostile_model_index(tmp_path: Path, index, needle: str) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(MetadataError, match=needle):
        read_diffusers_folder(folder)


# -- a scan of a tree full of them -----------------------------------------------------------------


def test_a_scan_lists_each_hostile_file_once_and_registers_the_rest(tmp_path: Path) -> None:
    models, state = tmp_path / "models", tmp_path / "state"
    good = {
        write_gguf(models / "llm" / "good-Q4_K_M.gguf"),
        F.write_lora(models / "loras" / "good.safetensors"),
        F.write_tflite(models / "tflite" / "good.tflite"),
        F.write_ort(models / "ort" / "good.ort"),
    }
    bad = {
        F.write_tflite(models / "tflite" / "bad.tflite", tensor_count=0x7FFFFFFF),
        F.write_ort(models / "ort" / "bad.ort", init_count=0x7FFFFFFF),
    }
    for name, data in (("bad.onnx", b"\x38" + b"\xff" * 11), ("bad.pt", b"\x80\x02t."),
                       ("bad\x1b[2J.ckpt", b"PK\x03\x04" + bytes(40)),
                       ("bad.mlmodel", F.mlmodel_bytes()[:20])):
        path = models / "junk" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        bad.add(path)
    marker = tmp_path / "PWNED"
    (models / "junk" / "evil.pt").write_bytes(F.malicious_pickle(f"touch {marker}"))
    (models / "junk" / "raw.bin").write_bytes(b"not a model at all")
    os.mkfifo(models / "junk" / "fifo.onnx")
    proj = models / "llm" / "mmproj-good-f16.gguf"
    proj.write_bytes(b"GGUF" + bytes(8))  # a broken projector beside a good model
    bad.add(proj)
    env = {"MODELDECK_MODELS_DIR": str(models), "MODELDECK_STATE_DIR": str(state),
           "MODELDECK_SCAN_HF_CACHE": "false"}
    before = tree_digest(models)

    proc = run_modeldeck("scan", env=env)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert_no_control_chars(proc.stdout)
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("  skipped ")]
    assert len(skipped) == len(bad), skipped
    for path in bad:
        shown = str(path).replace("\x1b", "\\x1b")
        assert sum(shown in line for line in skipped) == 1, (path, skipped)
    listed = json.loads(run_modeldeck("ls", "--json", env=env).stdout)
    paths = {m["path"] for m in listed}
    assert {str(p) for p in good} <= paths and not {str(p) for p in bad} & paths
    assert str(models / "junk" / "evil.pt") in paths  # inspected, flagged, never run
    gguf = next(m for m in listed if m["path"] == str(next(iter(
        p for p in good if p.suffix == ".gguf"))))
    assert [f["path"] for f in gguf["files"]] == [gguf["path"]]  # the broken projector is not
    assert not marker.exists()
    assert tree_digest(models) == before
