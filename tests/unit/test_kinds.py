"""Model kinds from file contents: GGUF keys and tensors, safetensors tensor-name layouts,
config files, diffusers folders; how files group into models (projectors with their models,
single-file LoRAs, pickles beside safetensors); and the one line a non-runnable model gets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tui import kinds as K
from tui.metadata.gguf import read_gguf, read_gguf_model
from tui.metadata.kinds import describe, io_kind, kind_of, not_runnable
from tui.metadata.safetensors import read_safetensors_file, read_safetensors_folder
from tui.metadata.types import ModelMetadata
from tui.registration import group_model_files, read_metadata

from tests.support import formats as F
from tests.support.gguf import write_gguf, write_gguf_file

# -- GGUF --------------------------------------------------------------------------------------


def test_gguf_kinds_come_from_the_header_not_the_name(tmp_path: Path) -> None:
    # Names that say nothing (or the wrong thing): only the headers tell.
    assert read_gguf(F.write_mmproj(tmp_path / "a.gguf")).kind == K.PROJECTOR
    assert read_gguf(F.write_vocab_gguf(tmp_path / "model-Q4_K_M.gguf")).kind == K.TOKENIZER
    lora = read_gguf(F.write_gguf_lora(tmp_path / "b.gguf", rank=4))
    assert (lora.kind, lora.extra["lora_rank"], lora.extra["base_family"]) == (K.LORA, 4, "llama")
    emb = read_gguf(F.write_embedding_gguf(tmp_path / "c.gguf"))
    assert (emb.kind, emb.extra["pooling"]) == (K.EMBEDDING, "mean")
    assert read_gguf(write_gguf(tmp_path / "mmproj-looking-llm.gguf")).kind == K.LLM
    flux = write_gguf_file(tmp_path / "d.gguf", arch="flux",
                           tensors=[("double_blocks.0.img_attn.qkv.weight",
                                     np.zeros((8, 32), np.float16))])
    assert (read_gguf(flux).kind, read_gguf(flux).extra["base_family"]) == (K.DIFFUSION, "flux")


def test_a_qwen3_embedding_gguf_is_told_by_its_pooling_type(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "q.gguf", arch="qwen3", extra_kv={"qwen3.pooling_type": 3})
    assert read_gguf(path).kind == K.EMBEDDING
    assert read_gguf(write_gguf(tmp_path / "r.gguf", arch="qwen3")).kind == K.LLM


def test_a_split_set_whose_first_shard_holds_no_tensors_is_a_model(tmp_path: Path) -> None:
    # llama.cpp's gguf-split --no-tensor-first-split: shard 1 is metadata only.
    from gguf import GGUFWriter

    writer = GGUFWriter(str(tmp_path / "m.gguf"), "llama", split_max_tensors=1,
                        small_first_shard=True)
    writer.add_block_count(2)
    for i in range(2):
        writer.add_tensor(f"blk.{i}.w", np.zeros((8, 32), np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    shards = sorted(tmp_path.glob("m-*.gguf"))
    assert len(shards) == 3 and read_gguf(shards[0]).kind == K.TOKENIZER  # alone: no tensors
    whole = read_gguf_model(shards[1])
    assert whole.kind == K.LLM and whole.parameters == 2 * 8 * 32


# -- safetensors layouts -----------------------------------------------------------------------


@pytest.mark.parametrize(("write", "kind", "details"), [
    (lambda p: F.write_checkpoint(p, "sd1"), K.DIFFUSION, {"base_family": "sd1"}),
    (lambda p: F.write_checkpoint(p, "sd2"), K.DIFFUSION, {"base_family": "sd2"}),
    (lambda p: F.write_checkpoint(p, "sdxl"), K.DIFFUSION, {"base_family": "sdxl"}),
    (lambda p: F.write_checkpoint(p, "flux"), K.DIFFUSION, {"base_family": "flux"}),
    (lambda p: F.write_lora(p, rank=32), K.LORA, {"base_family": "sdxl", "lora_rank": 32}),
    (lambda p: F.write_lora(p, style="kohya-sd1", rank=4), K.LORA,
     {"base_family": "sd1", "lora_rank": 4}),
    (lambda p: F.write_lora(p, style="flux", rank=16), K.LORA,
     {"base_family": "flux", "lora_rank": 16}),
    (lambda p: F.write_lora(p, style="peft-llm", rank=8), K.LORA,
     {"base_family": "llm", "lora_rank": 8}),
    (F.write_vae, K.VAE, {}),
    (lambda p: F.write_text_encoder(p, "clip"), K.TEXT_ENCODER, {"encoder": "clip"}),
    (lambda p: F.write_text_encoder(p, "t5"), K.TEXT_ENCODER, {"encoder": "t5"}),
    (F.write_controlnet, K.CONTROLNET, {}),
])
def test_single_safetensors_files_by_their_tensor_names(tmp_path: Path, write, kind, details
                                                        ) -> None:
    meta = read_safetensors_file(write(tmp_path / "x.safetensors"))
    assert meta.kind == kind
    assert {k: meta.extra.get(k) for k in details} == details


@pytest.mark.parametrize(("metadata", "family"), [
    ({"ss_base_model_version": "sd_v1"}, "sd1"),
    ({"ss_base_model_version": "sdxl_base_v1-0"}, "sdxl"),
    ({"modelspec.architecture": "flux-1-dev/lora"}, "flux"),
    ({"modelspec.architecture": "stable-diffusion-v3-medium/lora"}, "sd3"),
])
def test_a_lora_header_names_its_base_family(tmp_path: Path, metadata, family) -> None:
    # The key layout says SDXL; the header's own word wins.
    meta = read_safetensors_file(F.write_lora(tmp_path / "l.safetensors", metadata=metadata))
    assert (meta.kind, meta.extra["base_family"]) == (K.LORA, family)
    assert describe(meta.kind, meta.extra).startswith("LoRA adapter (")


def test_folders_by_their_config(tmp_path: Path) -> None:
    assert read_safetensors_folder(
        F.write_hf_folder(tmp_path / "llm", "LlamaForCausalLM")).kind == K.LLM
    vlm = F.write_hf_folder(tmp_path / "vlm", "LlavaForConditionalGeneration",
                            extra_config={"vision_config": {"hidden_size": 8}})
    assert read_safetensors_folder(vlm).kind == K.VLM
    t5 = F.write_hf_folder(tmp_path / "t5", "T5ForConditionalGeneration")
    assert read_safetensors_folder(t5).kind == K.LLM  # a seq2seq LM, no vision
    emb = F.write_hf_folder(tmp_path / "emb", "BertModel", sentence_transformers=True)
    assert read_safetensors_folder(emb).kind == K.EMBEDDING
    te = F.write_hf_folder(tmp_path / "te", "CLIPTextModel")
    assert read_safetensors_folder(te).kind == K.TEXT_ENCODER


def test_a_peft_adapter_folder_is_a_lora_with_its_rank_and_base(tmp_path: Path) -> None:
    folder = tmp_path / "adapter"
    F.write_lora(folder / "adapter_model.safetensors", style="peft-llm", rank=8)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 8, "lora_alpha": 16,
        "base_model_name_or_path": "Qwen/Qwen2.5-0.5B"}))
    ((fmt, main, members),) = group_model_files([folder / "adapter_model.safetensors"])
    assert main == folder  # one model: the folder (its config says so)
    meta = read_metadata(fmt, main, members)
    assert (meta.kind, meta.extra["lora_rank"], meta.extra["base_model"]) == (
        K.LORA, 8, "Qwen/Qwen2.5-0.5B")


def test_an_mlx_folder_has_its_own_format_and_quant(tmp_path: Path) -> None:
    meta = read_safetensors_folder(F.write_mlx(tmp_path / "mlx", bits=4, group_size=64))
    assert (meta.format, meta.quantization, meta.kind) == ("mlx", "Q4 g64", K.LLM)
    # 64 x 128 packed eight to a U32, plus the norm; scales and biases are not parameters.
    assert meta.parameters == 64 * 128 + 128


def test_a_diffusers_folder_is_one_diffusion_model_with_its_components(tmp_path: Path) -> None:
    folder = F.write_diffusers(tmp_path / "sdxl")
    files = [p for p in folder.rglob("*") if p.suffix in (".safetensors", ".json")]
    ((fmt, main, members),) = group_model_files(files)
    assert main == folder and (folder / "model_index.json") in members
    meta = read_metadata(fmt, main, members)
    assert (meta.kind, meta.extra["base_family"], meta.extra["pipeline"]) == (
        K.DIFFUSION, "sdxl", "StableDiffusionXLPipeline")
    comps = meta.extra["components"]
    assert comps["vae"]["class"] == "AutoencoderKL" and comps["unet"]["parameters"] == 64
    # The fp16 variant of the unet is not counted twice.
    assert meta.parameters == sum(c.get("parameters", 0) for c in comps.values()) == 64 + 32 + 96


def test_graph_models_by_their_input_and_output_names() -> None:
    assert io_kind(["input_ids", "attention_mask"], ["logits"]) == K.LLM
    assert io_kind(["input_ids"], ["last_hidden_state", "pooler_output"]) == K.TEXT_ENCODER
    assert io_kind(["input_ids"], ["sentence_embedding"]) == K.EMBEDDING
    assert io_kind(["sample", "timestep", "encoder_hidden_states"], ["out_sample"]) == K.DIFFUSION
    assert io_kind(["latent_sample"], ["sample"]) == K.VAE
    assert io_kind(["input"], ["output"]) == K.UNKNOWN


# -- grouping --------------------------------------------------------------------------------


def test_a_projector_joins_the_models_it_is_named_for(tmp_path: Path) -> None:
    folder = tmp_path / "vl"
    q4 = write_gguf(folder / "Qwen2-VL-7B-Instruct-Q4_K_M.gguf")
    q8 = write_gguf(folder / "Qwen2-VL-7B-Instruct-Q8_0.gguf", seed=1)
    other = write_gguf(folder / "Llama-3.2-1B-Q4_K_M.gguf", seed=2)
    proj = F.write_mmproj(folder / "mmproj-Qwen2-VL-7B-Instruct-f16.gguf")
    groups = {main: members for _, main, members in group_model_files([q4, q8, other, proj])}
    assert groups == {q4: [q4, proj], q8: [q8, proj], other: [other]}
    meta = read_metadata("gguf", q4, groups[q4])
    assert meta.kind == K.VLM and meta.extra["projector"]["file"] == proj.name
    assert read_metadata("gguf", other, groups[other]).kind == K.LLM


def test_a_generic_projector_name_joins_every_model_beside_it(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "ggml-model-q4_k.gguf")
    proj = F.write_mmproj(tmp_path / "mmproj-model-f16.gguf")
    assert group_model_files([model, proj]) == [("gguf", model, [model, proj])]


def test_a_projector_for_no_model_beside_it_stands_alone(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "Llama-3.2-1B-Q4_K_M.gguf")
    proj = F.write_mmproj(tmp_path / "mmproj-gemma-3-4b-it-f16.gguf")
    assert sorted(group_model_files([model, proj])) == [
        ("gguf", model, [model]), ("gguf", proj, [proj])]
    # Unless the files come from one repo (a download, a Hugging Face cache snapshot).
    assert group_model_files([model, proj], same_repo=True) == [("gguf", model, [model, proj])]


def test_a_file_named_like_a_projector_that_is_not_one_is_not_the_models(tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "m-Q4_K_M.gguf")
    fake = tmp_path / "mmproj-model-f16.gguf"
    fake.write_bytes(b"GGUF garbage")
    ((fmt, main, members),) = group_model_files([model, fake])
    meta = read_metadata(fmt, main, members)  # the model reads; the fake is set aside
    assert meta.kind == K.LLM and fake.name in meta.extra["unpaired_projectors"]


def test_safetensors_files_without_a_config_are_one_model_each(tmp_path: Path) -> None:
    loras = tmp_path / "loras"
    a = F.write_lora(loras / "a.safetensors")
    b = F.write_lora(loras / "b.safetensors", style="flux")
    (loras / "notes.txt").write_text("mine")
    assert sorted(group_model_files([a, b])) == [
        ("safetensors", a, [a]), ("safetensors", b, [b])]
    hf = F.write_hf_folder(tmp_path / "hf", "LlamaForCausalLM")
    ((_, main, members),) = group_model_files([hf / "model.safetensors"])
    assert main == hf and hf / "config.json" in members


def test_pickles_group_by_what_they_are(tmp_path: Path) -> None:
    # Beside safetensors weights: the same model, not another one.
    hf = F.write_hf_folder(tmp_path / "hf", "LlamaForCausalLM")
    (hf / "pytorch_model.bin").write_bytes(b"PK\x03\x04")
    assert [m for _, m, _ in group_model_files([hf / "model.safetensors",
                                                hf / "pytorch_model.bin"])] == [hf]
    # A .bin of something else is not a model at all; a .pt is always inspected.
    raw = tmp_path / "raw" / "data.bin"
    raw.parent.mkdir()
    raw.write_bytes(b"\x00\x01 not a pickle")
    pt = F.write_torch(tmp_path / "raw" / "weights.pt")
    assert group_model_files([raw, pt]) == [("pytorch", pt, [pt])]


def test_onnx_external_data_and_mlpackages_belong_to_their_model(tmp_path: Path) -> None:
    onnx_file = F.write_onnx(tmp_path / "o" / "model.onnx", external=True)
    data = tmp_path / "o" / "model.onnx_data"
    package = F.write_mlpackage(tmp_path / "c" / "Tiny.mlpackage")
    inside = sorted(p for p in package.rglob("*") if p.is_file())
    groups = group_model_files([onnx_file, data, *inside])
    assert ("onnx", onnx_file, [onnx_file, data]) in groups
    assert ("coreml", package, inside) in groups


# -- in words --------------------------------------------------------------------------------


def test_the_one_line_a_model_that_cannot_run_here_gets() -> None:
    lora = ModelMetadata(format="safetensors", kind=K.LORA,
                         extra={"base_family": "sdxl", "lora_rank": 32})
    assert not_runnable("detail-xl", "safetensors", lora) == (
        "detail-xl is a LoRA adapter (SDXL, rank 32): ModelDeck manages it but cannot run it "
        "here")
    onnx = ModelMetadata(format="onnx", kind=K.LLM)
    assert not_runnable("phi", "onnx", onnx) == (
        "phi is an ONNX model: ModelDeck manages it but cannot run it here")
    assert not_runnable("q", "gguf", ModelMetadata(format="gguf", kind=K.VLM)) is None
    assert not_runnable("m", "safetensors", ModelMetadata(format="safetensors")) is None


def test_records_from_before_kinds_get_one_from_their_metadata() -> None:
    assert kind_of(ModelMetadata(format="gguf", architecture="clip"), "gguf") == K.PROJECTOR
    assert kind_of(ModelMetadata(format="gguf", architecture="llama"), "gguf") == K.LLM
    assert kind_of(None, "safetensors") == K.LLM
    assert kind_of(ModelMetadata(format="gguf", kind="no-such-kind"), "gguf") == K.LLM
