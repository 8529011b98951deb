"""The readers of ONNX, ORT, TFLite, Core ML and PyTorch files, on files the real libraries
write, cross-checked against what those libraries read back; pickles are inspected without
ever being loaded."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from tui import kinds as K
from tui.errors import MetadataError
from tui.metadata.coreml import read_coreml
from tui.metadata.onnx import read_onnx
from tui.metadata.pytorch import read_pytorch_file, read_pytorch_folder
from tui.metadata.tflite import read_tflite

from tests.support import formats as F

# -- ONNX ----------------------------------------------------------------------------------------


def test_onnx_header_matches_what_onnx_itself_reads(tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx", reason="the onnx package is not installed")
    path = F.write_onnx(tmp_path / "m.onnx", opset=17)
    meta = read_onnx(path)
    model = onnx.load(str(path))
    assert meta.extra["ir_version"] == model.ir_version
    assert meta.extra["opset"] == model.opset_import[0].version == 17
    assert [i["name"] for i in meta.extra["inputs"]] == [i.name for i in model.graph.input]
    assert [o["name"] for o in meta.extra["outputs"]] == [o.name for o in model.graph.output]
    assert meta.extra["inputs"][0]["shape"] == ["batch", 4]
    assert meta.parameters == sum(int(np.prod(t.dims)) for t in model.graph.initializer) == 15
    assert (meta.format, meta.dtype, meta.kind) == ("onnx", "F32", K.LLM)
    assert meta.tensor_bytes == 4 * 3 * 4 + 3 * 2
    assert meta.extra["producer"] == "modeldeck-tests"


def test_onnx_external_weights_are_counted_not_opened(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="the onnx package is not installed")
    path = F.write_onnx(tmp_path / "m.onnx", external=True)
    data = tmp_path / "m.onnx_data"
    data.unlink()  # never read: its absence changes nothing
    os.mkfifo(data)  # a FIFO there would hang a reader that opened it
    meta = read_onnx(path)
    assert meta.parameters == 15 and meta.extra["external_data"] == ["m.onnx_data"]
    assert meta.tensor_bytes == 4 * 3 * 4 + 3 * 2


def test_an_onnx_model_beside_its_config_takes_the_configs_kind(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason="the onnx package is not installed")
    path = F.write_onnx(tmp_path / "m.onnx", inputs=("x",), outputs=("y",))
    assert read_onnx(path).kind == K.UNKNOWN
    (tmp_path / "config.json").write_text('{"architectures": ["BertModel"]}')
    assert read_onnx(path).kind == K.EMBEDDING


def test_ort_flatbuffer(tmp_path: Path) -> None:
    meta = read_onnx(F.write_ort(tmp_path / "m.ort", opset=15))
    assert (meta.format, meta.extra["container"], meta.extra["opset"]) == ("onnx", "ort", 15)
    assert meta.extra["ir_version"] == 9 and meta.parameters == 12 and meta.tensor_bytes == 48
    assert [i["name"] for i in meta.extra["inputs"]] == ["input_ids"]
    assert meta.kind == K.LLM


# -- TFLite ------------------------------------------------------------------------------------


def test_tflite_matches_what_the_tflite_package_reads(tmp_path: Path) -> None:
    tflite = pytest.importorskip("tflite", reason="the tflite package is not installed")
    path = F.write_tflite(tmp_path / "m.tflite")
    meta = read_tflite(path)
    model = tflite.Model.GetRootAs(path.read_bytes(), 0)
    sub = model.Subgraphs(0)
    assert meta.extra["schema_version"] == model.Version() == 3
    assert meta.extra["n_tensors"] == sub.TensorsLength() == 3
    assert [i["name"] for i in meta.extra["inputs"]] == [
        sub.Tensors(sub.Inputs(0)).Name().decode()]
    assert meta.extra["outputs"][0] == {"name": "logits", "shape": [1, 3]}
    assert meta.parameters == 12 and meta.tensor_bytes == 48 and meta.dtype == "F32"
    assert meta.extra["description"] == "modeldeck tests"


def test_a_file_without_the_tflite_identifier_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(bytes(64))
    with pytest.raises(MetadataError, match="no TFL3 identifier"):
        read_tflite(path)


# -- Core ML -----------------------------------------------------------------------------------


def test_mlmodel_and_mlpackage(tmp_path: Path) -> None:
    meta = read_coreml(F.write_mlmodel(tmp_path / "m.mlmodel", spec_version=5, model_type=500))
    assert (meta.format, meta.extra["specification_version"], meta.extra["model_type"]) == (
        "coreml", 5, "neuralNetwork")
    assert meta.extra["author"] == "modeldeck" and meta.extra["description"] == "tiny test model"
    package = read_coreml(F.write_mlpackage(tmp_path / "T.mlpackage", weight_bytes=8192))
    assert package.extra["container"] == "mlpackage" and package.tensor_bytes == 8192
    assert package.extra["model_type"] == "mlProgram" and package.name == "T"
    assert [i["name"] for i in package.extra["inputs"]] == ["input_ids"]


# -- PyTorch pickles ---------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_torch_save_files_are_inspected_never_loaded(tmp_path: Path, legacy: bool) -> None:
    path = F.write_torch(tmp_path / "w.pt", {"model.layers.0.mlp.up_proj.weight": (8, 4),
                                             "lm_head.weight": (16, 4)}, legacy=legacy)
    meta = read_pytorch_file(path)
    assert meta.extra["unsafe_format"] is True
    assert meta.extra["container"] == ("legacy" if legacy else "zip")
    assert (meta.parameters, meta.dtype, meta.extra["n_tensors"]) == (96, "F16", 2)
    assert meta.tensor_bytes == 96 * 2
    assert "suspicious_imports" not in meta.extra
    assert "torch._utils._rebuild_tensor_v2" in meta.extra["pickle_imports"]
    assert meta.kind == K.LLM  # from the tensor names, as for safetensors


def test_a_torch_checkpoint_has_the_kind_its_tensor_names_say(tmp_path: Path) -> None:
    sd = F.write_torch(tmp_path / "sd.ckpt", {
        "model.diffusion_model.input_blocks.0.0.weight": (8, 4),
        "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight": (8, 4),
        "first_stage_model.decoder.conv_out.weight": (4, 4)})
    meta = read_pytorch_file(sd)
    assert (meta.kind, meta.extra["base_family"]) == (K.DIFFUSION, "sd1")
    lora = F.write_torch(tmp_path / "l.pt", {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (16, 32),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (32, 16)})
    meta = read_pytorch_file(lora)
    assert (meta.kind, meta.extra["lora_rank"]) == (K.LORA, 16)


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_a_pickle_that_would_run_code_is_named_not_run(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "PWNED"
    data = F.malicious_pickle(f"touch {marker}") if protocol == 0 else pickle.dumps(
        {"w": _Evil(f"touch {marker}")}, protocol=protocol)
    for path in (tmp_path / "a.pt", F.write_zip_pickle(tmp_path / "b.pt", data)):
        if not path.exists():
            path.write_bytes(data)
        meta = read_pytorch_file(path)
        assert meta.extra["unsafe_format"] is True
        (bad,) = meta.extra["suspicious_imports"]
        assert bad in ("os.system", "posix.system")  # GLOBAL or STACK_GLOBAL, as pickled
    assert not marker.exists()


def test_a_pytorch_folder_reads_its_config_and_index(tmp_path: Path) -> None:
    folder = tmp_path / "old-model"
    F.write_torch(folder / "pytorch_model-00001-of-00002.bin", {"model.layers.0.w": (4, 4)})
    F.write_torch(folder / "pytorch_model-00002-of-00002.bin", {"lm_head.weight": (8, 4)})
    (folder / "pytorch_model.bin.index.json").write_text(
        '{"weight_map": {"a": "pytorch_model-00001-of-00002.bin", '
        '"b": "pytorch_model-00002-of-00002.bin"}}')
    (folder / "config.json").write_text(
        '{"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_layer": 2}')
    F.write_torch(folder / "training_args.bin", {"x": (1,)})  # not a weight file
    meta = read_pytorch_folder(folder)
    assert (meta.kind, meta.architecture, meta.n_layers, meta.parameters) == (
        K.LLM, "gpt2", 2, 48)
    assert meta.extra["weight_files"] == ["pytorch_model-00001-of-00002.bin",
                                          "pytorch_model-00002-of-00002.bin"]


def test_an_old_ggml_file_is_told_apart(tmp_path: Path) -> None:
    path = tmp_path / "ggml-model-q4_0.bin"
    path.write_bytes(b"tjgg" + bytes(64))
    with pytest.raises(MetadataError, match="old GGJT file"):
        read_pytorch_file(path)


@pytest.mark.parametrize("module", [
    "tui.metadata.onnx", "tui.metadata.tflite", "tui.metadata.coreml", "tui.metadata.pytorch",
    "tui.metadata.diffusers", "tui.metadata.kinds",
])
def test_the_readers_need_none_of_the_format_packages(module: str) -> None:
    """Runtime code reads every format by hand: onnx, tflite, flatbuffers, coremltools and
    torch are test-only (and textual never in a service)."""
    import json
    import subprocess
    import sys

    probe = f"import {module}, sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120).stdout
    loaded = set(json.loads(out.strip().splitlines()[-1]))
    assert not loaded & {"onnx", "tflite", "flatbuffers", "coremltools", "torch", "textual",
                         "google.protobuf"}
