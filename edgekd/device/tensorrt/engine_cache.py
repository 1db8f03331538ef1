"""Engine files and what they were built from: names, staleness sidecars, the per-user engine cache, the timing
cache, and the manifest's record of an engine.

An engine only runs on the TensorRT version and the GPU (or DLA core) that built it, so every engine is written
with a sidecar ``<engine>.json`` recording what it was built from (ONNX sha256, precision, TensorRT version,
device and its SM, L4T release, DLA core, workspace, batch range, input shape, builder settings: :func:`engine_meta`).
A later build with the same inputs reuses it; any difference, a missing sidecar or an engine that no longer matches
the sha256 in its sidecar, means rebuild (:func:`engine_is_fresh`). A stale engine is never loaded.

Engine cache: every engine built is also kept in a per-user cache (:func:`default_engine_cache`:
``$EDGEKD_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/edgekd/engines``, else ``~/.cache/edgekd/engines``), named by the
sha256 of its sidecar fields (:func:`engine_cache_key`). A rebuild of the same graph for the same device hard-links
(or copies) the cached engine into the new bundle after the same staleness check. The TensorRT timing cache lives
there too, one per TensorRT version and device (:func:`timing_cache_path`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgekd.core.atomic import atomic_write_json
from edgekd.core.manifest import sha256_file
from edgekd.device.machine import sanitize_device
from edgekd.device.tensorrt.settings import BuildSettings
from edgekd.device.user_cache import cache_off, user_cache


def engine_name(onnx_sha: str, precision: str, trt_version: str, device: str, *, stem: str = "full") -> str:
    """File name of an engine, in the spirit of jetson-inference's engine cache names, e.g.
    ``full.0123456789ab.int8.trt10.3.0.orin-nano-gpu.engine``. ``device`` is the device token plus the target
    (``-gpu`` or ``-dla0``); every part is sanitised so the name is safe on any file system."""
    sha = re.sub(r"[^0-9a-f]", "", onnx_sha.lower())[:12] or "nohash"
    prec = re.sub(r"[^a-z0-9]", "", precision.lower()) or "unknown"
    match = re.match(r"\d+(?:\.\d+){0,2}", trt_version.strip())  # major.minor.patch of e.g. "10.3.0.26"
    version = match.group(0) if match else "unknown"
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "model"
    return f"{stem}.{sha}.{prec}.trt{version}.{sanitize_device(device)}.engine"


def sidecar_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def engine_is_fresh(engine_path: str | Path, meta_expected: dict) -> bool:
    """True only if the engine exists, its sidecar records exactly ``meta_expected``, and (when the sidecar has
    ``engine_sha256``) the engine still matches it. Anything else is stale: rebuild, never load. The sidecar's
    ``info`` (what the build found: GPU fallback, engine layers, origin) is a record, not part of the comparison."""
    engine_path = Path(engine_path)
    side = sidecar_path(engine_path)
    try:
        if not engine_path.is_file() or engine_path.stat().st_size == 0 or not side.is_file():
            return False
        recorded = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict):
        return False
    digest = recorded.pop("engine_sha256", None)
    recorded.pop("info", None)
    if recorded != json.loads(json.dumps(meta_expected)):  # compare as JSON would store it (tuples → lists)
        return False
    return digest is None or digest == sha256_file(engine_path)


def write_engine_sidecar(engine_path: str | Path, meta: dict, info: dict | None = None) -> Path:
    """Write ``<engine>.json``: ``meta`` plus the engine's sha256 and, when given, ``info`` (atomically, after the
    engine itself)."""
    side = sidecar_path(engine_path)
    data: dict[str, Any] = {**meta, "engine_sha256": sha256_file(engine_path)}
    if info is not None:
        data["info"] = info
    atomic_write_json(side, data)
    return side


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar of ``engine_path`` as written by :func:`write_engine_sidecar` ({} when missing or unreadable)."""
    try:
        data = json.loads(sidecar_path(engine_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


ENGINES = "engines"  # the engine cache's folder under the per-user cache root
ENGINE_CACHE_ENV = "EDGEKD_ENGINE_CACHE"  # a folder, or off/none/0/"" to disable the cache


def default_engine_cache(environ: Mapping[str, str] | None = None) -> Path | None:
    """The per-user engine cache folder: ``$EDGEKD_ENGINE_CACHE`` (off/none/0/empty: no cache), else ``engines``
    under the per-user cache root (:func:`edgekd.device.user_cache.cache_root`: ``$EDGEKD_CACHE``, else
    ``$XDG_CACHE_HOME/edgekd``, else ``~/.cache/edgekd``), beside the calibration cache."""
    env = os.environ if environ is None else environ
    value = env.get(ENGINE_CACHE_ENV)
    if value is not None:
        return None if cache_off(value) else Path(value).expanduser()
    return user_cache(ENGINES, env)


def engine_cache_key(meta: Mapping[str, Any]) -> str:
    """sha256 of the sidecar fields (canonical JSON): graph, precision, TensorRT version, device and SM, L4T release,
    edgekd version, DLA core, workspace, batch range, input, builder settings. Any difference is another engine."""
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def cached_engine_path(cache_dir: str | Path, meta: Mapping[str, Any]) -> Path:
    return Path(cache_dir) / f"{engine_cache_key(meta)}.engine"


def timing_cache_path(cache_dir: str | Path, trt_version: str, device: str, sm: str = "") -> Path:
    """The timing cache for one TensorRT version and device, inside the engine cache: ``timing/<version>.<device>``.
    TensorRT also checks it (``ignore_mismatch=False``) and starts a new one when it does not fit."""
    version = re.sub(r"[^0-9A-Za-z.]+", "-", str(trt_version)).strip("-.") or "unknown"
    where = sanitize_device(f"{device}-{sm}" if sm else device)
    return Path(cache_dir) / "timing" / f"trt{version}.{where}.cache"


def engine_meta(*, onnx_sha256: str, precision: str, trt_version: str, device: str, sm: str, dla_core: int | None,
                input_name: str, input_shape_chw: Iterable[int], workspace_mib: int, settings: BuildSettings,
                calib_digest: str | None = None, l4t: str | None = None) -> dict[str, Any]:
    """The sidecar fields of an engine: everything it was built from. Equal fields, equal engine: the staleness
    check compares them and the engine cache key hashes them (an implicitly calibrated engine also depends on its
    calibration data, ``calib_digest``). ``l4t`` is the Jetson's L4T release
    (:func:`edgekd.device.machine.l4t_release`; None elsewhere): JetPack updates change the DLA compiler and
    libraries under an unchanged TensorRT version (5.1.x all ship 8.5.2).
    edgekd's own version is part of it too, so a fixed edgekd never reuses an engine an older one built."""
    calibration = settings.calibration
    if calibration == "implicit":
        calibration = f"implicit:{calib_digest}" if calib_digest else "implicit"
    from edgekd import __version__

    return {
        "onnx_sha256": onnx_sha256, "precision": precision, "tensorrt": trt_version, "device": device, "sm": sm,
        "l4t": l4t, "edgekd": __version__,
        "dla_core": dla_core, "input": input_name, "input_shape": [int(d) for d in input_shape_chw],
        "batch": list(settings.batch), "workspace_mib": int(workspace_mib),
        "settings": {"typing": settings.typing, "flags": list(settings.flags), "profiling": "detailed",
                     "calibration": calibration},
    }


def engine_source(bundle_engine: Path, cached_engine: Path | None, meta: dict) -> str:
    """Where this build's engine comes from: ``"bundle"`` (a fresh engine is already there), ``"cache"`` (a fresh
    engine in the engine cache) or ``"build"``. Both reuses pass :func:`engine_is_fresh`; a stale one never does."""
    if engine_is_fresh(bundle_engine, meta):
        return "bundle"
    if cached_engine is not None and engine_is_fresh(cached_engine, meta):
        return "cache"
    return "build"


def calibration_digest(batches: Iterable[np.ndarray]) -> str:
    """sha256 of calibration batches (shape, dtype, bytes): an implicitly calibrated engine depends on its data."""
    h = hashlib.sha256()
    for batch in batches:
        x = np.ascontiguousarray(batch)
        h.update(f"{x.shape}{x.dtype.str}".encode())
        h.update(x.tobytes())
    return h.hexdigest()


def link_or_copy(src: Path, dest: Path) -> str:
    """Put ``src`` at ``dest`` atomically: a hard link when the file system allows it, else a copy. Returns which."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        try:
            os.link(src, tmp)
            how = "hard-linked"
        except OSError:
            shutil.copyfile(src, tmp)
            how = "copied"
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return how


def engine_record(engine_path: str | Path) -> dict[str, Any]:
    """What the manifest records about a built engine (``build.engines``), from its sidecar: file, device, batch,
    precision, TensorRT version, typing, origin (built here or taken from the engine cache), cache key, the layers
    that fall back to the GPU on a DLA core, and the engine's layers."""
    side = read_sidecar(engine_path)
    info = side.get("info") if isinstance(side.get("info"), dict) else {}
    dla_core = side.get("dla_core")
    return {
        "file": Path(engine_path).name,
        "device": "gpu" if dla_core is None else f"dla{dla_core}",
        "batch": side.get("batch"),
        "precision": side.get("precision"),
        "tensorrt": side.get("tensorrt"),
        "typing": (side.get("settings") or {}).get("typing"),
        "origin": info.get("origin"),
        "cache_key": info.get("cache_key"),
        "gpu_fallback": info.get("gpu_fallback"),
        "engine_layers": info.get("engine_layers"),
        "unverified": info.get("unverified"),
    }


__all__ = ["ENGINE_CACHE_ENV", "cached_engine_path", "calibration_digest", "default_engine_cache",
           "engine_cache_key", "engine_is_fresh", "engine_meta", "engine_name", "engine_record", "engine_source",
           "link_or_copy", "read_sidecar", "sidecar_path", "timing_cache_path", "write_engine_sidecar"]
