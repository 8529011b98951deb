"""Model kinds from file contents: GGUF keys, safetensors tensor names, config files.

The vocabulary is :mod:`tui.kinds`; this module decides which kind a file is and says it in
words. Every input is untrusted: names are only compared, numbers pass :func:`bounded_int`,
and the text kept (families, class names) is cut short.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from tui import kinds as K
from tui.metadata.types import ModelMetadata, bounded_int

LABELS: dict[str, str] = {
    K.LLM: "text LLM",
    K.VLM: "vision-language model",
    K.PROJECTOR: "vision projector",
    K.DIFFUSION: "diffusion model",
    K.LORA: "LoRA adapter",
    K.VAE: "VAE",
    K.TEXT_ENCODER: "text encoder",
    K.CONTROLNET: "ControlNet",
    K.EMBEDDING: "embedding model",
    K.TOKENIZER: "tokenizer (vocabulary only)",
    K.TEXTUAL_INVERSION: "textual-inversion embedding",
    K.UNKNOWN: "model of unknown kind",
}
FAMILY_LABELS: dict[str, str] = {
    "sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sd3": "SD 3", "flux": "Flux",
}
FORMAT_LABELS: dict[str, str] = {
    "mlx": "an MLX model", "onnx": "an ONNX model", "tflite": "a TFLite model",
    "coreml": "a Core ML model", "pytorch": "a PyTorch pickle",
}
# Every format a model record can have (ModelMetadata.format), and those ModelDeck runs.
MODEL_FORMATS = ("gguf", "safetensors", "mlx", "onnx", "tflite", "coreml", "pytorch")
RUNNABLE_FORMATS = frozenset({"gguf", "safetensors"})
MAX_LABEL = 60  # families, class names: longer text from a file is cut

# -- GGUF -------------------------------------------------------------------------------------

PROJECTOR_ARCHS = frozenset({"clip", "mmproj"})
EMBEDDING_ARCHS = frozenset({
    "bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert",
    "neo-bert", "eurobert", "gemma-embedding", "llama-embed",
})
TEXT_ENCODER_ARCHS = frozenset({"t5encoder"})
# Image/video models as ComfyUI-GGUF and stable-diffusion.cpp write them.
DIFFUSION_ARCHS = frozenset({
    "sd1", "sd2", "sdxl", "sd3", "flux", "aura", "ltxv", "hyvid", "wan", "hidream", "cosmos",
    "lumina2", "chroma", "qwen_image",
})
_PROJECTOR_TENSORS = ("mm.", "v.blk.", "v.patch_embd", "mm_input_projection", "resampler.")
_POOLING = {1: "mean", 2: "cls", 3: "last", 4: "rank"}


def _short(value: Any) -> str | None:
    """A short, plain string from a file (else ``None``)."""
    if not isinstance(value, str) or not value:
        return None
    text = value[:MAX_LABEL]
    return text if text.isprintable() else None


def gguf_kind(
    kv: dict[str, Any], n_tensors: int, tensors: list[tuple[str, tuple[int, ...]]]
) -> tuple[str, dict[str, Any]]:
    """The kind of a GGUF file from its keys, tensor count and first tensors (name, dims)."""
    arch = kv.get("general.architecture")
    arch = arch if isinstance(arch, str) else ""
    gtype = kv.get("general.type")
    gtype = gtype if isinstance(gtype, str) else ""
    extra: dict[str, Any] = {}
    if n_tensors == 0:
        return K.TOKENIZER, extra
    if gtype == "mmproj" or arch in PROJECTOR_ARCHS or (
        tensors and all(name.startswith(_PROJECTOR_TENSORS) for name, _ in tensors)
    ):
        for key in ("clip.projector_type", "clip.vision.projector_type"):
            if (value := _short(kv.get(key))) is not None:
                extra["projector_type"] = value
                break
        return K.PROJECTOR, extra
    if gtype == "adapter" or "adapter.type" in kv:
        if kv.get("adapter.type") not in (None, "lora"):
            extra["adapter_type"] = _short(kv.get("adapter.type"))
            return K.UNKNOWN, extra
        if arch:
            extra["base_family"] = arch[:MAX_LABEL]
        for name, dims in tensors:
            if name.endswith(".lora_a") and len(dims) == 2:
                extra["lora_rank"] = bounded_int(dims[1], 1, 1 << 20)
                break
        alpha = kv.get("adapter.lora.alpha")
        if isinstance(alpha, int | float) and not isinstance(alpha, bool) and alpha == alpha:
            extra["lora_alpha"] = alpha
        return K.LORA, {k: v for k, v in extra.items() if v is not None}
    if gtype == "imatrix":
        return K.UNKNOWN, {"gguf_type": "imatrix"}
    if arch in DIFFUSION_ARCHS:
        extra["base_family"] = arch
        return K.DIFFUSION, extra
    if arch in TEXT_ENCODER_ARCHS:
        return K.TEXT_ENCODER, extra
    pooling = bounded_int(kv.get(f"{arch}.pooling_type"), 0, 16)
    if arch in EMBEDDING_ARCHS or pooling in _POOLING:
        if pooling in _POOLING:
            extra["pooling"] = _POOLING[pooling]
        return K.EMBEDDING, extra
    return K.LLM, extra


# -- safetensors tensor layouts --------------------------------------------------------------

_LORA_NAME = re.compile(r"lora_(?:unet|te\d?)_|\.lora_[ABab]\.|\.lora_(?:down|up)\.|"
                        r"[._]lora\.(?:down|up)\.|\.lora_[ABab]$|lora_(?:down|up)\.weight$")
_LORA_DOWN = re.compile(r"lora_A\b|lora_a\b|lora_down|lora\.down")

# First name component -> flag; ``(first, second)`` pairs are looked up first.
_PAIR_FLAGS: dict[tuple[str, str], str] = {
    ("model", "diffusion_model"): "unet",
    ("model", "layers"): "llm",
    ("model", "embed_tokens"): "llm",
    ("model", "norm"): "llm",
    ("encoder", "block"): "t5",
    ("encoder", "layer"): "bert",
    ("encoder", "final_layer_norm"): "t5",
    ("cond_stage_model", "transformer"): "sd1-te",
    ("cond_stage_model", "model"): "sd2-te",
    ("text_model", "encoder"): "clip-text",
    ("text_model", "embeddings"): "clip-text",
    ("text_model", "final_layer_norm"): "clip-text",
    ("transformer", "h"): "llm",
}
_FIRST_FLAGS: dict[str, str] = {
    "conditioner": "sdxl",
    "first_stage_model": "vae",
    "encoder": "vae",
    "decoder": "vae",
    "quant_conv": "vae",
    "post_quant_conv": "vae",
    "cond_stage_model": "sd1-te",
    "double_blocks": "flux",
    "single_blocks": "flux",
    "img_in": "flux",
    "txt_in": "flux",
    "joint_blocks": "sd3",
    "control_model": "controlnet",
    "controlnet_cond_embedding": "controlnet",
    "controlnet_down_blocks": "controlnet",
    "controlnet_mid_block": "controlnet",
    "controlnet_blocks": "controlnet",
    "controlnet_single_blocks": "controlnet",
    "controlnet_x_embedder": "controlnet",
    "input_hint_block": "controlnet",
    "zero_convs": "controlnet",
    "down_blocks": "unet-diffusers",
    "up_blocks": "unet-diffusers",
    "mid_block": "unet-diffusers",
    "time_embedding": "unet-diffusers",
    "transformer_blocks": "dit-diffusers",
    "single_transformer_blocks": "flux-diffusers",
    "x_embedder": "dit-diffusers",
    "context_embedder": "dit-diffusers",
    "lm_head": "llm",
    "gpt_neox": "llm",
    "embeddings": "bert",
    "pooler": "bert",
    "shared": "t5",
    "vision_model": "clip-vision",
    "text_projection": "clip-text",
}
_VAE_ONLY = frozenset({"vae"})
_TEXT_ENCODER_FLAGS = frozenset({"clip-text", "t5", "sd1-te", "sd2-te"})


class TensorLayout:
    """Collects what tensor names say (one :meth:`add` per tensor), then :meth:`decide`."""

    __slots__ = ("flags", "lora", "n", "other", "rank", "second")

    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.lora = 0
        self.rank: int | None = None
        self.n = 0
        self.other = 0  # tensors whose names say nothing
        self.second: set[str] = set()  # second components of ``model.diffusion_model.*``

    def add(self, name: str, shape: Any = None) -> None:
        """Note one tensor name (and its shape, a list of ints, when known)."""
        self.n += 1
        if "lora" in name and _LORA_NAME.search(name):
            self.lora += 1
            if (
                _LORA_DOWN.search(name)
                and isinstance(shape, list | tuple)
                and len(shape) >= 2
                and (rank := bounded_int(shape[0], 1, 1 << 20)) is not None
            ):
                self.rank = max(self.rank or 0, rank)
            if "double_blocks" in name or "single_blocks" in name or (
                    "single_transformer_blocks" in name):
                self.flags.add("lora-flux")
            elif "lora_te2_" in name or "lora_te1_" in name or (
                    "lora_unet_input_blocks" in name or "lora_unet_output_blocks" in name
                    or "lora_unet_middle_block" in name):
                self.flags.add("lora-sdxl")  # kohya names SDXL's UNet by its original keys
            elif "lora_te_" in name or "lora_unet_" in name:
                self.flags.add("lora-sd")
            elif "self_attn" in name or "q_proj" in name or "mlp." in name:
                self.flags.add("lora-llm")
            return
        first, _, rest = name.partition(".")
        second = rest.partition(".")[0]
        flag = _PAIR_FLAGS.get((first, second)) or _FIRST_FLAGS.get(first)
        if flag is not None:
            self.flags.add(flag)
            if flag == "unet":
                self.second.add(rest.partition(".")[2].partition(".")[0])
        else:
            self.other += 1

    def merge(self, other: TensorLayout) -> None:
        """Add what another file of the same model said."""
        self.flags |= other.flags
        self.second |= other.second
        self.lora += other.lora
        self.n += other.n
        self.other += other.other
        if other.rank:
            self.rank = max(self.rank or 0, other.rank)

    def decide(self, header_meta: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """The kind and its details (base family, LoRA rank) from the names seen."""
        flags = self.flags
        extra: dict[str, Any] = {}
        if self.lora:
            family = lora_family(header_meta or {}) or _lora_family_from_flags(flags)
            if family:
                extra["base_family"] = family
            if self.rank:
                extra["lora_rank"] = self.rank
            return K.LORA, extra
        if "controlnet" in flags:
            return K.CONTROLNET, extra
        if flags & {"unet", "flux", "sd3", "unet-diffusers", "dit-diffusers", "flux-diffusers"}:
            family = None
            if flags & {"flux", "flux-diffusers"} or self.second & {"double_blocks",
                                                                    "single_blocks"}:
                family = "flux"
            elif "sd3" in flags or "joint_blocks" in self.second:
                family = "sd3"
            elif "sdxl" in flags:
                family = "sdxl"
            elif "sd2-te" in flags:
                family = "sd2"
            elif "sd1-te" in flags:
                family = "sd1"
            if family:
                extra["base_family"] = family
            return K.DIFFUSION, extra
        # A few stray tensors (``logit_scale``, a discriminator's) do not change the verdict.
        mostly = self.other * 4 <= self.n
        if flags == _VAE_ONLY and mostly:
            return K.VAE, extra
        if flags and flags <= _TEXT_ENCODER_FLAGS and mostly:
            extra["encoder"] = "t5" if "t5" in flags else "clip"
            return K.TEXT_ENCODER, extra
        if "llm" in flags:
            return K.LLM, extra
        if "bert" in flags:
            return K.EMBEDDING, extra
        return K.UNKNOWN, extra


def _lora_family_from_flags(flags: set[str]) -> str | None:
    for flag, family in (("lora-flux", "flux"), ("lora-sdxl", "sdxl"), ("lora-sd", "sd1"),
                         ("lora-llm", "llm")):
        if flag in flags:
            return family
    return None


def normalise_family(text: Any) -> str | None:
    """``sdxl``/``sd1``/``sd2``/``sd3``/``flux`` from a header's base-model text, else the
    text itself (short and printable), else ``None``."""
    value = _short(text)
    if value is None:
        return None
    low = value.lower()
    if "flux" in low:
        return "flux"
    if "xl" in low:
        return "sdxl"
    if "v3" in low or "sd3" in low:
        return "sd3"
    if "v2" in low or "sd2" in low:
        return "sd2"
    if "v1" in low or "sd1" in low or low.startswith("sd_1"):
        return "sd1"
    return value


def lora_family(header_meta: dict[str, Any]) -> str | None:
    """A LoRA's base family from its safetensors ``__metadata__`` (kohya's
    ``ss_base_model_version``, the model spec's ``modelspec.architecture``)."""
    for key in ("ss_base_model_version", "modelspec.architecture"):
        family = normalise_family(header_meta.get(key))
        if family:
            return family
    return None


# -- config files ------------------------------------------------------------------------------

_VISION_KEYS = ("vision_config", "vision_tower", "mm_vision_tower", "visual", "vision_encoder",
                "image_token_index", "image_token_id")
_EMBED_ARCHS = frozenset({
    "BertModel", "XLMRobertaModel", "RobertaModel", "MPNetModel", "NomicBertModel",
    "DistilBertModel", "ModernBertModel", "NewModel", "CLIPModel", "JinaBertModel",
    "Qwen3Model", "Gemma3TextModel",
})
_TEXT_ENCODER_ARCHS = frozenset({
    "CLIPTextModel", "CLIPTextModelWithProjection", "T5EncoderModel", "UMT5EncoderModel",
})
_AUDIO_TYPES = frozenset({
    "whisper", "wav2vec2", "speecht5", "seamless_m4t", "musicgen", "bark", "hubert",
    "encodec", "clap",
})
SENTENCE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
_DIFFUSERS_CLASSES: dict[str, str] = {
    "AutoencoderKL": K.VAE,
    "AutoencoderTiny": K.VAE,
    "AutoencoderKLFlux2": K.VAE,
    "UNet2DConditionModel": K.DIFFUSION,
    "FluxTransformer2DModel": K.DIFFUSION,
    "SD3Transformer2DModel": K.DIFFUSION,
    "ControlNetModel": K.CONTROLNET,
    "FluxControlNetModel": K.CONTROLNET,
    "SD3ControlNetModel": K.CONTROLNET,
}


def config_kind(config: dict[str, Any], names: Iterable[str] = ()) -> str | None:
    """The kind a transformers/diffusers ``config.json`` declares (``None``: it does not say).

    ``names`` are the other files in the folder (a sentence-transformers model has
    ``modules.json``)."""
    cls = config.get("_class_name")
    if isinstance(cls, str) and cls in _DIFFUSERS_CLASSES:
        return _DIFFUSERS_CLASSES[cls]
    if any(n in SENTENCE_FILES for n in names):
        return K.EMBEDDING
    archs = config.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else ""
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in _AUDIO_TYPES:
        return K.UNKNOWN
    if arch in _TEXT_ENCODER_ARCHS:
        return K.TEXT_ENCODER
    if arch in _EMBED_ARCHS:
        return K.EMBEDDING
    vision = any(config.get(key) is not None for key in _VISION_KEYS)
    if arch.endswith("ForConditionalGeneration") or arch.endswith("ForImageTextToText"):
        return K.VLM if vision else K.LLM
    if arch.endswith(("ForCausalLM", "LMHeadModel")):
        return K.VLM if vision else K.LLM
    return None


def adapter_kind(config: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A PEFT ``adapter_config.json``: LoRA with its rank and base model, else ``None``."""
    if str(config.get("peft_type", "")).upper() not in ("LORA", "DORA", "LOHA", "LOKR"):
        return None
    extra: dict[str, Any] = {}
    rank = bounded_int(config.get("r"), 1, 1 << 20)
    if rank is not None:
        extra["lora_rank"] = rank
    base = _short(config.get("base_model_name_or_path"))
    if base:
        extra["base_model"] = base
        extra["base_family"] = "llm"
    return K.LORA, extra


def pipeline_family(class_name: str) -> str | None:
    """The family of a diffusers pipeline class (``StableDiffusionXLPipeline`` -> ``sdxl``)."""
    if "Flux" in class_name:
        return "flux"
    if "StableDiffusion3" in class_name:
        return "sd3"
    if "XL" in class_name:
        return "sdxl"
    if "StableDiffusion" in class_name:
        return "sd1"
    return None


# -- ONNX (and other graph formats): input and output names -----------------------------------


def io_kind(inputs: Iterable[str], outputs: Iterable[str]) -> str:
    """A guess from a graph's input and output names (Hugging Face Optimum's exports)."""
    ins, outs = set(inputs), set(outputs)
    if "timestep" in ins and ins & {"sample", "hidden_states", "encoder_hidden_states"}:
        return K.DIFFUSION
    if "latent_sample" in ins:
        return K.VAE
    if "pixel_values" in ins and "input_ids" in ins:
        return K.VLM
    if "input_ids" in ins and ("logits" in outs or any(o.startswith("present") for o in outs)):
        return K.LLM
    if "input_ids" in ins and outs & {"sentence_embedding", "token_embeddings", "embeddings"}:
        return K.EMBEDDING
    if "input_ids" in ins and "last_hidden_state" in outs and "pooler_output" in outs:
        return K.TEXT_ENCODER
    if "input_ids" in ins and "last_hidden_state" in outs:
        return K.EMBEDDING
    return K.UNKNOWN


# -- in words ----------------------------------------------------------------------------------


def kind_of(meta: ModelMetadata | None, fmt: str = "") -> str:
    """The kind of a stored record: its metadata's, else a guess for records made before kinds
    existed (GGUF and safetensors models were text LLMs then; a ``clip`` GGUF a projector)."""
    if meta is not None and meta.kind in K.KINDS:
        return meta.kind
    arch = meta.architecture if meta is not None else None
    if fmt == "gguf":
        if arch in PROJECTOR_ARCHS:
            return K.PROJECTOR
        if arch in EMBEDDING_ARCHS:
            return K.EMBEDDING
        return K.LLM
    if fmt == "safetensors":
        return K.LLM
    return K.UNKNOWN


def details(kind: str, extra: dict[str, Any] | None) -> list[str]:
    """The details worth showing with a kind: base family, LoRA rank."""
    extra = extra if isinstance(extra, dict) else {}
    out = []
    family = extra.get("base_family")
    if isinstance(family, str) and family and kind in (K.LORA, K.DIFFUSION, K.CONTROLNET,
                                                       K.TEXTUAL_INVERSION):
        out.append(FAMILY_LABELS.get(family, family))
    rank = extra.get("lora_rank")
    if kind == K.LORA and isinstance(rank, int) and not isinstance(rank, bool):
        out.append(f"rank {rank}")
    return out


def describe(kind: str, extra: dict[str, Any] | None = None) -> str:
    """``LoRA adapter (SDXL, rank 32)``."""
    label = LABELS.get(kind, LABELS[K.UNKNOWN])
    more = details(kind, extra)
    return f"{label} ({', '.join(more)})" if more else label


def _article(text: str) -> str:
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


def embeds_only(fmt: str, meta: ModelMetadata | None) -> bool:
    """An embedding model llama.cpp loads: it makes vectors, not answers."""
    return fmt == "gguf" and kind_of(meta, fmt) in K.EMBEDS


def not_runnable(name: str, fmt: str, meta: ModelMetadata | None) -> str | None:
    """Why ModelDeck cannot run (load) this model here (one line), or ``None`` if it can.

    A GGUF embedding model loads (for embeddings only: see :func:`embeds_only`)."""
    kind = kind_of(meta, fmt)
    extra = meta.extra if meta is not None else {}
    if embeds_only(fmt, meta):
        return None
    if kind not in K.RUNNABLE:
        what = _article(describe(kind, extra))
    elif fmt not in RUNNABLE_FORMATS:
        what = FORMAT_LABELS.get(fmt, f"in {fmt} format")
    else:
        return None
    return f"{name} is {what}: ModelDeck manages it but cannot run it here"
