"""Will this model fit? Pure functions over sizes, metadata and a :class:`MemorySnapshot`.

Model (all sizes in bytes):

* **weights**: the model's file sizes (or ``tensor_bytes``); from catalog data,
  ``parameters × bits_per_weight / 8``.
* **KV cache**: ``2 (K and V) × n_layers × n_kv_heads × head_dim × context × 2`` (f16 cache),
  times ``parallel``: llama.cpp gives each of the answers it decodes together (its sequences)
  a cache of ``context`` tokens.
* **compute buffers**: ``COMPUTE_BASE + UBATCH × vocab × 4`` (logits) ``+ UBATCH × context ×
  n_heads × 4`` (attention scores of one micro-batch; an upper bound, flash attention needs
  less).
* Layers are assumed equal in size: ``per_layer = (weights + KV) / n_layers``; a GPU holds
  ``(free − reserve − compute) // per_layer`` layers. ``RESERVE_VRAM`` per GPU and
  ``RESERVE_RAM`` are kept free for the driver, the OS and the rest of the process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from tui import formatting as fmt
from tui.metadata.types import ModelMetadata
from tui.runtime.memory import MemorySnapshot

__all__ = [
    "BITS_PER_WEIGHT",
    "COMPUTE_BASE",
    "RESERVE_RAM",
    "RESERVE_VRAM",
    "FitResult",
    "MemoryEstimate",
    "Verdict",
    "bits_per_weight",
    "check_fit",
    "estimate_from_catalog",
    "estimate_from_metadata",
    "kv_cache_bytes",
]

MiB = 1 << 20
GiB = 1 << 30
COMPUTE_BASE = 32 * MiB
UBATCH = 512
RESERVE_VRAM = 256 * MiB
RESERVE_RAM = 512 * MiB
DEFAULT_CONTEXT = 4096
KV_BYTES_F16 = 2

#: Approximate effective bits per weight of common quantizations (llama.cpp mixes included).
BITS_PER_WEIGHT: dict[str, float] = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "FP16": 16.0, "FP32": 32.0,
    "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69, "Q5_K_S": 5.54, "Q5_0": 5.5, "Q5_1": 6.0,
    "Q4_K_M": 4.89, "Q4_K_S": 4.58, "Q4_0": 4.5, "Q4_1": 5.0, "IQ4_XS": 4.25, "IQ4_NL": 4.5,
    "Q3_K_L": 4.27, "Q3_K_M": 3.91, "Q3_K_S": 3.5, "IQ3_M": 3.7, "IQ3_S": 3.44,
    "IQ3_XS": 3.3, "IQ3_XXS": 3.06, "Q2_K": 3.35, "Q2_K_S": 2.96, "IQ2_M": 2.7, "IQ2_S": 2.5,
    "IQ2_XS": 2.31, "IQ2_XXS": 2.06, "IQ1_M": 1.75, "IQ1_S": 1.56, "MXFP4_MOE": 4.25,
    "INT8": 8.0, "INT4": 4.0, "FP8": 8.0, "F8_E4M3": 8.0, "AWQ": 4.25, "GPTQ": 4.25,
}

Verdict = Literal["gpu", "partial", "cpu", "wont_fit"]


def bits_per_weight(quantization: str | None) -> float | None:
    """Effective bits per weight of a quant name (``"Q4_K_M"`` → 4.89); ``None`` if unknown."""
    if not quantization:
        return None
    key = quantization.strip().upper().replace("-", "_")
    if key in BITS_PER_WEIGHT:
        return BITS_PER_WEIGHT[key]
    for name in sorted(BITS_PER_WEIGHT, key=len, reverse=True):  # "UD_Q4_K_XL" → Q4_K
        if name in key:
            return BITS_PER_WEIGHT[name]
    return None


def kv_cache_bytes(
    n_layers: int, n_kv_heads: int, head_dim: int, context: int, bytes_per_element: int = 2
) -> int:
    """K and V cache for ``context`` tokens: ``2 × layers × kv_heads × head_dim × ctx × bpe``."""
    return 2 * n_layers * n_kv_heads * head_dim * context * bytes_per_element


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """What one model needs at one context length."""

    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    n_layers: int
    context_length: int  # per answer
    assumptions: tuple[str, ...] = ()
    parallel: int = 1  # answers decoded together, each with a KV cache of context_length

    @property
    def total_bytes(self) -> int:
        """Weights + KV cache + compute buffers."""
        return self.weights_bytes + self.kv_cache_bytes + self.compute_bytes

    @property
    def per_layer_bytes(self) -> float:
        """Weights and KV of one layer (layers assumed equal)."""
        return (self.weights_bytes + self.kv_cache_bytes) / max(1, self.n_layers)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        return {
            "weights_bytes": self.weights_bytes,
            "kv_cache_bytes": self.kv_cache_bytes,
            "compute_bytes": self.compute_bytes,
            "total_bytes": self.total_bytes,
            "n_layers": self.n_layers,
            "context_length": self.context_length,
            "parallel": self.parallel,
            "assumptions": list(self.assumptions),
        }


def _compute_bytes(context: int, vocab: int | None, n_heads: int | None) -> int:
    return COMPUTE_BASE + UBATCH * (vocab or 32000) * 4 + UBATCH * context * (n_heads or 32) * 4


def estimate_from_metadata(
    meta: ModelMetadata | None,
    *,
    weights_bytes: int | None = None,
    context: int | None = None,
    kv_bytes_per_element: int = KV_BYTES_F16,
    parallel: int = 1,
) -> MemoryEstimate:
    """Estimate for an installed model: weights from file sizes (else ``meta.tensor_bytes``).

    ``context`` defaults to the model's trained context capped at 4096 (what ``run`` uses);
    ``parallel`` answers decoded together each get a KV cache of ``context`` tokens.
    """
    meta = meta or ModelMetadata(format="unknown")
    assumptions: list[str] = []
    if weights_bytes is None:
        if meta.tensor_bytes:
            weights_bytes = meta.tensor_bytes
        elif meta.parameters:
            bpw = bits_per_weight(meta.quantization) or 16.0
            weights_bytes = int(meta.parameters * bpw / 8)
            assumptions.append(f"weights from {meta.parameters:,} params at {bpw} bits/weight")
        else:
            weights_bytes = 0
            assumptions.append("weights size unknown")
    ctx = context or min(meta.context_length or DEFAULT_CONTEXT, DEFAULT_CONTEXT)
    n_layers = meta.n_layers
    head_dim = meta.head_dim
    if head_dim is None and meta.embedding_size and meta.n_heads:
        head_dim = meta.embedding_size // meta.n_heads
    n_kv = meta.n_kv_heads or meta.n_heads
    parallel = max(1, parallel)
    if n_layers and n_kv and head_dim:
        kv = kv_cache_bytes(n_layers, n_kv, head_dim, ctx * parallel, kv_bytes_per_element)
    else:
        kv = _kv_guess(meta.parameters or int(weights_bytes / 2), ctx * parallel)
        assumptions.append("layer/head counts unknown: KV cache guessed from size")
    if not n_layers:
        n_layers = _layers_guess(meta.parameters or int(weights_bytes / 2))
        assumptions.append(f"{n_layers} layers assumed")
    return MemoryEstimate(
        weights_bytes=int(weights_bytes),
        kv_cache_bytes=int(kv),
        compute_bytes=_compute_bytes(ctx, meta.vocab_size, meta.n_heads),
        n_layers=int(n_layers),
        context_length=ctx,
        assumptions=tuple(assumptions),
        parallel=parallel,
    )


def _kv_guess(parameters: int, context: int) -> int:
    # Modern GQA models: ~128 KiB/token at 8B, scaling with sqrt(size) (1B ≈ 45, 70B ≈ 380).
    per_token = 128 * 1024 * math.sqrt(max(parameters, 1) / 8e9)
    return int(per_token * context)


def _layers_guess(parameters: int) -> int:
    return max(1, round(32 * (max(parameters, 1) / 8e9) ** 0.4))


def estimate_from_catalog(
    parameters: int,
    *,
    quantization: str | None = None,
    bits: float | None = None,
    context: int | None = None,
    n_layers: int | None = None,
    n_heads: int | None = None,
    n_kv_heads: int | None = None,
    head_dim: int | None = None,
    embedding_size: int | None = None,
    vocab_size: int | None = None,
    weights_bytes: int | None = None,
    parallel: int = 1,
) -> MemoryEstimate:
    """Estimate before a download from catalog facts; unknowns become stated assumptions.

    ``weights_bytes`` (the download size, when the catalog knows it) beats params × bits;
    ``parallel`` as for :func:`estimate_from_metadata`.
    """
    assumptions: list[str] = []
    bpw = bits or bits_per_weight(quantization)
    if weights_bytes:
        bpw = bpw or 16.0
        assumptions.append("weights = download size")
    elif bpw is None:
        bpw = 16.0
        assumptions.append("quantization unknown: 16 bits/weight assumed")
    else:
        assumptions.append(f"{bpw:g} bits/weight ({quantization or 'given'})")
    meta = ModelMetadata(
        format="catalog",
        parameters=parameters,
        context_length=context,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        embedding_size=embedding_size,
        vocab_size=vocab_size,
    )
    weights = weights_bytes or int(parameters * bpw / 8)
    est = estimate_from_metadata(meta, weights_bytes=weights, context=context, parallel=parallel)
    return MemoryEstimate(
        est.weights_bytes,
        est.kv_cache_bytes,
        est.compute_bytes,
        est.n_layers,
        est.context_length,
        (*assumptions, *est.assumptions),
        est.parallel,
    )


@dataclass(frozen=True, slots=True)
class FitResult:
    """The fit verdict with the numbers behind it."""

    verdict: Verdict
    gpu_layers: int
    n_layers: int
    estimate: MemoryEstimate
    ram_free: int
    vram_free: int
    n_gpus: int
    reason: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Everything but "won't fit"."""
        return self.verdict != "wont_fit"

    @property
    def label(self) -> str:
        """"fits on GPU" / "partial offload (N of L layers)" / "CPU only" / "won't fit"."""
        if self.verdict == "gpu":
            return "fits on GPU"
        if self.verdict == "partial":
            return f"partial offload ({self.gpu_layers} of {self.n_layers} layers)"
        if self.verdict == "cpu":
            return "CPU only"
        return "won't fit"

    def summary(self) -> str:
        """One line: verdict, need and free memory."""
        e = self.estimate
        ctx = f"{e.parallel} × {e.context_length}" if e.parallel > 1 else f"{e.context_length}"
        text = (
            f"{self.label}: needs {fmt.size(e.total_bytes)} (weights "
            f"{fmt.size(e.weights_bytes)} + KV {fmt.size(e.kv_cache_bytes)} at "
            f"{ctx} ctx + compute {fmt.size(e.compute_bytes)}); free RAM "
            f"{fmt.size(self.ram_free)}"
        )
        if self.n_gpus:
            text += f", free VRAM {fmt.size(self.vram_free)} on {self.n_gpus} GPU(s)"
        else:
            text += ", no GPU"
        if self.reason:
            text += f" — {self.reason}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result."""
        return {
            "verdict": self.verdict,
            "label": self.label,
            "gpu_layers": self.gpu_layers,
            "n_layers": self.n_layers,
            "ram_free": self.ram_free,
            "vram_free": self.vram_free,
            "n_gpus": self.n_gpus,
            "reason": self.reason,
            "estimate": self.estimate.to_dict(),
            "summary": self.summary(),
        }


def check_fit(
    estimate: MemoryEstimate,
    memory: MemorySnapshot,
    gpu_layers: str | int = "auto",
    *,
    reserve_vram: int = RESERVE_VRAM,
    reserve_ram: int = RESERVE_RAM,
) -> FitResult:
    """Compare an estimate with free memory. ``gpu_layers``: ``"auto"``, ``"all"`` or a count.

    ``"auto"`` puts as many layers on the GPUs as fit; ``"all"``/N that cannot be honoured
    give "won't fit" with the reason.
    """
    n_layers = max(1, estimate.n_layers)
    ram = max(0, memory.ram_free - reserve_ram)
    vram = sum(max(0, g.free - reserve_vram) for g in memory.gpus)
    raw_vram = memory.vram_free
    per_layer = estimate.per_layer_bytes
    total = estimate.total_bytes

    def result(verdict: Verdict, layers: int, reason: str = "") -> FitResult:
        return FitResult(
            verdict, layers, n_layers, estimate, memory.ram_free, raw_vram, len(memory.gpus),
            reason,
        )

    def cpu_or_nothing(reason: str = "") -> FitResult:
        if total <= ram:
            return result("cpu", 0, reason)
        return result("wont_fit", 0, reason or "not enough free RAM")

    requested: int | None
    if gpu_layers == "auto":
        requested = None
    elif gpu_layers == "all":
        requested = n_layers
    else:
        requested = max(0, min(int(gpu_layers), n_layers))
    if not memory.gpus or requested == 0:
        return cpu_or_nothing()
    room = vram - estimate.compute_bytes
    fit_layers = 0 if room <= 0 else min(n_layers, int(room // max(per_layer, 1)))
    layers = fit_layers if requested is None else requested
    if requested is not None and requested > fit_layers:
        return result(
            "wont_fit",
            requested,
            f"{requested} layers requested on GPU but only {fit_layers} fit in free VRAM",
        )
    if layers >= n_layers:
        return result("gpu", n_layers)
    if layers == 0:
        return cpu_or_nothing("no layer fits in free VRAM")
    ram_need = (n_layers - layers) * per_layer
    if ram_need <= ram:
        return result("partial", layers)
    return result("wont_fit", layers, "the layers left off the GPU do not fit in free RAM")
