"""Engine names, staleness sidecars, the engine and timing caches and the manifest's engine record
(edgekd.device.tensorrt.engine_cache); no TensorRT needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgekd.core.manifest import sha256_file
from edgekd.device.tensorrt import engine_cache
from edgekd.device.tensorrt.engine_cache import (
    ENGINE_CACHE_ENV,
    cached_engine_path,
    calibration_digest,
    default_engine_cache,
    engine_cache_key,
    engine_is_fresh,
    engine_meta,
    engine_name,
    engine_record,
    engine_source,
    read_sidecar,
    sidecar_path,
    timing_cache_path,
    write_engine_sidecar,
)
from edgekd.device.user_cache import calibration_cache
from edgekd.device.tensorrt.settings import build_settings
from tests.helpers import put_engine


SHA = "0123456789abcdef" * 4


META = {"onnx_sha256": SHA, "precision": "int8", "tensorrt": "10.3.0", "device": "jetson-orin-nano-developer-kit",
        "dla_core": None}


# -- pure helpers ------------------------------------------------------------------------------------------------
def test_engine_name_contents():
    name = engine_name(SHA, "int8", "10.3.0", "orin-nano-gpu")
    assert name == "full.0123456789ab.int8.trt10.3.0.orin-nano-gpu.engine"
    assert engine_name(SHA, "fp16", "8.6.2.3", "orin-nx-dla1", stem="segment0") == \
        "segment0.0123456789ab.fp16.trt8.6.2.orin-nx-dla1.engine"


def test_engine_name_is_sanitised():
    name = engine_name(SHA.upper(), "FP16/../x", "10.3.0+cuda12.6", "NVIDIA Jetson AGX Orin / 64GB\x00",
                       stem="../my model")
    assert "/" not in name and " " not in name and "\x00" not in name and ".." not in name
    assert name.endswith(".engine")
    assert name.split(".")[1] == "0123456789ab"
    assert "jetson-agx-orin-64gb" in name
    assert name.startswith("my-model.")
    assert ".trt10.3.0." in name
    assert ".trtunknown." in engine_name(SHA, "fp16", "", "x")


def fake_engine(tmp_path: Path, meta: dict | None = None, *, sidecar: bool = True) -> Path:
    engine = tmp_path / engine_name(SHA, "int8", "10.3.0", "orin-nano-gpu")
    engine.write_bytes(b"not really an engine")
    if sidecar:
        write_engine_sidecar(engine, META if meta is None else meta)
    return engine


def test_engine_is_fresh_when_sidecar_matches(tmp_path):
    engine = fake_engine(tmp_path)
    assert sidecar_path(engine) == engine.with_name(engine.name + ".json")
    assert json.loads(sidecar_path(engine).read_text())["engine_sha256"] == sha256_file(engine)
    assert engine_is_fresh(engine, META)
    assert engine_is_fresh(str(engine), dict(META))


def test_engine_is_stale_without_sidecar_or_engine(tmp_path):
    engine = fake_engine(tmp_path, sidecar=False)
    assert not engine_is_fresh(engine, META)
    assert not engine_is_fresh(tmp_path / "absent.engine", META)
    engine.write_bytes(b"")
    write_engine_sidecar(engine, META)
    assert not engine_is_fresh(engine, META)  # an empty engine is never fresh


@pytest.mark.parametrize("key, value", [
    ("onnx_sha256", "f" * 64), ("precision", "fp16"), ("tensorrt", "10.3.1"), ("device", "jetson-agx-orin"),
    ("dla_core", 0),
])
def test_engine_is_stale_on_any_mismatch(tmp_path, key, value):
    engine = fake_engine(tmp_path)
    assert not engine_is_fresh(engine, {**META, key: value})


def test_engine_is_stale_on_extra_or_missing_keys(tmp_path):
    engine = fake_engine(tmp_path)
    assert not engine_is_fresh(engine, {**META, "batch": [1, 1, 8]})
    assert not engine_is_fresh(engine, {k: v for k, v in META.items() if k != "dla_core"})


def test_engine_is_stale_when_engine_changed_after_sidecar(tmp_path):
    engine = fake_engine(tmp_path)
    engine.write_bytes(b"a different engine")
    assert not engine_is_fresh(engine, META)


def test_engine_is_stale_on_corrupt_sidecar(tmp_path):
    engine = fake_engine(tmp_path)
    sidecar_path(engine).write_text("{not json")
    assert not engine_is_fresh(engine, META)
    sidecar_path(engine).write_text("[1, 2]")
    assert not engine_is_fresh(engine, META)


def test_sidecar_compares_as_json(tmp_path):
    meta = {**META, "batch": (1, 2, 4)}  # a tuple is stored as a list; still the same build
    engine = fake_engine(tmp_path, meta)
    assert engine_is_fresh(engine, meta)
    assert engine_is_fresh(engine, {**META, "batch": [1, 2, 4]})
    # a hand-written sidecar without engine_sha256 is judged on its metadata alone
    sidecar_path(engine).write_text(json.dumps(META))
    assert engine_is_fresh(engine, META)


# -- the engine cache --------------------------------------------------------------------------------------------
def test_default_engine_cache_location():
    home = Path("~").expanduser()
    assert default_engine_cache({}) == home / ".cache" / "edgekd" / "engines"
    assert default_engine_cache({"XDG_CACHE_HOME": "/x/cache"}) == Path("/x/cache/edgekd/engines")
    assert default_engine_cache({ENGINE_CACHE_ENV: "/fast/engines", "XDG_CACHE_HOME": "/x"}) == Path("/fast/engines")
    for off in ("", "off", "None", "0", "false"):
        assert default_engine_cache({ENGINE_CACHE_ENV: off}) is None
    # beside the calibration cache, under the one per-user root: $EDGEKD_CACHE moves both, and turns both off
    assert default_engine_cache({"EDGEKD_CACHE": "/c", "XDG_CACHE_HOME": "/x"}) == Path("/c/engines")
    assert default_engine_cache({"EDGEKD_CACHE": "/c"}).parent == calibration_cache({"EDGEKD_CACHE": "/c"}).parent
    assert default_engine_cache({"EDGEKD_CACHE": "off"}) is None
    assert default_engine_cache({"EDGEKD_CACHE": "off", ENGINE_CACHE_ENV: "/e"}) == Path("/e")  # its own wins


def meta_for(**changes) -> dict:
    """The sidecar fields of a typical Orin Nano int8 GPU build (engine_meta), with ``changes``."""
    fields = dict(onnx_sha256=SHA, precision="int8", trt_version="10.3.0", device="jetson-orin-nano-developer-kit",
                  sm="sm87", dla_core=None, input_name="image", input_shape_chw=(3, 16, 16), workspace_mib=1024,
                  settings=build_settings(10, "int8", dla=False, batch=(1, 1, 8)), calib_digest=None)
    fields.update(changes)
    return engine_meta(**fields)


@pytest.mark.parametrize("change", [
    dict(onnx_sha256="f" * 64), dict(precision="fp16"), dict(trt_version="10.3.0.26"), dict(trt_version="8.6.2"),
    dict(device="jetson-agx-orin-developer-kit"), dict(sm="sm72"), dict(dla_core=0), dict(input_name="feat0"),
    dict(input_shape_chw=(3, 32, 32)), dict(workspace_mib=2048), dict(l4t="35.4.1"),
    dict(settings=build_settings(10, "int8", dla=False, batch=(1, 1, 16))),  # batch range
    dict(settings=build_settings(10, "int8", dla=True, batch=(1, 1, 8))),  # flags (GPU_FALLBACK)
    dict(settings=build_settings(11, "int8", dla=False, batch=(1, 1, 8))),  # strong typing, no flags
    dict(settings=build_settings(8, "int8", dla=True, batch=(1, 1, 8)), calib_digest="a" * 64),  # implicit
])
def test_every_field_changes_the_engine_cache_key(change):
    assert engine_cache_key(meta_for(**change)) != engine_cache_key(meta_for())


def test_the_engine_cache_key_is_stable():
    base = meta_for()
    assert engine_cache_key(base) == engine_cache_key(json.loads(json.dumps(base)))  # tuples vs lists
    assert engine_cache_key(dict(reversed(list(base.items())))) == engine_cache_key(base)  # key order
    implicit = dict(settings=build_settings(8, "int8", dla=True, batch=(1, 1, 1)))
    assert engine_cache_key(meta_for(**implicit, calib_digest="a" * 64)) != \
        engine_cache_key(meta_for(**implicit, calib_digest="b" * 64))  # other calibration data, other engine
    assert cached_engine_path("/c", base) == Path("/c") / f"{engine_cache_key(base)}.engine"


def test_timing_cache_is_per_tensorrt_version_and_device(tmp_path):
    a = timing_cache_path(tmp_path, "10.3.0", "jetson-orin-nano-developer-kit", "sm87")
    assert a.parent == tmp_path / "timing" and a.name == "trt10.3.0.jetson-orin-nano-developer-kit-sm87.cache"
    assert a != timing_cache_path(tmp_path, "8.6.2", "jetson-orin-nano-developer-kit", "sm87")
    assert a != timing_cache_path(tmp_path, "10.3.0", "jetson-agx-orin-developer-kit", "sm87")
    assert "/" not in timing_cache_path(tmp_path, "10.3/../x", "a/b").name


def test_calibration_digest():
    x = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    assert calibration_digest([x, x]) == calibration_digest([x.copy(), x.copy()])
    assert calibration_digest([x]) != calibration_digest([x, x])
    assert calibration_digest([x]) != calibration_digest([x.reshape(1, 3, 4, 1)])
    assert calibration_digest([x]) != calibration_digest([x + 1])


def test_engine_source_decides_reuse(tmp_path):
    meta = meta_for()
    bundle, cached = tmp_path / "bundle" / "full.engine", cached_engine_path(tmp_path / "cache", meta)
    assert engine_source(bundle, cached, meta) == "build"
    put_engine(cached, meta)
    assert engine_source(bundle, cached, meta) == "cache"
    assert engine_source(bundle, None, meta) == "build"  # no cache: build
    put_engine(bundle, meta)
    assert engine_source(bundle, cached, meta) == "bundle"
    assert engine_source(bundle, cached, meta_for(precision="fp16")) == "build"  # another build
    bundle.unlink()
    cached.write_bytes(b"changed after its sidecar")  # stale: never loaded
    assert engine_source(bundle, cached, meta) == "build"


def test_sidecar_info_is_a_record_not_a_field(tmp_path):
    meta = meta_for()
    engine = put_engine(tmp_path / "e.engine", meta, info={"origin": "built", "gpu_fallback": []})
    assert engine_is_fresh(engine, meta)
    assert read_sidecar(engine)["info"] == {"origin": "built", "gpu_fallback": []}
    assert read_sidecar(tmp_path / "absent.engine") == {}


def test_link_or_copy(tmp_path, monkeypatch):
    src = tmp_path / "cache" / "a.engine"
    src.parent.mkdir()
    src.write_bytes(b"plan")
    how = engine_cache.link_or_copy(src, tmp_path / "out" / "b.engine")
    assert how == "hard-linked" and os.path.samefile(src, tmp_path / "out" / "b.engine")

    def no_links(*args):
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    assert engine_cache.link_or_copy(src, tmp_path / "out" / "c.engine") == "copied"
    assert (tmp_path / "out" / "c.engine").read_bytes() == b"plan"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.engine", "c.engine"]  # no temporaries


def test_engine_record_for_the_manifest(tmp_path):
    meta = meta_for(dla_core=0, settings=build_settings(10, "int8", dla=True, batch=(1, 1, 1)))
    fallback = [{"name": "topk", "type": "TOPK"}]
    engine = put_engine(tmp_path / "full.engine", meta,
                        info={"origin": "cache", "cache_key": "k", "gpu_fallback": fallback,
                              "engine_layers": [{"name": "conv0", "type": "CaskConvolution"}]})
    assert engine_record(engine) == {
        "file": "full.engine", "device": "dla0", "batch": [1, 1, 1], "precision": "int8", "tensorrt": "10.3.0",
        "typing": "weak", "origin": "cache", "cache_key": "k", "gpu_fallback": fallback,
        "engine_layers": [{"name": "conv0", "type": "CaskConvolution"}], "unverified": None}


def test_the_engine_cache_key_has_the_l4t_release_and_edgekd_version():
    from edgekd import __version__

    settings = build_settings(10, "int8", dla=True, batch=(1, 1, 1))
    common = dict(onnx_sha256=SHA, precision="int8", trt_version="8.5.2.2", device="jetson-agx-xavier", sm="sm72",
                  dla_core=0, input_name="image", input_shape_chw=(3, 8, 8), workspace_mib=512, settings=settings)
    a = engine_meta(**common, l4t="35.3.1")
    b = engine_meta(**common, l4t="35.4.1")  # JetPack 5.1.1 vs 5.1.2: same TensorRT 8.5.2, another DLA compiler
    assert a["l4t"] == "35.3.1" and a["edgekd"] == __version__
    assert engine_cache_key(a) != engine_cache_key(b)
    assert engine_cache_key(a) != engine_cache_key({**a, "edgekd": "0.0.1"})


def test_the_engine_cache_option():
    from edgekd.device.options import engine_cache_choice

    assert engine_cache_choice(None) is True
    assert engine_cache_choice("off") is False and engine_cache_choice(" NONE ") is False
    assert engine_cache_choice("~/e") == Path("~/e").expanduser()
