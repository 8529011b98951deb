"""Model files of every kind and format the tests (and the scan benchmark) write.

Real libraries where they exist: ``safetensors.numpy.save_file`` with the real tensor-name
layouts of each kind (tiny shapes), ``gguf.GGUFWriter`` for projectors, vocabularies and
adapters, ``onnx.helper`` for ONNX, the ``tflite`` package's generated builders for TFLite,
``torch.save`` for PyTorch checkpoints. Formats without a writer on PyPI (ONNX Runtime's
``.ort`` FlatBuffer, Core ML's protobuf) are assembled with ``flatbuffers.Builder`` and a few
lines of protobuf encoding. Heavy packages are imported inside the writers that need them.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from tests.support.gguf import tokenizer_kv, write_gguf_file

F16 = np.float16


def _zeros(*shape: int, dtype: Any = F16) -> np.ndarray:
    return np.zeros(shape, dtype=dtype)


def save_tensors(path: Path, tensors: dict[str, np.ndarray],
                 metadata: dict[str, str] | None = None) -> Path:
    """``safetensors.numpy.save_file`` into ``path`` (folders made)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


# -- safetensors single files with the real key layouts ----------------------------------------

_SD1_TE = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
_SD2_TE = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
_VAE_KEYS = ("encoder.conv_in.weight", "encoder.down.0.block.0.conv1.weight",
             "decoder.conv_out.weight", "decoder.up.0.block.0.conv1.weight",
             "quant_conv.weight", "post_quant_conv.weight")


def write_checkpoint(path: Path, family: str = "sd1") -> Path:
    """A single-file diffusion checkpoint: ``sd1``, ``sd2``, ``sdxl`` or ``flux`` keys."""
    t: dict[str, np.ndarray] = {}
    if family == "flux":
        for key in ("double_blocks.0.img_attn.qkv.weight", "double_blocks.0.txt_mlp.0.weight",
                    "single_blocks.0.linear1.weight", "img_in.weight", "txt_in.weight",
                    "final_layer.linear.weight"):
            t[key] = _zeros(8, 4)
        return save_tensors(path, t)
    for key in ("model.diffusion_model.input_blocks.0.0.weight",
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.out.2.weight"):
        t[key] = _zeros(8, 4)
    for key in _VAE_KEYS:
        t["first_stage_model." + key] = _zeros(4, 4)
    if family == "sdxl":
        t["conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight"] = \
            _zeros(8, 4)
        t["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"] = \
            _zeros(8, 4)
    else:
        t[_SD2_TE if family == "sd2" else _SD1_TE] = _zeros(8, 4)
    return save_tensors(path, t)


def write_lora(path: Path, *, rank: int = 8, style: str = "kohya-sdxl",
               metadata: dict[str, str] | None = None) -> Path:
    """A LoRA: ``kohya-sdxl`` (lora_unet_/lora_te1_ keys), ``kohya-sd1`` (lora_te_), ``flux``
    (diffusers-PEFT keys on Flux blocks) or ``peft-llm`` (``lora_A``/``lora_B`` on q_proj)."""
    t: dict[str, np.ndarray] = {}
    if style.startswith("kohya"):
        te = "lora_te1_" if style == "kohya-sdxl" else "lora_te_"
        unet = ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
                if style == "kohya-sdxl" else
                "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q")
        for base in (unet, te + "text_model_encoder_layers_0_self_attn_q_proj"):
            t[f"{base}.lora_down.weight"] = _zeros(rank, 16)
            t[f"{base}.lora_up.weight"] = _zeros(16, rank)
            t[f"{base}.alpha"] = np.array(rank, dtype=F16)
    elif style == "flux":
        base = "transformer.single_transformer_blocks.0.attn.to_q"
        t[f"{base}.lora_A.weight"] = _zeros(rank, 16)
        t[f"{base}.lora_B.weight"] = _zeros(16, rank)
    else:
        base = "base_model.model.model.layers.0.self_attn.q_proj"
        t[f"{base}.lora_A.weight"] = _zeros(rank, 16)
        t[f"{base}.lora_B.weight"] = _zeros(16, rank)
    return save_tensors(path, t, metadata)


def write_vae(path: Path) -> Path:
    """A standalone VAE (``encoder.*`` / ``decoder.*`` / ``quant_conv`` keys only)."""
    return save_tensors(path, {k: _zeros(4, 4) for k in _VAE_KEYS})


def write_text_encoder(path: Path, which: str = "clip") -> Path:
    """A CLIP-L (``text_model.encoder.layers``) or T5 (``encoder.block``) text encoder."""
    if which == "t5":
        keys = ("encoder.block.0.layer.0.SelfAttention.q.weight",
                "encoder.block.0.layer.1.DenseReluDense.wi.weight",
                "encoder.final_layer_norm.weight", "shared.weight")
    else:
        keys = ("text_model.embeddings.token_embedding.weight",
                "text_model.encoder.layers.0.self_attn.q_proj.weight",
                "text_model.final_layer_norm.weight")
    return save_tensors(path, {k: _zeros(8, 4) for k in keys})


def write_controlnet(path: Path) -> Path:
    """An SD 1.x ControlNet in the original layout (``control_model.*``)."""
    keys = ("control_model.input_blocks.0.0.weight", "control_model.zero_convs.0.0.weight",
            "control_model.input_hint_block.0.weight", "control_model.middle_block_out.0.weight")
    return save_tensors(path, {k: _zeros(8, 4) for k in keys})


# -- folders -----------------------------------------------------------------------------------


def _json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_diffusers(folder: Path, pipeline: str = "StableDiffusionXLPipeline") -> Path:
    """A diffusers folder: model_index.json and unet/vae/text_encoder components, each with
    its config.json and (fp16 variant too, for the unet) safetensors weights."""
    _json(folder / "model_index.json", {
        "_class_name": pipeline, "_diffusers_version": "0.30.0",
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    })
    _json(folder / "unet" / "config.json", {"_class_name": "UNet2DConditionModel"})
    unet = {"down_blocks.0.resnets.0.conv1.weight": _zeros(8, 4, dtype=np.float32),
            "mid_block.attentions.0.proj_in.weight": _zeros(8, 4, dtype=np.float32)}
    save_tensors(folder / "unet" / "diffusion_pytorch_model.safetensors", unet)
    save_tensors(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors",
                 {k: v.astype(F16) for k, v in unet.items()})
    _json(folder / "vae" / "config.json", {"_class_name": "AutoencoderKL"})
    save_tensors(folder / "vae" / "diffusion_pytorch_model.safetensors",
                 {"encoder.down_blocks.0.resnets.0.conv1.weight": _zeros(4, 4),
                  "decoder.conv_out.weight": _zeros(4, 4)})
    _json(folder / "text_encoder" / "config.json", {"architectures": ["CLIPTextModel"]})
    write_text_encoder(folder / "text_encoder" / "model.safetensors")
    _json(folder / "scheduler" / "scheduler_config.json", {"_class_name": "Euler"})
    return folder


def write_hf_folder(folder: Path, architecture: str, *, extra_config: dict | None = None,
                    sentence_transformers: bool = False) -> Path:
    """A transformers folder (config.json with ``architectures``, one safetensors file)."""
    _json(folder / "config.json", {"architectures": [architecture], "model_type": "x",
                                   "hidden_size": 16, "num_hidden_layers": 2,
                                   "num_attention_heads": 4, **(extra_config or {})})
    if sentence_transformers:
        _json(folder / "modules.json", [{"idx": 0, "name": "0", "path": "",
                                         "type": "sentence_transformers.models.Transformer"}])
    keys = ("embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight") \
        if sentence_transformers else ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight")
    save_tensors(folder / "model.safetensors", {k: _zeros(8, 4) for k in keys})
    return folder


def write_mlx(folder: Path, *, bits: int = 4, group_size: int = 64) -> Path:
    """An MLX folder: packed U32 weights with scales and biases, config.json with
    ``quantization``. The linear layer holds 64 x 128 weights."""
    per_u32 = 32 // bits
    _json(folder / "config.json", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
        "num_hidden_layers": 1, "num_attention_heads": 4,
        "quantization": {"group_size": group_size, "bits": bits},
    })
    save_tensors(folder / "model.safetensors", {
        "model.layers.0.mlp.up_proj.weight": np.zeros((64, 128 // per_u32), dtype=np.uint32),
        "model.layers.0.mlp.up_proj.scales": _zeros(64, 128 // group_size),
        "model.layers.0.mlp.up_proj.biases": _zeros(64, 128 // group_size),
        "model.norm.weight": _zeros(128),
    })
    return folder


# -- GGUF kinds --------------------------------------------------------------------------------


def write_mmproj(path: Path) -> Path:
    """A llama.cpp vision projector (``clip`` architecture, ``general.type = mmproj``)."""
    kv = [("type", "mmproj"), ("bool", "clip.has_vision_encoder", True),
          ("string", "clip.projector_type", "mlp"), ("uint32", "clip.vision.image_size", 224)]
    tensors = [("mm.0.weight", np.zeros((16, 32), np.float16)),
               ("v.blk.0.attn_q.weight", np.zeros((32, 32), np.float16))]
    return write_gguf_file(path, arch="clip", kv=kv, tensors=tensors)


def write_vocab_gguf(path: Path) -> Path:
    """A vocabulary-only GGUF, as llama.cpp's ``ggml-vocab-*.gguf`` (no tensors)."""
    kv = tokenizer_kv("llama", [f"t{i}" for i in range(64)], bos=1, eos=2)
    return write_gguf_file(path, arch="llama", kv=kv, tensors=[])


def write_gguf_lora(path: Path, rank: int = 4) -> Path:
    """A llama.cpp LoRA adapter (``general.type = adapter``, ``*.lora_a``/``*.lora_b``)."""
    kv = [("type", "adapter"), ("string", "adapter.type", "lora"),
          ("float32", "adapter.lora.alpha", 16.0)]
    tensors = [("blk.0.attn_q.weight.lora_a", np.zeros((rank, 64), np.float32)),
               ("blk.0.attn_q.weight.lora_b", np.zeros((64, rank), np.float32))]
    return write_gguf_file(path, arch="llama", kv=kv, tensors=tensors)


def write_embedding_gguf(path: Path) -> Path:
    """A BERT embedding model GGUF with a pooling type."""
    kv = [("uint32", "bert.pooling_type", 1), ("context_length", 512), ("block_count", 1),
          ("embedding_length", 32), ("head_count", 2)]
    return write_gguf_file(path, arch="bert", kv=kv,
                           tensors=[("token_embd.weight", np.zeros((8, 32), np.float32))])


# -- ONNX, ORT, TFLite, Core ML ------------------------------------------------------------------


def write_onnx(path: Path, *, inputs: tuple[str, ...] = ("input_ids",),
               outputs: tuple[str, ...] = ("logits",), opset: int = 17,
               external: bool = False) -> Path:
    """A tiny ONNX model (one MatMul, F32 and F16 initializers) written by ``onnx``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path.parent.mkdir(parents=True, exist_ok=True)
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    b = numpy_helper.from_array(np.ones((3,), np.float16), "B")
    nodes = [helper.make_node("MatMul", [inputs[0], "W"], [outputs[0]])]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 4]) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 3]) for n in outputs],
        [w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="modeldeck-tests")
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + "_data", size_threshold=0)
    else:
        onnx.save(model, str(path))
    return path


def _patch_u32(data: bytes, offset_from_end: int, value: int) -> bytes:
    """``data`` with the u32 at a builder offset (counted from the end) replaced."""
    at = len(data) - offset_from_end
    return data[:at] + struct.pack("<I", value) + data[at + 4 :]


def write_ort(path: Path, *, opset: int = 17, init_count: int | None = None) -> Path:
    """A tiny ONNX Runtime ``.ort`` FlatBuffer (ort.fbs: InferenceSession > Model > Graph);
    ``init_count`` overwrites the initializers vector's declared length (hostile files)."""
    import flatbuffers

    b = flatbuffers.Builder(256)
    raw = b.CreateByteVector(bytes(48))  # 12 x F32
    name = b.CreateString("W")
    b.StartVector(8, 2, 8)
    b.PrependInt64(3)
    b.PrependInt64(4)
    dims = b.EndVector()
    b.StartObject(6)  # Tensor
    b.PrependUOffsetTRelativeSlot(0, name, 0)
    b.PrependUOffsetTRelativeSlot(2, dims, 0)
    b.PrependInt32Slot(3, 1, 0)
    b.PrependUOffsetTRelativeSlot(4, raw, 0)
    tensor = b.EndObject()
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(tensor)
    inits = b.EndVector()
    io = {}
    for key, text in (("in", "input_ids"), ("out", "logits")):
        s = b.CreateString(text)
        b.StartVector(4, 1, 4)
        b.PrependUOffsetTRelative(s)
        io[key] = b.EndVector()
    b.StartObject(9)  # Graph
    b.PrependUOffsetTRelativeSlot(0, inits, 0)
    b.PrependUOffsetTRelativeSlot(5, io["in"], 0)
    b.PrependUOffsetTRelativeSlot(6, io["out"], 0)
    graph = b.EndObject()
    domain = b.CreateString("")
    b.StartObject(2)  # OperatorSetId
    b.PrependUOffsetTRelativeSlot(0, domain, 0)
    b.PrependInt64Slot(1, opset, 0)
    opset_id = b.EndObject()
    b.StartVector(4, 1, 4)
    b.PrependUOffsetTRelative(opset_id)
    opsets = b.EndVector()
    producer = b.CreateString("modeldeck-tests")
    b.StartObject(10)  # Model
    b.PrependInt64Slot(0, 9, 0)
    b.PrependUOffsetTRelativeSlot(1, opsets, 0)
    b.PrependUOffsetTRelativeSlot(2, producer, 0)
    b.PrependUOffsetTRelativeSlot(7, graph, 0)
    model = b.EndObject()
    version = b.CreateString("5")
    b.StartObject(4)  # InferenceSession
    b.PrependUOffsetTRelativeSlot(0, version, 0)
    b.PrependUOffsetTRelativeSlot(1, model, 0)
    session = b.EndObject()
    b.Finish(session, file_identifier=b"ORTM")
    data = bytes(b.Output())
    if init_count is not None:
        data = _patch_u32(data, inits, init_count)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def write_tflite(path: Path, *, tensor_count: int | None = None,
                 buffer_size: int | None = None, shape: tuple[int, ...] = (4, 3)) -> Path:
    """A tiny TFLite model built with the ``tflite`` package's generated builders: a weight
    tensor (4 x 3 F32, with data), an input and an output (no data). Hostile variants:
    ``tensor_count`` overwrites the tensors vector's length, ``buffer_size`` makes the
    weights' buffer declare that many bytes stored after the FlatBuffer, ``shape`` is the
    weight tensor's."""
    import flatbuffers
    import tflite

    b = flatbuffers.Builder(256)
    data = b.CreateByteVector(bytes(48))
    tflite.BufferStart(b)
    empty = tflite.BufferEnd(b)
    tflite.BufferStart(b)
    if buffer_size is None:
        tflite.BufferAddData(b, data)
    else:
        tflite.BufferAddOffset(b, 1)
        tflite.BufferAddSize(b, buffer_size)
    weights = tflite.BufferEnd(b)
    tensors = []
    for name, dims, buffer in (("input_ids", (1, 4), 0), ("W", shape, 1),
                               ("logits", (1, 3), 0)):
        n = b.CreateString(name)
        tflite.TensorStartShapeVector(b, len(dims))
        for d in reversed(dims):
            b.PrependInt32(d)
        s = b.EndVector()
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, s)
        tflite.TensorAddType(b, tflite.TensorType.FLOAT32)
        tflite.TensorAddBuffer(b, buffer)
        tflite.TensorAddName(b, n)
        tensors.append(tflite.TensorEnd(b))
    tflite.SubGraphStartTensorsVector(b, len(tensors))
    for t in reversed(tensors):
        b.PrependUOffsetTRelative(t)
    tvec = b.EndVector()
    vectors = {}
    for key, items in (("in", [0]), ("out", [2])):
        tflite.SubGraphStartInputsVector(b, len(items))
        for i in reversed(items):
            b.PrependInt32(i)
        vectors[key] = b.EndVector()
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tvec)
    tflite.SubGraphAddInputs(b, vectors["in"])
    tflite.SubGraphAddOutputs(b, vectors["out"])
    sub = tflite.SubGraphEnd(b)
    tflite.ModelStartSubgraphsVector(b, 1)
    b.PrependUOffsetTRelative(sub)
    subs = b.EndVector()
    tflite.ModelStartBuffersVector(b, 2)
    b.PrependUOffsetTRelative(weights)
    b.PrependUOffsetTRelative(empty)
    bufs = b.EndVector()
    desc = b.CreateString("modeldeck tests")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddSubgraphs(b, subs)
    tflite.ModelAddBuffers(b, bufs)
    tflite.ModelAddDescription(b, desc)
    model = tflite.ModelEnd(b)
    b.Finish(model, file_identifier=b"TFL3")
    out = bytes(b.Output())
    if tensor_count is not None:
        out = _patch_u32(out, tvec, tensor_count)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path


def pb_varint(n: int) -> bytes:
    """A protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_field(number: int, value: int | bytes | str) -> bytes:
    """One protobuf field: a varint for an int, length-delimited for bytes or text."""
    if isinstance(value, int):
        return pb_varint(number << 3) + pb_varint(value)
    data = value.encode() if isinstance(value, str) else value
    return pb_varint(number << 3 | 2) + pb_varint(len(data)) + data


def mlmodel_bytes(inputs: tuple[str, ...] = ("input_ids",), outputs: tuple[str, ...] = (
        "logits",), spec_version: int = 7, model_type: int = 502) -> bytes:
    """A Core ML ``Model`` message: specification version, description, an empty model."""
    desc = b"".join(pb_field(1, pb_field(1, n)) for n in inputs)
    desc += b"".join(pb_field(10, pb_field(1, n)) for n in outputs)
    desc += pb_field(100, pb_field(1, "tiny test model") + pb_field(3, "modeldeck"))
    return pb_field(1, spec_version) + pb_field(2, desc) + pb_field(model_type, b"")


def write_mlmodel(path: Path, **kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mlmodel_bytes(**kw))
    return path


def write_mlpackage(folder: Path, weight_bytes: int = 4096) -> Path:
    """A Core ML package: Manifest.json naming Data/com.apple.CoreML/model.mlmodel, and an ML
    program's weights file."""
    _json(folder / "Manifest.json", {
        "fileFormatVersion": "1.0.0",
        "itemInfoEntries": {"A1": {"author": "com.apple.CoreML", "description": "CoreML Model",
                                   "name": "model.mlmodel",
                                   "path": "com.apple.CoreML/model.mlmodel"}},
        "rootModelIdentifier": "A1",
    })
    write_mlmodel(folder / "Data" / "com.apple.CoreML" / "model.mlmodel")
    weights = folder / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(bytes(weight_bytes))
    return folder


# -- PyTorch pickles ---------------------------------------------------------------------------


def write_torch(path: Path, tensors: dict[str, tuple[int, ...]] | None = None, *,
                legacy: bool = False) -> Path:
    """A state dict saved by ``torch.save`` (zip format, or the legacy format)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = tensors or {"model.layers.0.self_attn.q_proj.weight": (8, 4),
                          "lm_head.weight": (16, 4)}
    state = {name: torch.zeros(shape, dtype=torch.float16) for name, shape in tensors.items()}
    torch.save(state, str(path), _use_new_zipfile_serialization=not legacy)
    return path


def malicious_pickle(command: str) -> bytes:
    """A protocol-0 pickle that runs ``os.system(command)`` when loaded (never load it)."""
    return b"cos\nsystem\n(S'" + command.encode() + b"'\ntR."


def write_zip_pickle(path: Path, pickle_bytes: bytes, prefix: str = "archive") -> Path:
    """A torch-style zip archive around ``pickle_bytes`` (``<prefix>/data.pkl``)."""
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", pickle_bytes)
        zf.writestr(f"{prefix}/version", "3\n")
    return path


def u32(n: int) -> bytes:
    return struct.pack("<I", n)
