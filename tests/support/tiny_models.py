"""Tiny, real, random-weight models for tests and benchmarks.

* :func:`make_tiny_gguf` writes a llama-architecture GGUF with a small SentencePiece-style
  vocab (byte fallback) through :func:`tests.support.gguf.write_gguf_file`. It loads and
  generates in llama-cpp-python in well under a second.
* :func:`make_tiny_transformers` writes a tiny ``LlamaForCausalLM`` folder: ``config.json``,
  ``model.safetensors`` (numpy-written, fixed seed), a ``tokenizers`` BPE ``tokenizer.json``
  and a ``tokenizer_config.json`` with a chat template. Writing it needs neither torch nor
  transformers.
* :func:`tiny_gguf` / :func:`tiny_transformers` return cached copies made once per process in
  a temporary directory (removed at exit). Treat them as read-only; copy before mutating.

Greedy decoding (temperature 0) of these models is deterministic and does not hit EOS early,
so tests can rely on long streams.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.gguf import KV, Tensor, tokenizer_kv, write_gguf_file

__all__ = [
    "CHATML_TEMPLATE",
    "make_tiny_gguf",
    "make_tiny_transformers",
    "tiny_gguf",
    "tiny_transformers",
]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_WORDS = (
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are",
    "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by",
    "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there",
    "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other",
    "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make", "like",
    "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number", "no",
    "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its",
    "now", "find", "long", "down", "day", "did", "get", "come", "made", "may", "part", "hello",
    "world", "model", "answer", "question", "token", "system", "user", "assistant", "deck", "gpu",
)


def _spm_vocab(extra_words: int) -> tuple[list[str], list[float], list[int]]:
    """<unk>, <s>, </s>, 256 byte tokens, chat markers, letters and words (``▁`` prefixed)."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [2, 3, 3]  # UNKNOWN, CONTROL, CONTROL
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [6] * 256  # BYTE
    tokens += ["<|im_start|>", "<|im_end|>"]
    types += [3, 3]
    pieces: list[str] = ["▁"]
    pieces += list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\n")
    pieces += ["▁" + w for w in _WORDS]
    pieces += [w for w in _WORDS]
    i = 0
    while len(pieces) < len(_WORDS) * 2 + 70 + extra_words:
        pieces.append(f"▁w{i}")
        i += 1
    seen: set[str] = set(tokens)
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(1)  # NORMAL
    # Longer pieces score higher so the SPM merger prefers whole words.
    scores = [0.0] * 261 + [float(len(t)) - 100.0 for t in tokens[261:]]
    return tokens, scores, types


def make_tiny_gguf(
    path: str | Path,
    *,
    n_embd: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    n_ff: int = 128,
    context_length: int = 512,
    extra_vocab: int = 0,
    f16: bool = False,
    chat_template: str | None = CHATML_TEMPLATE,
    seed: int = 1234,
    name: str = "tiny-llama",
    architecture: str = "llama",
    extra_kv: tuple[KV, ...] = (),
) -> Path:
    """Write a random-weight llama GGUF to ``path`` and return it.

    ``f16`` stores the matrices as F16 (norms stay F32). ``extra_vocab`` adds synthetic word
    pieces to grow the vocabulary (for a bigger benchmark model). ``chat_template=None``
    leaves the template out. Another ``architecture`` name gives a well-formed GGUF that
    llama.cpp refuses (unknown architecture). ``extra_kv`` adds key/values (e.g.
    ``("pad_token_id", 259)``).
    """
    path = Path(path)
    tokens, scores, types = _spm_vocab(extra_vocab)
    n_vocab = len(tokens)
    head_dim = n_embd // n_heads
    rng = np.random.default_rng(seed)
    wtype = np.float16 if f16 else np.float32

    def mat(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.5 / np.sqrt(cols)).astype(
            wtype
        )

    kv: list[KV] = [
        ("name", name),
        ("context_length", context_length),
        ("embedding_length", n_embd),
        ("block_count", n_layers),
        ("feed_forward_length", n_ff),
        ("head_count", n_heads),
        ("head_count_kv", n_kv_heads),
        ("layer_norm_rms_eps", 1e-5),
        ("rope_dimension_count", head_dim),
        ("file_type", 1 if f16 else 0),
        *tokenizer_kv("llama", tokens, scores=scores, types=types, unk=0, bos=1, eos=2,
                      add_bos=True, add_eos=False),
    ]
    if chat_template is not None:
        kv.append(("chat_template", chat_template))
    kv += extra_kv

    embd = mat(n_vocab, n_embd)
    out = mat(n_vocab, n_embd)
    out[:259] = 0  # <unk>, <s>, </s> and raw bytes rarely win: readable text, no early EOS
    tensors: list[Tensor] = [
        ("token_embd.weight", embd),
        ("output_norm.weight", np.ones(n_embd, dtype=np.float32)),
        ("output.weight", out),
    ]
    kv_width = n_kv_heads * head_dim
    for i in range(n_layers):
        p = f"blk.{i}."
        tensors += [
            (p + "attn_norm.weight", np.ones(n_embd, dtype=np.float32)),
            (p + "attn_q.weight", mat(n_embd, n_embd)),
            (p + "attn_k.weight", mat(kv_width, n_embd)),
            (p + "attn_v.weight", mat(kv_width, n_embd)),
            (p + "attn_output.weight", mat(n_embd, n_embd)),
            (p + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32)),
            (p + "ffn_gate.weight", mat(n_ff, n_embd)),
            (p + "ffn_up.weight", mat(n_ff, n_embd)),
            (p + "ffn_down.weight", mat(n_embd, n_ff)),
        ]
    tmp = write_gguf_file(path.with_name(path.name + ".part"), arch=architecture, kv=kv,
                          tensors=tensors)
    tmp.replace(path)
    return path


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(_WORDS[i:] + _WORDS[:i]) for i in range(0, len(_WORDS), 7)] * 3
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def make_tiny_transformers(
    folder: str | Path,
    *,
    hidden_size: int = 64,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 400,
    context_length: int = 512,
    chat_template: str | None = CHATML_TEMPLATE,
    model_type: str = "llama",
    weights: str = "safetensors",
    seed: int = 1234,
) -> Path:
    """Write a tiny random ``LlamaForCausalLM`` folder and return it.

    ``weights="pickle"`` writes a placeholder ``pytorch_model.bin`` instead of safetensors (to
    test the pickle refusal; it is not a loadable checkpoint); ``weights="none"`` writes no
    weights at all. ``model_type`` may name an architecture transformers does not know.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer(vocab_size)
    vocab = tok.get_vocab_size()
    tok.save(str(folder / "tokenizer.json"))
    head_dim = hidden_size // n_heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": model_type,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": head_dim,
        "vocab_size": vocab,
        "max_position_embeddings": context_length,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tok_config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": context_length,
        "clean_up_tokenization_spaces": False,
    }
    if chat_template is not None:
        tok_config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    )
    (folder / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2})
    )
    if weights == "pickle":
        (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 placeholder, not a checkpoint")
        return folder
    if weights == "none":
        return folder

    rng = np.random.default_rng(seed)

    def mat(rows: int, cols: int) -> np.ndarray:
        return rng.standard_normal((rows, cols), dtype=np.float32) * (0.5 / np.sqrt(cols))

    kv = n_kv_heads * head_dim
    tensors: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": mat(vocab, hidden_size),
        "model.norm.weight": np.ones(hidden_size, dtype=np.float32),
    }
    lm_head = mat(vocab, hidden_size)
    # Only tokens that start a word ("Ġ") can win under greedy decoding: readable, space-
    # separated text that streamers flush token by token, and no early EOS.
    for token, index in tok.get_vocab().items():
        if not token.startswith("Ġ") or index < 5:
            lm_head[index] = 0
    tensors["lm_head.weight"] = lm_head
    for i in range(n_layers):
        p = f"model.layers.{i}."
        tensors[p + "input_layernorm.weight"] = np.ones(hidden_size, dtype=np.float32)
        tensors[p + "post_attention_layernorm.weight"] = np.ones(hidden_size, dtype=np.float32)
        tensors[p + "self_attn.q_proj.weight"] = mat(hidden_size, hidden_size)
        tensors[p + "self_attn.k_proj.weight"] = mat(kv, hidden_size)
        tensors[p + "self_attn.v_proj.weight"] = mat(kv, hidden_size)
        tensors[p + "self_attn.o_proj.weight"] = mat(hidden_size, hidden_size)
        tensors[p + "mlp.gate_proj.weight"] = mat(intermediate_size, hidden_size)
        tensors[p + "mlp.up_proj.weight"] = mat(intermediate_size, hidden_size)
        tensors[p + "mlp.down_proj.weight"] = mat(hidden_size, intermediate_size)
    from safetensors.numpy import save_file

    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


# -- per-process cache ------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache_dir: Path | None = None
_made: dict[str, Path] = {}


def _session_dir() -> Path:
    global _cache_dir
    if _cache_dir is None:
        _cache_dir = Path(tempfile.mkdtemp(prefix="modeldeck-tiny-"))
        atexit.register(shutil.rmtree, _cache_dir, True)
    return _cache_dir


def _key(kind: str, opts: dict[str, Any]) -> str:
    return kind + "-" + "-".join(f"{k}={opts[k]}" for k in sorted(opts)).replace("/", "_")


def tiny_gguf(**opts: Any) -> Path:
    """A cached :func:`make_tiny_gguf` result (made once per process per option set)."""
    with _cache_lock:
        key = _key("gguf", opts)
        if key not in _made:
            name = f"m{len(_made)}.gguf"
            _made[key] = make_tiny_gguf(_session_dir() / name, **opts)
        return _made[key]


def tiny_transformers(**opts: Any) -> Path:
    """A cached :func:`make_tiny_transformers` result (made once per process per option set)."""
    with _cache_lock:
        key = _key("hf", opts)
        if key not in _made:
            _made[key] = make_tiny_transformers(_session_dir() / f"hf{len(_made)}", **opts)
        return _made[key]
