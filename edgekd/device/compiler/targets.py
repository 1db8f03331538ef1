"""Device targets: what a device can build and run (backend, precisions, workspace, DLA, batch range).

One YAML file per device ships in ``edgekd/targets``; a user may also pass the path of their own file::

    name: orin-nano
    description: Jetson Orin Nano, JetPack 6 (TensorRT 8.6/10)
    backend: tensorrt            # or onnxruntime
    precisions: [fp32, fp16, int8]
    default_precision: int8
    workspace_mib: 1024
    dla_cores: 0
    batch: {min: 1, opt: 1, max: 8}
    threads: null                # onnxruntime threads; null = all cores

Every key is required and no other key is allowed, so a typo is an error rather than a silently ignored option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edgekd.core.errors import ConfigError
from edgekd.core.manifest import PRECISIONS, RUNNER_BACKENDS
from edgekd.device.options import OPTION_BOUNDS, option_problem

_KEYS = ("name", "description", "backend", "precisions", "default_precision", "workspace_mib", "dla_cores",
         "batch", "threads")
_BATCH_KEYS = ("min", "opt", "max")


@dataclass(frozen=True)
class DeviceTarget:
    name: str
    description: str
    backend: str
    precisions: tuple[str, ...]
    default_precision: str
    workspace_mib: int
    dla_cores: int
    batch_min: int
    batch_opt: int
    batch_max: int
    threads: int | None
    source: Path

    def check_precision(self, precision: str) -> None:
        """Raise :class:`ConfigError` unless this device can build ``precision``."""
        if precision in self.precisions:
            return
        supported = ", ".join(sorted(self.precisions))
        if precision not in PRECISIONS:
            why = f"unknown precision; choose one of {', '.join(PRECISIONS)}"
        else:
            device = self.description.split(". ")[0].rstrip(".")
            why = f"choose --precision {self.default_precision} or a target for another device ({device})"
        raise ConfigError(f"target {self.name} cannot build {precision} (supports {supported}): {why}")

    @property
    def batch(self) -> tuple[int, int, int]:
        return (self.batch_min, self.batch_opt, self.batch_max)


def _shipped() -> dict[str, Any]:
    """name → path of every YAML file shipped in ``edgekd/targets`` (a plain folder of the installed package)."""
    import edgekd.targets

    root = Path(edgekd.targets.__file__).parent
    return {entry.name[: -len(".yaml")]: entry for entry in root.iterdir() if entry.name.endswith(".yaml")}


def list_targets() -> list[str]:
    """Names of the shipped device targets, sorted."""
    return sorted(_shipped())


def load_target(name_or_file: str | Path) -> DeviceTarget:
    """A shipped target by name (``orin-nano``) or a target YAML file by path."""
    text_path = str(name_or_file)
    shipped = _shipped()
    if text_path in shipped:
        resource = shipped[text_path]
        return _parse(resource.read_text(encoding="utf-8"), resource)
    path = Path(text_path)
    if path.suffix in (".yaml", ".yml") or path.is_file() or len(path.parts) > 1:
        if not path.is_file():
            raise ConfigError(f"device target file not found: {path}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read device target {path}: {exc}") from None
        return _parse(text, path)
    raise ConfigError(f"unknown device target {text_path!r}; choose one of {', '.join(sorted(shipped))} "
                      "or give the path of a target YAML file")


def _int(data: dict[str, Any], key: str, fail, *, minimum: int, where: str | None = None) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(where or key, f"must be an integer >= {minimum}, got {value!r}")
    return value


def _parse(text: str, source: Path) -> DeviceTarget:
    def fail(field: str, message: str):
        raise ConfigError(f"device target {source}: {field}: {message}")

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"device target {source} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:  # nested thousands deep: no target is
        raise ConfigError(f"device target {source} is not a device target (YAML nested too deeply)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"device target {source}: must be a mapping of {', '.join(_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if unknown:
        fail(unknown[0], f"unknown key (allowed: {', '.join(_KEYS)})")
    missing = [k for k in _KEYS if k not in data]
    if missing:
        fail(missing[0], "missing" + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else ""))

    for key in ("name", "description"):
        if not isinstance(data[key], str) or not data[key].strip():
            fail(key, f"must be a non-empty string, got {data[key]!r}")
    if data["backend"] not in RUNNER_BACKENDS:
        fail("backend", f"must be one of {', '.join(RUNNER_BACKENDS)}, got {data['backend']!r}")

    precisions = data["precisions"]
    if not isinstance(precisions, list) or not precisions:
        fail("precisions", f"must be a non-empty list drawn from {', '.join(PRECISIONS)}, got {precisions!r}")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        fail("precisions", f"unknown precision {bad[0]!r} (allowed: {', '.join(PRECISIONS)})")
    if len(set(precisions)) != len(precisions):
        fail("precisions", f"lists a precision twice: {precisions}")
    if data["default_precision"] not in precisions:
        fail("default_precision", f"{data['default_precision']!r} is not in precisions [{', '.join(precisions)}]")

    workspace = _int(data, "workspace_mib", fail, minimum=0)
    dla = _int(data, "dla_cores", fail, minimum=0)
    if dla and data["backend"] != "tensorrt":
        fail("dla_cores", f"DLA cores are only used by the tensorrt backend, not {data['backend']}")

    batch = data["batch"]
    if not isinstance(batch, dict) or sorted(map(str, batch)) != sorted(_BATCH_KEYS):
        fail("batch", f"must be a mapping with exactly min, opt, max, got {batch!r}")
    b_min, b_opt, b_max = (_int(batch, k, fail, minimum=1, where=f"batch.{k}") for k in _BATCH_KEYS)
    if not b_min <= b_opt <= b_max:
        fail("batch", f"needs min <= opt <= max, got min={b_min} opt={b_opt} max={b_max}")

    threads = data["threads"]
    if threads is not None:
        threads = _int(data, "threads", fail, minimum=1)
        if option_problem("--threads", threads):  # the one bound of a thread count (--threads, EDGEKD_THREADS)
            fail("threads", f"must be at most {OPTION_BOUNDS['--threads'].high:g}, got {threads}")

    return DeviceTarget(name=data["name"].strip(), description=" ".join(data["description"].split()),
                         backend=data["backend"], precisions=tuple(precisions),
                         default_precision=data["default_precision"], workspace_mib=workspace, dla_cores=dla,
                         batch_min=b_min, batch_opt=b_opt, batch_max=b_max, threads=threads, source=source)


__all__ = ["DeviceTarget", "list_targets", "load_target"]
