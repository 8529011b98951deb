"""ONNX metadata: ``.onnx`` (a protobuf ``ModelProto``) and ``.ort`` (ONNX Runtime's
FlatBuffer format), read with bounded walkers, never with the ``onnx`` package.

``onnx.load`` would parse the whole protobuf into memory (up to its 2 GiB limit) to tell a
few numbers; the walker reads the IR version, the opsets, the graph's input and output names
and shapes and each initializer's dims and type, and seeks past the weights (``raw_data``),
so a 2 GiB model costs a few MiB of reads. The parameter count is the initializers' elements
(multiplied with an early exit). Weights in external files are listed (plain names in the
model's folder only), never opened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tui.errors import MetadataError
from tui.metadata.binary import FlatBuffer, ProtoReader, signed64
from tui.metadata.files import open_regular
from tui.metadata.kinds import config_kind, io_kind
from tui.metadata.types import JSON_HOOKS, ModelMetadata, sanitize

__all__ = ["read_onnx"]

MAX_PROTO_BYTES = 2 << 30  # protobuf's own limit: bigger ONNX weights live in external files
MAX_DIMS = 64
MAX_KEPT_NAMES = 256  # graph inputs/outputs listed
MAX_INIT_NAMES = 100_000  # initializer names remembered (to drop them from old IR inputs)
MAX_OPSETS = 64
MAX_EXTERNAL = 64  # external data files listed
MAX_TENSORS = 5_000_000
ELEMENT_LIMIT = 1 << 63

# TensorProto.DataType -> (name, bits)
DATA_TYPES: dict[int, tuple[str, int]] = {
    1: ("F32", 32), 2: ("U8", 8), 3: ("I8", 8), 4: ("U16", 16), 5: ("I16", 16), 6: ("I32", 32),
    7: ("I64", 64), 8: ("STRING", 0), 9: ("BOOL", 8), 10: ("F16", 16), 11: ("F64", 64),
    12: ("U32", 32), 13: ("U64", 64), 14: ("C64", 64), 15: ("C128", 128), 16: ("BF16", 16),
    17: ("F8_E4M3FN", 8), 18: ("F8_E4M3FNUZ", 8), 19: ("F8_E5M2", 8), 20: ("F8_E5M2FNUZ", 8),
    21: ("U4", 4), 22: ("I4", 4), 23: ("F4", 4),
}


class _Totals:
    __slots__ = ("by_type", "bytes", "external", "init_names", "n_tensors", "parameters")

    def __init__(self) -> None:
        self.parameters = 0
        self.bytes = 0
        self.n_tensors = 0
        self.by_type: dict[int, int] = {}
        self.external: list[str] = []
        self.init_names: set[str] = set()

    def add(self, dims: list[int], dtype: int, nbytes: int | None, name: str | None,
            fail: Any) -> None:
        """Count one initializer; ``nbytes`` ``None``: its size from its dims and type."""
        self.n_tensors += 1
        if self.n_tensors > MAX_TENSORS:
            raise fail(f"more than {MAX_TENSORS:,} initializers; not read")
        elements = 1
        for d in dims:
            elements *= d
            if elements >= ELEMENT_LIMIT:
                raise fail(f"an initializer has more than 2**63 elements (dims "
                           f"{str(dims)[:100]})")
        self.parameters += elements
        if self.parameters >= ELEMENT_LIMIT:
            raise fail("initializers declare more than 2**63 elements in total")
        self.by_type[dtype] = self.by_type.get(dtype, 0) + elements
        if nbytes is None:
            nbytes = (elements * DATA_TYPES.get(dtype, ("", 0))[1] + 7) // 8
        self.bytes += nbytes
        if name is not None and len(self.init_names) < MAX_INIT_NAMES and len(name) <= 256:
            self.init_names.add(name)

    def dominant(self) -> str | None:
        if not self.by_type:
            return None
        dtype = max(self.by_type, key=self.by_type.__getitem__)
        return DATA_TYPES.get(dtype, (str(dtype), 0))[0]


def _plain_name(name: str) -> bool:
    return bool(name) and "\0" not in name and not name.startswith(("/", "\\")) and ".." not in (
        name.replace("\\", "/").split("/")) and ":" not in name[:2]


# -- .onnx (protobuf) --------------------------------------------------------------------------


def _tensor(r: ProtoReader, end: int, totals: _Totals) -> None:
    """One TensorProto (an initializer): dims, type, name; its data is skipped."""
    dims: list[int] = []
    dtype = 0
    name = None
    nbytes: int | None = 0
    external = False
    location = None
    length = None
    for field, wire in r.walk(end):
        if field == 1:
            r.ints(wire, end, dims, MAX_DIMS)
        elif field == 2:
            dtype = r.value_int(wire, end) or 0
        elif field == 8:
            name = r.value_str(wire, end)
        elif field == 9 and wire == 2:  # raw_data: its length only
            n = r.length(end)
            nbytes = (nbytes or 0) + n
            r.skip(n, end)
        elif field == 14:
            external = r.value_int(wire, end) == 1
        elif field == 13:  # external_data: {key, value}
            sub = r.message(wire, end)
            if sub is not None:
                key = value = None
                for f2, w2 in r.walk(sub):
                    if f2 == 1:
                        key = r.value_str(w2, sub)
                    elif f2 == 2:
                        value = r.value_str(w2, sub)
                if key == "location":
                    location = value
                elif key == "length" and value is not None and value.isdigit() and len(
                        value) < 20:
                    length = int(value)
    dims = [signed64(d) for d in dims]
    if any(d < 0 for d in dims):
        raise r.fail(f"initializer {str(name)[:100]!r} has a negative dimension")
    if external:
        if location and _plain_name(location) and location not in totals.external and len(
                totals.external) < MAX_EXTERNAL:
            totals.external.append(location)
        nbytes = length  # None: from the dims and type
    totals.add(dims, dtype, nbytes, name, r.fail)


def _value_info(r: ProtoReader, end: int) -> tuple[str | None, list[Any]]:
    """A graph input or output: its name and shape (ints, or the symbolic names)."""
    name = None
    shape: list[Any] = []
    for field, wire in r.walk(end):
        if field == 1:
            name = r.value_str(wire, end)
        elif field == 2:  # TypeProto
            t_end = r.message(wire, end)
            if t_end is None:
                continue
            for f2, w2 in r.walk(t_end):
                if f2 != 1:  # tensor_type only
                    continue
                tt_end = r.message(w2, t_end)
                if tt_end is None:
                    continue
                for f3, w3 in r.walk(tt_end):
                    if f3 != 2:  # shape
                        continue
                    s_end = r.message(w3, tt_end)
                    if s_end is None:
                        continue
                    for f4, w4 in r.walk(s_end):
                        if f4 != 1:
                            continue
                        d_end = r.message(w4, s_end)
                        if d_end is None:
                            continue
                        dim: Any = None
                        for f5, w5 in r.walk(d_end):
                            if f5 == 1:
                                v = r.value_int(w5, d_end)
                                dim = signed64(v) if v is not None else None
                            elif f5 == 2:
                                dim = r.value_str(w5, d_end, 64)
                        if len(shape) < MAX_DIMS:
                            shape.append(dim)
    return name, shape


def _graph(r: ProtoReader, end: int, totals: _Totals) -> dict[str, Any]:
    inputs: list[tuple[str | None, list[Any]]] = []
    outputs: list[tuple[str | None, list[Any]]] = []
    n_inputs = n_outputs = nodes = 0
    name = None
    for field, wire in r.walk(end):
        if field == 1:
            nodes += 1
        elif field == 2:
            name = r.value_str(wire, end, 256)
        elif field == 5:
            t_end = r.message(wire, end)
            if t_end is not None:
                _tensor(r, t_end, totals)
        elif field == 15:  # sparse_initializer: {values, indices, dims}
            s_end = r.message(wire, end)
            if s_end is None:
                continue
            dims: list[int] = []
            for f2, w2 in r.walk(s_end):
                if f2 == 3:
                    r.ints(w2, s_end, dims, MAX_DIMS)
            dims = [signed64(d) for d in dims]
            if any(d < 0 for d in dims):
                raise r.fail("a sparse initializer has a negative dimension")
            totals.add(dims, 0, 0, None, r.fail)
        elif field in (11, 12):
            v_end = r.message(wire, end)
            if v_end is None:
                continue
            item = _value_info(r, v_end)
            if field == 11:
                n_inputs += 1
                if len(inputs) < MAX_KEPT_NAMES + MAX_INIT_NAMES:
                    inputs.append(item)
            else:
                n_outputs += 1
                if len(outputs) < MAX_KEPT_NAMES:
                    outputs.append(item)
    # Before IR 4, initializers are listed among the inputs too.
    real_inputs = [i for i in inputs if i[0] not in totals.init_names]
    return {
        "graph_name": name,
        "nodes": nodes,
        "inputs": real_inputs[:MAX_KEPT_NAMES],
        "outputs": outputs,
        "n_inputs": n_inputs - (len(inputs) - len(real_inputs)),
        "n_outputs": n_outputs,
    }


def _read_proto(fp: Any, size: int, label: str) -> tuple[dict[str, Any], _Totals]:
    if size > MAX_PROTO_BYTES:
        raise MetadataError(f"{label}: {size} bytes, more than ONNX's 2 GiB protobuf limit; "
                            "not an ONNX model (bigger weights go in external data files)")
    r = ProtoReader(fp, size, label, "ONNX model")
    totals = _Totals()
    info: dict[str, Any] = {"opsets": {}}
    seen = False
    for field, wire in r.walk(size):
        if field == 1:
            info["ir_version"] = r.value_int(wire, size)
            seen = True
        elif field == 2:
            info["producer"] = r.value_str(wire, size, 256)
        elif field == 3:
            info["producer_version"] = r.value_str(wire, size, 256)
        elif field == 5:
            info["model_version"] = r.value_int(wire, size)
        elif field == 7:
            g_end = r.message(wire, size)
            if g_end is not None:
                if "graph" in info:
                    raise r.fail("not a valid ONNX model (two graphs)")
                info["graph"] = _graph(r, g_end, totals)
                seen = True
        elif field == 8:
            o_end = r.message(wire, size)
            if o_end is None:
                continue
            domain, version = "", None
            for f2, w2 in r.walk(o_end):
                if f2 == 1:
                    domain = r.value_str(w2, o_end, 256) or ""
                elif f2 == 2:
                    version = r.value_int(w2, o_end)
            if len(info["opsets"]) < MAX_OPSETS and version is not None:
                info["opsets"][domain or "ai.onnx"] = version
    if not seen:
        raise MetadataError(f"{label}: not an ONNX model (no IR version and no graph)")
    return info, totals


# -- .ort (FlatBuffer) -------------------------------------------------------------------------


def _read_ort(fp: Any, size: int, label: str) -> tuple[dict[str, Any], _Totals]:
    fb = FlatBuffer(fp, size, label, "ORT model")
    if size < 8 or fb.bytes_at(4, 4) != b"ORTM":
        raise MetadataError(f"{label}: not an ORT model (no ORTM identifier)")
    session = fb.table(fb.root())
    info: dict[str, Any] = {"opsets": {}, "container": "ort"}
    info["ort_version"] = fb.string(session, 0, 64)
    model_at = fb.ref(session, 1)
    if not model_at:
        raise MetadataError(f"{label}: ORT file without a model")
    model = fb.table(model_at)
    at = fb.field(model, 0)
    info["ir_version"] = fb.i64(at) if at else None
    start, count = fb.vector(model, 1, 4, MAX_OPSETS)
    for i in range(count):
        opset = fb.vector_table(start, i)
        at = fb.field(opset, 1)
        domain = fb.string(opset, 0, 256) or "ai.onnx"
        if at:
            info["opsets"][domain] = fb.i64(at)
    info["producer"] = fb.string(model, 2, 256)
    info["producer_version"] = fb.string(model, 3, 256)
    totals = _Totals()
    graph_at = fb.ref(model, 7)
    if graph_at:
        graph = fb.table(graph_at)
        start, count = fb.vector(graph, 0, 4, MAX_TENSORS)
        for i in range(count):
            tensor = fb.vector_table(start, i)
            d_start, d_count = fb.vector(tensor, 2, 8, MAX_DIMS)
            dims = [fb.i64(d_start + 8 * k) for k in range(d_count)]
            if any(d < 0 for d in dims):
                raise MetadataError(f"{label}: an initializer has a negative dimension")
            at = fb.field(tensor, 3)
            dtype = fb.i32(at) if at else 0
            _, nbytes = fb.vector(tensor, 4, 1, 1 << 62)
            totals.add(dims, dtype, nbytes, fb.string(tensor, 0, 256), fb.fail)
        _, n_nodes = fb.vector(graph, 2, 4, 1 << 30)
        info["graph"] = {"nodes": n_nodes}
        for key, index in (("inputs", 5), ("outputs", 6)):
            s_start, s_count = fb.vector(graph, index, 4, 1 << 24)
            info["graph"][key] = [
                (fb.string_at(s_start + 4 * i + fb.u32(s_start + 4 * i), 256), [])
                for i in range(min(s_count, MAX_KEPT_NAMES))
            ]
            info["graph"]["n_" + key] = s_count
    return info, totals


# -- the record --------------------------------------------------------------------------------


def _folder_config_kind(path: Path) -> str | None:
    """What a config.json next to the model declares (Optimum exports keep one)."""
    config = path.parent / "config.json"
    try:
        with open_regular(config) as fp:
            raw = fp.read((1 << 20) + 1)
    except (OSError, MetadataError):
        return None
    if len(raw) > 1 << 20:
        return None
    try:
        data = json.loads(raw, **JSON_HOOKS)
    except (ValueError, RecursionError):
        return None
    return config_kind(data) if isinstance(data, dict) else None


def read_onnx(path: str | os.PathLike[str]) -> ModelMetadata:
    """Metadata of an ``.onnx`` or ``.ort`` file: IR version and opsets, the graph's inputs and
    outputs, the initializers' parameter count, bytes and dominant type. Raises
    :class:`MetadataError` (one line) for anything that is not a sound model."""
    path = Path(path)
    label = os.fspath(path)
    try:
        with open_regular(path) as fp:
            size = os.fstat(fp.fileno()).st_size
            if size == 0:
                raise MetadataError(f"{label}: empty file, not an ONNX model")
            head = os.pread(fp.fileno(), 8, 0)
            if path.suffix.lower() == ".ort" or head[4:8] == b"ORTM":
                info, totals = _read_ort(fp, size, label)
            else:
                info, totals = _read_proto(fp, size, label)
    except OSError as exc:
        raise MetadataError(f"{label}: cannot read ({exc.strerror or exc})") from exc
    graph = info.get("graph") or {}
    inputs = [n for n, _ in graph.get("inputs", []) if n]
    outputs = [n for n, _ in graph.get("outputs", []) if n]
    kind = _folder_config_kind(path) or io_kind(inputs, outputs)
    opsets = info["opsets"]
    extra: dict[str, Any] = {
        "container": info.get("container", "onnx"),
        "ir_version": info.get("ir_version"),
        "opset": opsets.get("ai.onnx", opsets.get("", None)),
        "opsets": opsets,
        "inputs": [{"name": n, "shape": s} for n, s in graph.get("inputs", [])],
        "outputs": [{"name": n, "shape": s} for n, s in graph.get("outputs", [])],
        "n_inputs": graph.get("n_inputs", len(inputs)),
        "n_outputs": graph.get("n_outputs", len(outputs)),
        "nodes": graph.get("nodes"),
        "n_tensors": totals.n_tensors,
    }
    for key in ("producer", "producer_version", "ort_version", "model_version"):
        if info.get(key) is not None:
            extra[key] = info[key]
    if totals.external:
        extra["external_data"] = totals.external
    dtype = totals.dominant()
    meta = ModelMetadata(
        format="onnx",
        name=graph.get("graph_name") or None,
        parameters=totals.parameters,
        quantization=dtype,
        dtype=dtype,
        tensor_bytes=totals.bytes,
        kind=kind,
        extra={k: v for k, v in extra.items() if v is not None},
    )
    return sanitize(meta)
