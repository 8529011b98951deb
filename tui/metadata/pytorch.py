"""PyTorch pickles (``.bin``, ``.pt``, ``.pth``, ``.ckpt``): inspected, never unpickled.

Loading a pickle runs whatever code it names, so these files are always flagged
``unsafe_format`` and only *read*: the zip layout ``torch.save`` writes (``<name>/data.pkl``
plus one ``<name>/data/<key>`` entry per storage) or the legacy layout (a few pickles in a
row, then the raw storages). The pickle's opcodes are walked with :func:`pickletools.genops`
(a parser, not an unpickler) over a bounded number of opcodes, with a small model of the
stack: it lists every import the pickle makes (``GLOBAL``, ``STACK_GLOBAL``, ``INST``), counts
tensors and storages and takes each storage's element count from its persistent id, and each
tensor's name and shape (so that a LoRA or a diffusion checkpoint is recognised like its
safetensors twin). Imports outside ``torch``, ``collections`` and ``numpy`` (and a few plain
builtins) are named: "imports os.system — could run code".

Bounds: the zip's central directory is sized from its end record before ``zipfile`` reads it;
``data.pkl`` (and a legacy file's pickles) are read up to 64 MiB; at most 2,000,000 opcodes
are walked (a bigger pickle is reported as inspected in part); the stack and memo are capped.
"""

from __future__ import annotations

import io
import os
import pickletools
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

from tui.errors import MetadataError
from tui.metadata.files import open_regular
from tui.metadata.kinds import TensorLayout, adapter_kind, config_kind
from tui.metadata.types import ModelMetadata, sanitize

__all__ = ["read_pytorch_file", "read_pytorch_folder"]

MAX_PICKLE_BYTES = 64 << 20
MAX_OPCODES = 2_000_000
MAX_STACK = 1_000_000
MAX_MEMO = 1_000_000
MAX_ZIP_ENTRIES = 200_000
MAX_CENTRAL_DIR = 64 << 20
MAX_IMPORTS = 256
MAX_STORAGES = 1_000_000
MAX_FOLDER_FILES = 64
MAX_NUMEL = 1 << 62
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_GGML_MAGICS = {b"lmgg": "GGML", b"fmgg": "GGMF", b"tjgg": "GGJT", b"algg": "GGLA"}
_WEIGHT_NAME = re.compile(
    r"^(?:pytorch_model|model|diffusion_pytorch_model|adapter_model)"
    r"(?:-\d{5}-of-\d{5})?\.(?:bin|pt|pth|ckpt)$", re.IGNORECASE,
)
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_PICKLE_OPCODES = frozenset(op.code for op in pickletools.opcodes)  # a pickle's first byte

# Bytes per element of each storage type (UntypedStorage counts bytes).
STORAGE_BYTES: dict[str, int] = {
    "FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2,
    "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1,
    "BoolStorage": 1, "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16,
    "QInt8Storage": 1, "QUInt8Storage": 1, "QInt32Storage": 4, "UntypedStorage": 1,
    "Float8_e4m3fnStorage": 1, "Float8_e5m2Storage": 1,
}
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "F32", "DoubleStorage": "F64", "HalfStorage": "F16",
    "BFloat16Storage": "BF16", "LongStorage": "I64", "IntStorage": "I32",
    "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL",
    "Float8_e4m3fnStorage": "F8_E4M3", "Float8_e5m2Storage": "F8_E5M2",
}
# What a state dict legitimately imports: torch's own rebuild functions, storages and dtypes,
# OrderedDict, numpy arrays, and plain builtin containers.
_SAFE_ROOTS = ("torch", "collections", "numpy")
_UNSAFE_TORCH = ("torch.hub", "torch.package", "torch.jit", "torch.utils.cpp_extension",
                 "torch.serialization", "torch._dynamo", "torch.ops")
_SAFE_BUILTINS = frozenset({
    "set", "frozenset", "bytearray", "bytes", "slice", "complex", "range", "list", "dict",
    "tuple", "int", "float", "str", "bool",
})
_REBUILD = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_qtensor", "_rebuild_sparse_tensor",
            "_rebuild_device_tensor_from_numpy", "_rebuild_meta_tensor_no_storage")


def is_expected_import(module: str, name: str) -> bool:
    """Whether a pickle's import is one a plain PyTorch state dict makes."""
    root = module.split(".", 1)[0]
    if root in ("builtins", "__builtin__"):
        return module == root and name in _SAFE_BUILTINS
    if module == "_codecs":
        return name == "encode"
    if root not in _SAFE_ROOTS:
        return False
    if root == "torch":
        if any(module == bad or module.startswith(bad + ".") for bad in _UNSAFE_TORCH):
            return False
        return name not in ("load", "load_state_dict_from_url", "eval", "exec")
    return True


class _Mark:
    __slots__ = ()


class _Opaque:
    __slots__ = ()


_MARK = _Mark()
_OPAQUE = _Opaque()


class _Global:
    """An imported name on the stack (``key``: the string pushed just before it)."""

    __slots__ = ("key", "module", "name")

    def __init__(self, module: str, name: str, key: str | None = None) -> None:
        self.module = module
        self.name = name
        self.key = key


class PickleSummary:
    """What walking one or more pickles found."""

    __slots__ = ("imports", "layout", "n_tensors", "opcodes", "partial", "storages", "suspicious")

    def __init__(self) -> None:
        self.imports: list[str] = []
        self.suspicious: list[str] = []
        self.storages: dict[str, tuple[str, int | None]] = {}  # key -> (type, numel)
        self.n_tensors = 0
        self.opcodes = 0
        self.partial = False
        self.layout = TensorLayout()

    def note_import(self, module: Any, name: Any) -> None:
        if not isinstance(module, str) or not isinstance(name, str):
            text, ok = "an import computed at load time", False
        else:
            text = f"{module[:100]}.{name[:100]}"
            ok = is_expected_import(module, name)
        if text not in self.imports and len(self.imports) < MAX_IMPORTS:
            self.imports.append(text)
        if not ok and text not in self.suspicious and len(self.suspicious) < MAX_IMPORTS:
            self.suspicious.append(text)


def walk_pickle(stream: io.BytesIO, summary: PickleSummary, label: str) -> bool:
    """Walk one pickle from ``stream`` (up to its STOP) without running it; ``False`` if the
    opcode budget ran out first (the summary is then partial)."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    last_str: str | None = None

    def pop() -> Any:
        if not stack:
            raise MetadataError(f"{label}: not a valid pickle (stack underflow)")
        return stack.pop()

    def pop_mark() -> list[Any]:
        items = []
        while True:
            item = pop()
            if item is _MARK:
                items.reverse()
                return items
            items.append(item)

    try:
        for op, arg, _pos in pickletools.genops(stream):
            summary.opcodes += 1
            if summary.opcodes > MAX_OPCODES:
                summary.partial = True
                return False
            if len(stack) > MAX_STACK or len(memo) > MAX_MEMO:
                raise MetadataError(f"{label}: pickle stack or memo beyond "
                                    f"{MAX_STACK:,} entries; not read")
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                return True
            if name == "MARK":
                stack.append(_MARK)
            elif name in ("EXT1", "EXT2", "EXT4"):  # a name from copyreg's extension registry
                summary.note_import(None, arg)
                stack.append(_OPAQUE)
            elif isinstance(arg, str | bytes | int | float) and not op.stack_before and len(
                    op.stack_after) == 1 and name not in ("GET", "BINGET", "LONG_BINGET",
                                                           "GLOBAL", "PERSID", "INST"):
                stack.append(arg)
                if isinstance(arg, str):
                    last_str = arg
            elif name == "NONE":
                stack.append(None)
            elif name in ("NEWTRUE", "NEWFALSE"):
                stack.append(name == "NEWTRUE")
            elif name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                summary.note_import(module, attr)
                stack.append(_Global(module, attr, last_str))
            elif name == "STACK_GLOBAL":
                attr, module = pop(), pop()
                summary.note_import(module, attr)
                stack.append(_Global(str(module), str(attr), last_str)
                             if isinstance(module, str) and isinstance(attr, str) else _OPAQUE)
            elif name == "INST":
                module, _, attr = str(arg).partition(" ")
                summary.note_import(module, attr)
                pop_mark()
                stack.append(_OPAQUE)
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                if not stack or stack[-1] is _MARK:
                    raise MetadataError(f"{label}: not a valid pickle (memo of nothing)")
                memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                value = memo.get(arg, _OPAQUE)
                if isinstance(value, _Global):
                    value = _Global(value.module, value.name, last_str)
                elif isinstance(value, str):
                    last_str = value
                stack.append(value)
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = [pop() for _ in range(n)]
                stack.append(tuple(reversed(items)))
            elif name == "TUPLE":
                stack.append(tuple(pop_mark()))
            elif name == "BINPERSID":
                _storage(pop(), summary)
                stack.append(_OPAQUE)
            elif name == "REDUCE":
                args, func = pop(), pop()
                if isinstance(func, _Global) and func.name in _REBUILD:
                    summary.n_tensors += 1
                    shape = args[2] if isinstance(args, tuple) and len(args) > 2 else None
                    if func.key is not None:
                        summary.layout.add(func.key, list(shape) if isinstance(
                            shape, tuple) else None)
                stack.append(_OPAQUE)
            elif name == "POP":
                pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                if not stack:
                    raise MetadataError(f"{label}: not a valid pickle (stack underflow)")
                stack.append(stack[-1])
            else:
                before = op.stack_before
                if pickletools.markobject in before:
                    pop_mark()
                    for _ in range(before.index(pickletools.markobject)):
                        pop()
                else:
                    for _ in before:
                        pop()
                stack.extend(_OPAQUE for _ in op.stack_after)
    except MetadataError:
        raise
    except (ValueError, struct.error, UnicodeDecodeError, OverflowError, KeyError) as exc:
        raise MetadataError(f"{label}: not a valid pickle ({str(exc)[:200]})") from None
    raise MetadataError(f"{label}: truncated pickle (no STOP)")


def _storage(pid: Any, summary: PickleSummary) -> None:
    """A persistent id ``('storage', type, key, location, numel, ...)``."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        return
    stype = pid[1].name if isinstance(pid[1], _Global) else "?"
    key = pid[2]
    numel = pid[4]
    if not isinstance(key, str | int) or isinstance(key, bool):
        return
    key = str(key)[:64]
    if key in summary.storages or len(summary.storages) >= MAX_STORAGES:
        return
    ok = isinstance(numel, int) and not isinstance(numel, bool) and 0 <= numel <= MAX_NUMEL
    summary.storages[key] = (stype, numel if ok else None)


# -- containers --------------------------------------------------------------------------------


def _eocd(fp: io.FileIO, size: int, label: str) -> tuple[int, int]:
    """(entries, central directory bytes) from a zip's end records, before zipfile reads it."""
    tail_len = min(size, 65_557)
    tail = os.pread(fp.fileno(), tail_len, size - tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise MetadataError(f"{label}: not a valid zip archive (no end record)")
    entries, cd_size = struct.unpack_from("<HI", tail, at + 10)
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
        loc = at - 20
        if loc < 0 or tail[loc : loc + 4] != b"PK\x06\x07":
            raise MetadataError(f"{label}: not a valid zip archive (no zip64 locator)")
        z64 = struct.unpack_from("<Q", tail, loc + 8)[0]
        if z64 + 56 > size:
            raise MetadataError(f"{label}: not a valid zip archive (zip64 record past the end)")
        rec = os.pread(fp.fileno(), 56, z64)
        if rec[:4] != b"PK\x06\x06":
            raise MetadataError(f"{label}: not a valid zip archive (bad zip64 record)")
        entries, cd_size = struct.unpack_from("<QQ", rec, 32)
    if entries > MAX_ZIP_ENTRIES or cd_size > MAX_CENTRAL_DIR:
        raise MetadataError(f"{label}: zip archive declares {entries:,} entries "
                            f"({cd_size:,}-byte directory); more than a checkpoint holds")
    return entries, cd_size


def _read_zip(fp: io.FileIO, size: int, label: str, summary: PickleSummary
              ) -> dict[str, Any]:
    _eocd(fp, size, label)
    try:
        zf = zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError,
            struct.error, NotImplementedError, RuntimeError) as exc:
        raise MetadataError(f"{label}: not a valid zip archive ({str(exc)[:200]})") from None
    with zf:
        infos = zf.infolist()
        pickles = [i for i in infos if i.filename.endswith("/data.pkl")
                   and i.filename.count("/") == 1]
        if len(pickles) != 1:
            raise MetadataError(f"{label}: a zip archive without one PyTorch data.pkl; not a "
                                "PyTorch checkpoint")
        info = pickles[0]
        prefix = info.filename[: -len("data.pkl")]
        if info.file_size > MAX_PICKLE_BYTES:
            raise MetadataError(f"{label}: data.pkl is {info.file_size:,} bytes (limit "
                                f"{MAX_PICKLE_BYTES >> 20} MiB); not inspected")
        try:
            with zf.open(info) as member:
                data = member.read(MAX_PICKLE_BYTES + 1)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError,
                RuntimeError) as exc:
            raise MetadataError(f"{label}: cannot read data.pkl ({str(exc)[:200]})") from None
        if len(data) > MAX_PICKLE_BYTES:
            raise MetadataError(f"{label}: data.pkl unpacks to more than "
                                f"{MAX_PICKLE_BYTES >> 20} MiB; not inspected")
        walk_pickle(io.BytesIO(data), summary, label)
        data_sizes = {
            i.filename[len(prefix) + 5 :]: i.file_size
            for i in infos if i.filename.startswith(prefix + "data/")
        }
        torchscript = any(i.filename.startswith(prefix + "code/") for i in infos)
    return {"container": "torchscript" if torchscript else "zip", "data_sizes": data_sizes}


def _read_pickles(fp: io.FileIO, size: int, label: str
                  ) -> tuple[PickleSummary, dict[str, Any]]:
    """A legacy ``torch.save`` file (magic number, version, system info, the object, the
    storage keys) or a plain pickle: the object's pickle is walked."""
    data = os.pread(fp.fileno(), min(size, MAX_PICKLE_BYTES), 0)
    stream = io.BytesIO(data)
    try:
        first = PickleSummary()
        walk_pickle(stream, first, label)
        if _first_int(data) != _LEGACY_MAGIC:
            return first, {"container": "pickle", "data_sizes": {}}
        for _ in range(2):  # protocol version, system info
            walk_pickle(stream, PickleSummary(), label)
        summary = PickleSummary()
        walk_pickle(stream, summary, label)
    except MetadataError:
        if len(data) < size:
            raise MetadataError(f"{label}: the pickle runs past the first "
                                f"{MAX_PICKLE_BYTES >> 20} MiB; not inspected") from None
        raise
    return summary, {"container": "legacy", "data_sizes": {}}


def _first_int(data: bytes) -> int | None:
    """The integer a pickle holding just one (``LONG1``, as the legacy magic) carries."""
    try:
        ops = list(pickletools.genops(io.BytesIO(data[:64])))
    except ValueError:
        return None
    values = [arg for op, arg, _ in ops if op.name in ("LONG1", "LONG", "INT", "BININT")]
    return values[0] if len(values) == 1 and isinstance(values[0], int) else None


def inspect_pickle_file(path: Path) -> tuple[PickleSummary, dict[str, Any]]:
    """Inspect one pickle-based file (zip or legacy); raises :class:`MetadataError`."""
    label = os.fspath(path)
    try:
        with open_regular(path) as fp:
            size = os.fstat(fp.fileno()).st_size
            if size == 0:
                raise MetadataError(f"{label}: empty file, not a PyTorch checkpoint")
            head = os.pread(fp.fileno(), 4, 0)
            if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
                summary = PickleSummary()
                notes = _read_zip(fp, size, label, summary)
            elif head[:4] in _GGML_MAGICS:
                raise MetadataError(
                    f"{label}: an old {_GGML_MAGICS[head[:4]]} file (from before GGUF); "
                    "convert it to GGUF with llama.cpp to use it")
            elif head[:1].decode("latin-1") in _PICKLE_OPCODES:
                summary, notes = _read_pickles(fp, size, label)
            else:
                raise MetadataError(f"{label}: not a PyTorch checkpoint (neither a zip archive "
                                    "nor a pickle)")
    except OSError as exc:
        raise MetadataError(f"{label}: cannot read ({exc.strerror or exc})") from exc
    return summary, notes


def _totals(summary: PickleSummary, data_sizes: dict[str, int]
            ) -> tuple[int, int, dict[str, int]]:
    """(parameters, bytes, elements by dtype) from the storages."""
    params = nbytes = 0
    by_dtype: dict[str, int] = {}
    for key, (stype, numel) in summary.storages.items():
        width = STORAGE_BYTES.get(stype)
        on_disk = data_sizes.get(key)
        if on_disk is not None and width:
            elements = on_disk // width
            nbytes += on_disk
        elif numel is not None:
            elements = numel
            nbytes += numel * (width or 0)
        else:
            continue
        if stype == "UntypedStorage":
            continue  # bytes, not elements of a known type
        params += elements
        dtype = STORAGE_DTYPES.get(stype, stype)
        by_dtype[dtype] = by_dtype.get(dtype, 0) + elements
    return params, nbytes, by_dtype


def _metadata(summaries: list[tuple[PickleSummary, dict[str, Any]]], *, kind: str | None,
              details: dict[str, Any], fields: dict[str, Any], files: list[str]
              ) -> ModelMetadata:
    params = nbytes = tensors = 0
    by_dtype: dict[str, int] = {}
    imports: list[str] = []
    suspicious: list[str] = []
    layout = TensorLayout()
    partial = False
    containers = []
    for summary, notes in summaries:
        p, b, d = _totals(summary, notes["data_sizes"])
        params += p
        nbytes += b
        tensors += summary.n_tensors
        for k, v in d.items():
            by_dtype[k] = by_dtype.get(k, 0) + v
        imports += [i for i in summary.imports if i not in imports]
        suspicious += [i for i in summary.suspicious if i not in suspicious]
        layout.merge(summary.layout)
        partial = partial or summary.partial
        containers.append(notes["container"])
    if kind is None:
        kind, found = layout.decide()
        details = {**found, **details}
    dtype = max(by_dtype, key=by_dtype.__getitem__) if by_dtype else None
    extra: dict[str, Any] = {
        **fields.pop("extra", {}),
        **details,
        "unsafe_format": True,
        "container": containers[0] if len(set(containers)) == 1 else containers,
        "pickle_imports": imports[:MAX_IMPORTS],
        "n_tensors": tensors,
        "n_storages": sum(len(s.storages) for s, _ in summaries),
        "weight_files": files,
    }
    if suspicious:
        extra["suspicious_imports"] = suspicious[:MAX_IMPORTS]
    if partial:
        extra["pickle_inspected"] = f"in part (more than {MAX_OPCODES:,} opcodes)"
    fields.setdefault("quantization", dtype)
    meta = ModelMetadata(
        format="pytorch",
        parameters=params,
        dtype=dtype,
        tensor_bytes=nbytes,
        kind=kind,
        extra=extra,
        **fields,
    )
    return sanitize(meta)


def read_pytorch_file(path: str | os.PathLike[str]) -> ModelMetadata:
    """Metadata of one PyTorch pickle file, inspected without unpickling. Raises
    :class:`MetadataError` (one line) for a file that is not one."""
    path = Path(path)
    summary, notes = inspect_pickle_file(path)
    return _metadata([(summary, notes)], kind=None, details={}, fields={"extra": {}},
                     files=[path.name])


def _weight_names(folder: Path, names: set[str]) -> list[str]:
    from tui.metadata.safetensors import _read_json

    index = sorted(n for n in names if n.lower().endswith(".bin.index.json"))
    if index:
        data = _read_json(folder / index[0])
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        if isinstance(weight_map, dict):
            files = sorted({f for f in weight_map.values() if isinstance(f, str)})
            bad = [f for f in files if "/" in f or "\\" in f or f.startswith(".") or f not in
                   names]
            if bad:
                raise MetadataError(f"{folder / index[0]}: weight_map names a missing file or "
                                    f"one outside the folder: {bad[0][:100]!r}")
            return files
    weights = sorted(n for n in names if _WEIGHT_NAME.match(n))
    return weights or sorted(n for n in names if n.lower().endswith(_PICKLE_SUFFIXES))


def read_pytorch_folder(path: str | os.PathLike[str]) -> ModelMetadata:
    """Metadata of a model folder with pickle weights (``pytorch_model.bin`` and a
    config.json): the config's fields and kind, the weights inspected, never unpickled."""
    from tui.metadata.safetensors import _config_fields, _read_json

    folder = Path(path)
    try:
        names = {e.name for e in os.scandir(folder) if e.is_file()}
    except OSError as exc:
        raise MetadataError(f"{folder}: cannot list folder ({exc.strerror or exc})") from exc
    files = _weight_names(folder, names)
    if not files:
        raise MetadataError(f"no PyTorch weights in {folder}")
    if len(files) > MAX_FOLDER_FILES:
        raise MetadataError(f"{folder}: {len(files)} weight files (limit {MAX_FOLDER_FILES})")
    fields: dict[str, Any] = {"extra": {}}
    kind: str | None = None
    details: dict[str, Any] = {}
    if "config.json" in names:
        config = _read_json(folder / "config.json")
        if not isinstance(config, dict):
            raise MetadataError(f"{folder / 'config.json'}: not a JSON object")
        fields = _config_fields(config)
        kind = config_kind(config, names)
    elif "adapter_config.json" in names:
        adapter = _read_json(folder / "adapter_config.json")
        found = adapter_kind(adapter) if isinstance(adapter, dict) else None
        if found is not None:
            kind, details = found
    summaries = [inspect_pickle_file(folder / name) for name in files]
    return _metadata(summaries, kind=kind, details=details, fields=fields, files=files)
