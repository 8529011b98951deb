"""TFLite metadata: a ``.tflite`` FlatBuffer (identifier ``TFL3``), read by hand.

The schema's version, description, subgraphs and their tensors (shape, type, buffer) are read
through :class:`tui.metadata.binary.FlatBuffer`: every offset is checked against the file,
every vector's length against a cap before it is walked, and only the fixed depth of the
schema is followed. The parameter count is the elements of the tensors whose buffer holds
data (weights and constants), bytes are those buffers' sizes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tui.errors import MetadataError
from tui.metadata.binary import FlatBuffer
from tui.metadata.files import open_regular
from tui.metadata.kinds import io_kind
from tui.metadata.types import ModelMetadata, sanitize

__all__ = ["read_tflite"]

MAX_SUBGRAPHS = 10_000
MAX_TENSORS = 2_000_000  # over all subgraphs
MAX_BUFFERS = 2_000_000
MAX_DIMS = 64
MAX_KEPT_NAMES = 64
ELEMENT_LIMIT = 1 << 63

# TensorType -> (name, bits)
TENSOR_TYPES: dict[int, tuple[str, int]] = {
    0: ("F32", 32), 1: ("F16", 16), 2: ("I32", 32), 3: ("U8", 8), 4: ("I64", 64),
    5: ("STRING", 0), 6: ("BOOL", 8), 7: ("I16", 16), 8: ("C64", 64), 9: ("I8", 8),
    10: ("F64", 64), 11: ("C128", 128), 12: ("U64", 64), 13: ("RESOURCE", 0),
    14: ("VARIANT", 0), 15: ("U32", 32), 16: ("U16", 16), 17: ("I4", 4), 18: ("BF16", 16),
}


def _buffer_size(fb: FlatBuffer, buffers: tuple[int, int], index: int,
                 cache: dict[int, int]) -> int:
    """Bytes of data buffer ``index`` holds (0: none, an activation)."""
    start, count = buffers
    if index == 0 or index >= count:
        return 0
    if index not in cache:
        buf = fb.vector_table(start, index)
        _, n = fb.vector(buf, 0, 1, 1 << 62)
        if not n:
            at = fb.field(buf, 2)  # size, for data stored after the FlatBuffer (> 2 GiB)
            n = fb.u64(at) if at else 0
            if n > fb.size:
                raise fb.fail(f"buffer {index} declares {n} bytes, more than the file holds")
        cache[index] = n
    return cache[index]


def read_tflite(path: str | os.PathLike[str]) -> ModelMetadata:
    """Metadata of a ``.tflite`` file: schema version, subgraphs, tensors, parameter count.
    Raises :class:`MetadataError` (one line) for anything that is not a sound model."""
    label = os.fspath(path)
    try:
        with open_regular(path) as fp:
            size = os.fstat(fp.fileno()).st_size
            fb = FlatBuffer(fp, size, label, "TFLite model")
            if size < 8 or fb.bytes_at(4, 4) != b"TFL3":
                raise MetadataError(f"{label}: not a TFLite model (no TFL3 identifier)")
            model = fb.table(fb.root())
            at = fb.field(model, 0)
            version = fb.u32(at) if at else None
            description = fb.string(model, 3, 256)
            buffers = fb.vector(model, 4, 4, MAX_BUFFERS)
            sub_start, n_sub = fb.vector(model, 2, 4, MAX_SUBGRAPHS)
            _, n_opcodes = fb.vector(model, 1, 4, 1 << 20)
            totals: dict[str, Any] = {"parameters": 0, "bytes": 0, "tensors": 0, "ops": 0}
            by_type: dict[int, int] = {}
            inputs: list[dict[str, Any]] = []
            outputs: list[dict[str, Any]] = []
            sizes: dict[int, int] = {}
            for s in range(n_sub):
                sub = fb.vector_table(sub_start, s)
                t_start, n_tensors = fb.vector(sub, 0, 4, MAX_TENSORS)
                totals["tensors"] += n_tensors
                if totals["tensors"] > MAX_TENSORS:
                    raise MetadataError(f"{label}: more than {MAX_TENSORS:,} tensors; not read")
                _, n_ops = fb.vector(sub, 3, 4, 1 << 24)
                totals["ops"] += n_ops
                shapes: dict[int, list[int]] = {}
                for t in range(n_tensors):
                    tensor = fb.vector_table(t_start, t)
                    d_start, n_dims = fb.vector(tensor, 0, 4, MAX_DIMS)
                    shape = [fb.i32(d_start + 4 * k) for k in range(n_dims)]
                    at = fb.field(tensor, 1)
                    ttype = fb.u8(at) if at else 0
                    at = fb.field(tensor, 2)
                    buffer = fb.u32(at) if at else 0
                    nbytes = _buffer_size(fb, buffers, buffer, sizes)
                    if s == 0 and t < 4096:
                        shapes[t] = shape
                    if not nbytes:
                        continue
                    elements = 1
                    for d in shape:
                        if d < 0:
                            raise MetadataError(f"{label}: tensor {t} has a negative dimension")
                        elements *= d
                        if elements >= ELEMENT_LIMIT:
                            raise MetadataError(f"{label}: tensor {t} has more than 2**63 "
                                                "elements")
                    totals["parameters"] += elements
                    totals["bytes"] += nbytes
                    by_type[ttype] = by_type.get(ttype, 0) + elements
                if s == 0:
                    for key, index, into in (("inputs", 1, inputs), ("outputs", 2, outputs)):
                        io_start, n_io = fb.vector(sub, index, 4, 1 << 20)
                        for k in range(min(n_io, MAX_KEPT_NAMES)):
                            t = fb.i32(io_start + 4 * k)
                            if not 0 <= t < n_tensors:
                                raise MetadataError(f"{label}: subgraph {key} name tensor {t} "
                                                    f"of {n_tensors}")
                            tensor = fb.vector_table(t_start, t)
                            into.append({"name": fb.string(tensor, 3, 256),
                                         "shape": shapes.get(t)})
    except OSError as exc:
        raise MetadataError(f"{label}: cannot read ({exc.strerror or exc})") from exc
    dominant = max(by_type, key=by_type.__getitem__) if by_type else None
    dtype = TENSOR_TYPES.get(dominant, (str(dominant), 0))[0] if dominant is not None else None
    names_in = [i["name"] for i in inputs if i["name"]]
    names_out = [o["name"] for o in outputs if o["name"]]
    extra: dict[str, Any] = {
        "schema_version": version,
        "subgraphs": n_sub,
        "n_tensors": totals["tensors"],
        "operators": totals["ops"],
        "operator_codes": n_opcodes,
        "inputs": inputs,
        "outputs": outputs,
    }
    if description:
        extra["description"] = description
    meta = ModelMetadata(
        format="tflite",
        name=Path(label).stem,
        parameters=totals["parameters"],
        quantization=dtype,
        dtype=dtype,
        tensor_bytes=totals["bytes"],
        kind=io_kind(names_in, names_out),
        extra={k: v for k, v in extra.items() if v is not None},
    )
    return sanitize(meta)
