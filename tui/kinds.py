"""The kinds of model ModelDeck knows, one vocabulary for the inventory, catalog, CLI and UI.

A kind says what a model is for, decided from file contents (headers, tensor names, config
files), not only names. Only some kinds are runnable here (:data:`RUNNABLE`); the others are
managed: downloaded, listed, sized, fitted by size, deleted.
"""

from __future__ import annotations

LLM = "llm"  # a text language model (GGUF, transformers safetensors, …)
VLM = "vlm"  # a vision-language model (with its projector, e.g. a GGUF ``mmproj`` file)
PROJECTOR = "projector"  # a VLM's vision projector on its own (``mmproj-*.gguf``)
DIFFUSION = "diffusion"  # an image model: SD 1.x/SDXL/Flux single file or a diffusers folder
LORA = "lora"  # a low-rank adapter (``lora_*`` / ``lora_A``/``lora_B`` tensors)
VAE = "vae"  # an image autoencoder
TEXT_ENCODER = "text-encoder"  # CLIP / T5 text encoders used by image models
CONTROLNET = "controlnet"
EMBEDDING = "embedding"  # a sentence/text embedding model
TEXTUAL_INVERSION = "textual-inversion"  # an image model's learned prompt token (not EMBEDDING)
TOKENIZER = "tokenizer"  # a vocabulary-only file (llama.cpp's ``ggml-vocab-*.gguf``)
UNKNOWN = "unknown"

KINDS: tuple[str, ...] = (
    LLM, VLM, PROJECTOR, DIFFUSION, LORA, VAE, TEXT_ENCODER, CONTROLNET, EMBEDDING, TOKENIZER,
    TEXTUAL_INVERSION, UNKNOWN,
)
RUNNABLE: frozenset[str] = frozenset({LLM, VLM})
# Kinds loaded to make embeddings only (GGUF through llama.cpp: ``/v1/embeddings``), no answers.
EMBEDS: frozenset[str] = frozenset({EMBEDDING})

# The folder under ``models_dir`` new downloads of each kind go to (storage organised by kind).
FOLDERS: dict[str, str] = {
    LLM: "llm",
    VLM: "vlm",
    PROJECTOR: "vlm",
    DIFFUSION: "diffusion",
    LORA: "lora",
    VAE: "vae",
    TEXT_ENCODER: "text-encoders",
    CONTROLNET: "controlnet",
    EMBEDDING: "embedding",
    TOKENIZER: "tokenizers",
    TEXTUAL_INVERSION: "textual-inversion",
    UNKNOWN: "other",
}


def normalise(kind: str | None) -> str:
    """``kind`` if it is one of :data:`KINDS`, else ``unknown``."""
    return kind if kind in KINDS else UNKNOWN
