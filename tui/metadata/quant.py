"""GGUF quantization names: ``general.file_type`` (llama.cpp ``llama_ftype``), ggml tensor types
and a best-effort guess from a file name.

Tables follow ``llama.h`` / ``ggml.h`` (and gguf-py's ``LlamaFileType`` /
``GGMLQuantizationType``), including ids that llama.cpp has since removed so old files still get
a name.
"""

from __future__ import annotations

import os
import re
from pathlib import PurePath

# llama_ftype -> quant name as llama-quantize spells it.
FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    4: "Q4_1_SOME_F16",  # removed from llama.cpp
    5: "Q4_2",  # removed
    6: "Q4_3",  # removed
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    33: "Q4_0_4_4",  # removed (runtime repacking of Q4_0 replaced these)
    34: "Q4_0_4_8",  # removed
    35: "Q4_0_8_8",  # removed
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}

#: llama.cpp ORs this into the in-memory ftype when the file did not say (never a real id).
FILE_TYPE_GUESSED = 1024

# ggml_type id -> (name, block size in elements, bytes per block).
QK_K = 256
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 2 + 16),
    3: ("Q4_1", 32, 2 + 2 + 16),
    # 4, 5: Q4_2 / Q4_3, removed before GGUF existed
    6: ("Q5_0", 32, 2 + 4 + 16),
    7: ("Q5_1", 32, 2 + 2 + 4 + 16),
    8: ("Q8_0", 32, 2 + 32),
    9: ("Q8_1", 32, 4 + 4 + 32),
    10: ("Q2_K", QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
    11: ("Q3_K", QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    12: ("Q4_K", QK_K, 2 + 2 + QK_K // 2 + 12),
    13: ("Q5_K", QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    14: ("Q6_K", QK_K, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    15: ("Q8_K", QK_K, 4 + QK_K + QK_K // 8),
    16: ("IQ2_XXS", QK_K, 2 + QK_K // 4),
    17: ("IQ2_XS", QK_K, 2 + QK_K // 4 + QK_K // 32),
    18: ("IQ3_XXS", QK_K, 2 + QK_K // 4 + QK_K // 8),
    19: ("IQ1_S", QK_K, 2 + QK_K // 8 + QK_K // 16),
    20: ("IQ4_NL", 32, 2 + 16),
    21: ("IQ3_S", QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    22: ("IQ2_S", QK_K, 2 + QK_K // 4 + QK_K // 16),
    23: ("IQ4_XS", QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    30: ("BF16", 1, 2),
    31: ("Q4_0_4_4", 32, 2 + 16),  # removed; same block layout as Q4_0
    32: ("Q4_0_4_8", 32, 2 + 16),  # removed
    33: ("Q4_0_8_8", 32, 2 + 16),  # removed
    34: ("TQ1_0", QK_K, 2 + 4 * 13),
    35: ("TQ2_0", QK_K, 2 + 64),
    36: ("IQ4_NL_4_4", 32, 2 + 16),  # removed
    37: ("IQ4_NL_4_8", 32, 2 + 16),  # removed
    38: ("IQ4_NL_8_8", 32, 2 + 16),  # removed
    39: ("MXFP4", 32, 1 + 16),
    40: ("NVFP4", 64, 4 + 32),
    41: ("Q1_0", 128, 2 + 16),
}


def file_type_name(file_type: int | None) -> str | None:
    """Name of a GGUF ``general.file_type`` (e.g. ``15 -> "Q4_K_M"``); ``None`` if unknown."""
    if file_type is None or isinstance(file_type, bool) or not isinstance(file_type, int):
        return None
    return FILE_TYPE_NAMES.get(file_type & ~FILE_TYPE_GUESSED)


def tensor_type_name(ggml_type: int) -> str | None:
    """Name of a ggml tensor type id (e.g. ``12 -> "Q4_K"``); ``None`` if unknown."""
    entry = GGML_TYPES.get(ggml_type)
    return entry[0] if entry else None


def tensor_type_size(ggml_type: int) -> tuple[int, int] | None:
    """``(elements per block, bytes per block)`` of a ggml tensor type; ``None`` if unknown."""
    entry = GGML_TYPES.get(ggml_type)
    return (entry[1], entry[2]) if entry else None


# Longest alternatives first, so "Q4_K_M" wins over "Q4_K" and "IQ3_XXS" over "IQ3_XS".
_QUANT_RE = re.compile(
    r"""(?<![a-z0-9])(
        iq[1-4]_(?:xxs|xs|nl|s|m)
      | q[2-6]_k_(?:xxl|xl|s|m|l)
      | q[2-8]_k
      | q[458]_[01]
      | q1_0
      | tq[12]_0
      | mxfp4(?:_moe)?
      | nvfp4
      | bf16
      | fp?16
      | fp?32
    )(?![a-z0-9])""",
    re.IGNORECASE | re.VERBOSE,
)

_CANONICAL = {"FP16": "F16", "FP32": "F32", "MXFP4": "MXFP4_MOE"}


def guess_quant_from_filename(name: str | os.PathLike[str]) -> str | None:
    """Guess the quant from a GGUF file name, e.g. ``"model-Q4_K_M.gguf" -> "Q4_K_M"``.

    Case-insensitive; the last match in the file name wins, then the parent folder's name is
    tried (some repos keep each quant in its own folder). Returns ``None`` if nothing matches.
    """
    path = PurePath(os.fspath(name))
    for part in (path.name, path.parent.name):
        matches = _QUANT_RE.findall(part)
        if matches:
            found = matches[-1].upper()
            return _CANONICAL.get(found, found)
    return None
