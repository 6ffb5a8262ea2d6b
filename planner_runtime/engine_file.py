"""Reading and writing engine files: the manifest, the checksums and the ``.plan`` container.

ONNX engines (``.onnx``) keep the manifest JSON in the model's metadata property
``planner_runtime.manifest``. Their checksum (``manifest.checksums.graph_sha256``) is the
sha256 of ``model.graph`` serialized deterministically: the weights and the operators,
not the metadata that holds the checksum itself.

TensorRT engines (``.plan``) are wrapped in a small container so they carry the same
manifest (a bare TensorRT plan has no place for it). Layout, all integers little-endian:

    offset  size  field
    0       8     magic  b"PRTPLAN\\x00"
    8       4     container version (uint32, currently 1)
    12      8     manifest length M (uint64)
    20      M     manifest JSON, UTF-8 (canonical, sorted keys)
    20+M    8     engine length E (uint64)
    28+M    E     serialized TensorRT engine (ICudaEngine.serialize())
    (end of file; trailing bytes are an error)

The manifest of a ``.plan`` adds ``checksums.plan_sha256`` (sha256 of the E engine bytes)
and a ``tensorrt`` block (version, fp16, device); ``checksums.graph_sha256`` stays the one
of the ONNX it was built from. Every read verifies lengths and checksums, so a truncated,
corrupt or foreign file is refused with an ``EngineError`` saying which.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner_runtime import manifest as mf
from planner_runtime.engine import EngineError

PLAN_MAGIC = b"PRTPLAN\x00"
PLAN_CONTAINER_VERSION = 1
_HEAD = struct.Struct("<8sIQ")
_LEN = struct.Struct("<Q")
ONNX_SUFFIXES = (".onnx",)
PLAN_SUFFIXES = (".plan", ".engine", ".trt")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def onnx_graph_sha256(model: Any) -> str:
    """Checksum of an ``onnx.ModelProto``'s graph (weights + ops), independent of metadata."""
    return sha256_hex(model.graph.SerializeToString(deterministic=True))


def engine_kind(path: str | Path) -> str:
    """"onnx" or "plan", from the suffix, or from the magic bytes for other names."""
    p = Path(path)
    suf = p.suffix.lower()
    if suf in ONNX_SUFFIXES:
        return "onnx"
    if suf in PLAN_SUFFIXES:
        return "plan"
    try:
        with p.open("rb") as f:
            head = f.read(len(PLAN_MAGIC))
    except OSError as exc:
        raise EngineError(f"cannot read engine {p}: {exc}") from exc
    if head == PLAN_MAGIC:
        return "plan"
    raise EngineError(f"unknown engine file type {p.name!r}: expected .onnx or .plan")


def _read_bytes(path: str | Path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise EngineError(f"engine file not found: {p}")
    return p.read_bytes()


# ---------------------------------------------------------------- ONNX

def load_onnx(path: str | Path, verify: bool = True) -> tuple[Any, mf.Manifest]:
    """Parse an ONNX engine; return (ModelProto, parsed manifest).

    Refuses a file that is not ONNX (or truncated), has no manifest, has an invalid or
    unknown-version manifest, or whose graph does not match its checksum.
    """
    import onnx  # onnx is a core dependency; imported here to keep `import` of this module light

    data = _read_bytes(path)
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError, sometimes RuntimeWarning-ish errors
        raise EngineError(f"{path}: not a readable ONNX model (corrupt or truncated): {exc}") from exc
    if len(model.graph.node) == 0:
        raise EngineError(f"{path}: ONNX model has an empty graph (corrupt or truncated file)")
    props = {p.key: p.value for p in model.metadata_props}
    if mf.ONNX_METADATA_KEY not in props:
        raise EngineError(
            f"{path}: missing engine metadata {mf.ONNX_METADATA_KEY!r}; export it with "
            "`planner-runtime export` (a bare ONNX file cannot be served)"
        )
    try:
        manifest = mf.from_json(props[mf.ONNX_METADATA_KEY])
    except mf.ManifestError as exc:
        raise EngineError(f"{path}: {exc}") from exc
    if verify:
        got = onnx_graph_sha256(model)
        want = manifest.checksums.graph_sha256
        if got != want:
            raise EngineError(
                f"{path}: graph checksum mismatch (manifest {want[:16]}..., file {got[:16]}...): "
                "the graph was modified or corrupted after export"
            )
    return model, manifest


def _plain_copy(manifest: mf.Manifest | Mapping[str, Any]) -> dict[str, Any]:
    """A mutable deep copy of a manifest being written (and proof a dict is plain JSON)."""
    if isinstance(manifest, mf.Manifest):
        return manifest.to_dict()
    out: dict[str, Any] = json.loads(json.dumps(manifest))
    return out


def attach_manifest(model: Any, manifest: mf.Manifest | Mapping[str, Any]) -> mf.Manifest:
    """Set ``checksums.graph_sha256`` from the graph, parse, store in metadata_props."""
    d = _plain_copy(manifest)
    d.setdefault("checksums", {})["graph_sha256"] = onnx_graph_sha256(model)
    parsed = mf.parse(d)
    keep = [p for p in model.metadata_props if p.key != mf.ONNX_METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key = mf.ONNX_METADATA_KEY
    entry.value = parsed.to_json()
    return parsed


# ---------------------------------------------------------------- .plan container

def _pack(manifest: mf.Manifest | Mapping[str, Any], engine_bytes: bytes) -> tuple[mf.Manifest, bytes]:
    d = _plain_copy(manifest)
    d.setdefault("checksums", {})["plan_sha256"] = sha256_hex(engine_bytes)
    parsed = mf.parse(d)
    js = parsed.to_json().encode("utf-8")
    return parsed, b"".join([
        _HEAD.pack(PLAN_MAGIC, PLAN_CONTAINER_VERSION, len(js)), js,
        _LEN.pack(len(engine_bytes)), engine_bytes,
    ])


def pack_plan(manifest: mf.Manifest | Mapping[str, Any], engine_bytes: bytes) -> bytes:
    """Container bytes for a TensorRT engine; sets ``checksums.plan_sha256``."""
    return _pack(manifest, engine_bytes)[1]


def write_plan(path: str | Path, manifest: mf.Manifest | Mapping[str, Any], engine_bytes: bytes) -> mf.Manifest:
    """Write a .plan container; return the manifest it holds."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    parsed, data = _pack(manifest, engine_bytes)
    tmp.write_bytes(data)
    tmp.replace(p)  # never leave a half-written engine under the final name
    return parsed


def unpack_plan(data: bytes, name: str = "<plan>", verify: bool = True) -> tuple[mf.Manifest, bytes]:
    """Split container bytes into (parsed manifest, engine bytes)."""
    if len(data) < _HEAD.size:
        raise EngineError(f"{name}: file too short for a planner-runtime .plan ({len(data)} bytes): truncated")
    magic, version, mlen = _HEAD.unpack_from(data, 0)
    if magic != PLAN_MAGIC:
        raise EngineError(
            f"{name}: not a planner-runtime .plan container (bad magic {magic!r}); a bare TensorRT "
            "engine has no manifest: build it with `planner-runtime build-engine`"
        )
    if version != PLAN_CONTAINER_VERSION:
        raise EngineError(f"{name}: unknown .plan container version {version}; this runtime reads {PLAN_CONTAINER_VERSION}")
    pos = _HEAD.size
    if pos + mlen + _LEN.size > len(data):
        raise EngineError(f"{name}: truncated .plan (manifest of {mlen} bytes does not fit)")
    try:
        manifest = mf.from_json(data[pos:pos + mlen].decode("utf-8"))
    except (mf.ManifestError, UnicodeDecodeError) as exc:
        raise EngineError(f"{name}: {exc}") from exc
    pos += mlen
    (elen,) = _LEN.unpack_from(data, pos)
    pos += _LEN.size
    if pos + elen != len(data):
        raise EngineError(
            f"{name}: .plan size mismatch: engine should be {elen} bytes, file holds {len(data) - pos} "
            "(truncated or trailing garbage)"
        )
    engine = data[pos:]
    if verify:
        want = manifest.checksums.plan_sha256
        if want is None:
            raise EngineError(f"{name}: manifest is missing field 'checksums.plan_sha256'")
        if sha256_hex(engine) != want:
            raise EngineError(f"{name}: TensorRT engine checksum mismatch: the file is corrupt")
    return manifest, engine


def read_plan(path: str | Path, verify: bool = True) -> tuple[mf.Manifest, bytes]:
    return unpack_plan(_read_bytes(path), str(path), verify)


def read_manifest(path: str | Path, verify: bool = True) -> mf.Manifest:
    """The parsed manifest of any engine file (checksums verified unless verify=False)."""
    if engine_kind(path) == "onnx":
        return load_onnx(path, verify)[1]
    return read_plan(path, verify)[0]
