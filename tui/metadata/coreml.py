"""Core ML metadata: an ``.mlmodel`` file (a protobuf ``CoreML.Specification.Model``) or an
``.mlpackage`` folder (``Manifest.json`` naming its ``model.mlmodel``, weights beside it).

The specification version, the description's inputs, outputs and metadata, and which model
type the file holds are read with the bounded protobuf walker; the model itself (a neural
network's inline weights, an ML program) is skipped. An ML program's weights are the files
of the package's ``weights/`` folder: their size is the model's weight bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from tui.errors import MetadataError
from tui.metadata.binary import ProtoReader
from tui.metadata.files import open_regular
from tui.metadata.kinds import io_kind
from tui.metadata.types import JSON_HOOKS, ModelMetadata, sanitize

__all__ = ["read_coreml"]

MAX_SPEC_BYTES = 2 << 30
MAX_MANIFEST_BYTES = 1 << 20
MAX_KEPT_NAMES = 64
MAX_USER_METADATA = 64
MAX_WEIGHT_FILES = 1000
MODEL_TYPES: dict[int, str] = {
    200: "pipelineClassifier", 201: "pipelineRegressor", 202: "pipeline",
    300: "glmRegressor", 301: "supportVectorRegressor", 302: "treeEnsembleRegressor",
    303: "neuralNetworkRegressor", 304: "bayesianProbitRegressor", 400: "glmClassifier",
    401: "supportVectorClassifier", 402: "treeEnsembleClassifier",
    403: "neuralNetworkClassifier", 404: "kNearestNeighborsClassifier", 500: "neuralNetwork",
    501: "itemSimilarityRecommender", 502: "mlProgram", 555: "customModel", 556: "linkedModel",
    560: "classConfidenceThresholding", 600: "oneHotEncoder", 601: "imputer",
    602: "featureVectorizer", 603: "dictVectorizer", 604: "scaler", 606: "categoricalMapping",
    607: "normalizer", 609: "arrayFeatureExtractor", 610: "nonMaximumSuppression",
    900: "identity", 2000: "textClassifier", 2001: "wordTagger", 2002: "visionFeaturePrint",
    2003: "soundAnalysisPreprocessing", 2004: "gazetteer", 2005: "wordEmbedding",
    2006: "audioFeaturePrint", 3000: "serializedModel",
}
_DEFAULT_SPEC = "Data/com.apple.CoreML/model.mlmodel"


def _features(r: ProtoReader, end: int) -> str | None:
    """A FeatureDescription's name."""
    name = None
    for field, wire in r.walk(end):
        if field == 1:
            name = r.value_str(wire, end, 256)
    return name


def _metadata(r: ProtoReader, end: int, into: dict[str, Any]) -> None:
    user: dict[str, str] = {}
    for field, wire in r.walk(end):
        if field in (1, 2, 3, 4):
            key = {1: "description", 2: "version", 3: "author", 4: "license"}[field]
            value = r.value_str(wire, end, 1024)
            if value:
                into[key] = value
        elif field == 100:
            e_end = r.message(wire, end)
            if e_end is None:
                continue
            key = value = None
            for f2, w2 in r.walk(e_end):
                if f2 == 1:
                    key = r.value_str(w2, e_end, 256)
                elif f2 == 2:
                    value = r.value_str(w2, e_end, 1024)
            if key and value is not None and len(user) < MAX_USER_METADATA:
                user[key] = value
    if user:
        into["user_metadata"] = user


def _read_spec(path: Path) -> dict[str, Any]:
    label = os.fspath(path)
    try:
        with open_regular(path) as fp:
            size = os.fstat(fp.fileno()).st_size
            if size == 0:
                raise MetadataError(f"{label}: empty file, not a Core ML model")
            if size > MAX_SPEC_BYTES:
                raise MetadataError(f"{label}: {size} bytes, more than protobuf's 2 GiB limit; "
                                    "not a Core ML model")
            r = ProtoReader(fp, size, label, "Core ML model")
            info: dict[str, Any] = {"inputs": [], "outputs": [], "n_inputs": 0, "n_outputs": 0}
            for field, wire in r.walk(size):
                if field == 1:
                    info["specification_version"] = r.value_int(wire, size)
                elif field == 2:
                    d_end = r.message(wire, size)
                    if d_end is None:
                        continue
                    for f2, w2 in r.walk(d_end):
                        if f2 in (1, 10):
                            f_end = r.message(w2, d_end)
                            if f_end is None:
                                continue
                            key = "inputs" if f2 == 1 else "outputs"
                            name = _features(r, f_end)
                            info["n_" + key] += 1
                            if len(info[key]) < MAX_KEPT_NAMES:
                                info[key].append(name)
                        elif f2 == 100:
                            m_end = r.message(w2, d_end)
                            if m_end is not None:
                                _metadata(r, m_end, info)
                elif field == 10:
                    info["updatable"] = bool(r.value_int(wire, size))
                elif field >= 200:
                    if "model_type" in info:
                        raise r.fail("not a valid Core ML model (two model types)")
                    info["model_type"] = MODEL_TYPES.get(field, f"type {field}")
    except OSError as exc:
        raise MetadataError(f"{label}: cannot read ({exc.strerror or exc})") from exc
    if "specification_version" not in info or "model_type" not in info:
        raise MetadataError(f"{label}: not a Core ML model (no specification version or model "
                            "type)")
    return info


def _package_spec(package: Path) -> tuple[Path, dict[str, Any]]:
    """The ``.mlmodel`` of a package (as its Manifest.json names it) and manifest details."""
    manifest = package / "Manifest.json"
    notes: dict[str, Any] = {}
    spec_rel = _DEFAULT_SPEC
    if manifest.exists():
        try:
            with open_regular(manifest) as fp:
                raw = fp.read(MAX_MANIFEST_BYTES + 1)
        except OSError as exc:
            raise MetadataError(f"{manifest}: cannot read ({exc.strerror or exc})") from exc
        if len(raw) > MAX_MANIFEST_BYTES:
            raise MetadataError(f"{manifest}: larger than 1 MiB")
        try:
            data = json.loads(raw, **JSON_HOOKS)
        except (ValueError, RecursionError) as exc:
            raise MetadataError(f"{manifest}: not valid JSON ({exc})") from exc
        entries = data.get("itemInfoEntries") if isinstance(data, dict) else None
        root = data.get("rootModelIdentifier") if isinstance(data, dict) else None
        entry = entries.get(root) if isinstance(entries, dict) and isinstance(root, str) else None
        rel = entry.get("path") if isinstance(entry, dict) else None
        if isinstance(rel, str):
            parts = PurePosixPath(rel).parts
            if rel.startswith("/") or ".." in parts or "\\" in rel or not parts:
                raise MetadataError(f"{manifest}: the model path {rel[:100]!r} leaves the "
                                    "package")
            spec_rel = "Data/" + rel
        if isinstance(entry, dict):
            for key in ("author", "description"):
                if isinstance(entry.get(key), str):
                    notes[f"package_{key}"] = entry[key][:256]
    return package / spec_rel, notes


def _weights_bytes(folder: Path) -> tuple[int, int]:
    """Bytes and count of the regular files under an ML program's ``weights/`` folder."""
    total = count = 0
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if count >= MAX_WEIGHT_FILES:
                    break
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
                    count += 1
    except OSError:
        return 0, 0
    return total, count


def read_coreml(path: str | os.PathLike[str]) -> ModelMetadata:
    """Metadata of a Core ML ``.mlmodel`` file or ``.mlpackage`` folder. Raises
    :class:`MetadataError` (one line) for anything that is not a sound model."""
    path = Path(path)
    notes: dict[str, Any] = {}
    weight_bytes = None
    if path.is_dir():
        spec_path, notes = _package_spec(path)
        if not spec_path.exists():
            raise MetadataError(f"{path}: a Core ML package without its model "
                                f"({spec_path.relative_to(path)})")
        weight_bytes, n_files = _weights_bytes(spec_path.parent / "weights")
        notes["weight_files"] = n_files
        notes["container"] = "mlpackage"
    else:
        spec_path = path
        notes["container"] = "mlmodel"
    info = _read_spec(spec_path)
    if weight_bytes is None or not weight_bytes:
        weight_bytes = spec_path.stat().st_size
    inputs = [n for n in info["inputs"] if n]
    outputs = [n for n in info["outputs"] if n]
    extra: dict[str, Any] = {
        **notes,
        "specification_version": info.get("specification_version"),
        "model_type": info.get("model_type"),
        "inputs": [{"name": n} for n in info["inputs"]],
        "outputs": [{"name": n} for n in info["outputs"]],
        "n_inputs": info["n_inputs"],
        "n_outputs": info["n_outputs"],
    }
    for key in ("version", "author", "license", "description", "user_metadata", "updatable"):
        if key in info:
            extra[key] = info[key]
    meta = ModelMetadata(
        format="coreml",
        name=path.name.rsplit(".", 1)[0],
        tensor_bytes=weight_bytes,
        kind=io_kind(inputs, outputs),
        extra={k: v for k, v in extra.items() if v is not None},
    )
    return sanitize(meta)
