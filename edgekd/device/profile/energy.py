"""Energy per inference from the INA3221 power monitors that Jetson boards expose in sysfs.

Two layouts are supported:

* JetPack 5/6 (hwmon driver ``ina3221``)::

      /sys/bus/i2c/drivers/ina3221/<addr>/hwmon/hwmon*/in{N}_label    rail name (VDD_IN, VDD_SOC, ...)
                                                       in{N}_input    bus voltage, mV
                                                       curr{N}_input  current, mA

* JetPack 4 (IIO driver ``ina3221x``)::

      /sys/bus/i2c/drivers/ina3221x/<addr>/iio:device*/rail_name_{N}
                                                       in_power{N}_input    power, mW
                                                       in_voltage{N}_input  voltage, mV
                                                       in_current{N}_input  current, mA

Where no rail can be found the energy is reported as :data:`NOT_AVAILABLE`; nothing is ever guessed.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

NOT_AVAILABLE = "not available"

_HWMON_LABEL = re.compile(r"^in(\d+)_label$")
_IIO_RAIL = re.compile(r"^rail_name_(\d+)$")


def _read_float(path: Path) -> float:
    return float(path.read_text().strip().strip("\x00"))


@dataclass(frozen=True)
class Rail:
    """One power rail. ``power_path`` alone gives mW directly; otherwise mW = mV * mA / 1000."""

    name: str
    voltage_path: Path | None = None
    current_path: Path | None = None
    power_path: Path | None = None

    def power_mw(self) -> float:
        """Instantaneous power in mW; raises ``OSError``/``ValueError`` on unreadable or garbage files."""
        if self.power_path is not None:
            return _read_float(self.power_path)
        if self.voltage_path is None or self.current_path is None:
            raise ValueError(f"rail {self.name!r} has neither a power file nor voltage and current files")
        return _read_float(self.voltage_path) * _read_float(self.current_path) / 1000.0

    def read_mw(self) -> float:
        return self.power_mw()


def _hwmon_rails(root: Path) -> list[Rail]:
    rails: list[Rail] = []
    for hwmon in sorted(root.glob("sys/bus/i2c/drivers/ina3221/*/hwmon/hwmon*")):
        for label_file in sorted(hwmon.iterdir()):
            m = _HWMON_LABEL.match(label_file.name)
            if not m:
                continue
            n = m.group(1)
            voltage, current = hwmon / f"in{n}_input", hwmon / f"curr{n}_input"
            if not current.exists():  # e.g. the "sum of shunt voltages" channel has no current
                continue
            try:
                name = label_file.read_text().strip().strip("\x00")
            except OSError:
                name = ""
            rails.append(Rail(name or f"{hwmon.parent.parent.name}:in{n}", voltage_path=voltage, current_path=current))
    return rails


def _iio_rails(root: Path) -> list[Rail]:
    rails: list[Rail] = []
    for dev in sorted(root.glob("sys/bus/i2c/drivers/ina3221x/*/iio:device*")):
        for rail_file in sorted(dev.iterdir()):
            m = _IIO_RAIL.match(rail_file.name)
            if not m:
                continue
            n = m.group(1)
            try:
                name = rail_file.read_text().strip().strip("\x00")
            except OSError:
                name = ""
            name = name or f"{dev.parent.name}:{n}"
            power = dev / f"in_power{n}_input"
            if power.exists():
                rails.append(Rail(name, power_path=power))
            else:
                rails.append(Rail(name, voltage_path=dev / f"in_voltage{n}_input", current_path=dev / f"in_current{n}_input"))
    return rails


def find_rails(root: str | Path = "/") -> list[Rail]:
    """All readable INA3221 rails under ``root`` (both layouts); unreadable rails are skipped with a warning."""
    root = Path(root)
    found: list[Rail] = []
    for candidate in _hwmon_rails(root) + _iio_rails(root):
        try:
            candidate.power_mw()
        except (OSError, ValueError) as exc:
            warnings.warn(f"skipping power rail {candidate.name!r}: {exc}", RuntimeWarning, stacklevel=2)
            continue
        found.append(candidate)
    return found


class PowerSampler:
    """Samples every rail every ``interval`` seconds on a background thread while the ``with`` block runs.

    A sample is taken synchronously on entry and on exit, so the integral covers the whole block.
    """

    def __init__(self, rails: list[Rail], interval: float = 0.01):
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.rails = list(rails)
        self.interval = interval
        self._samples: dict[str, list[tuple[float, float]]] = {r.name: [] for r in self.rails}
        self._warned: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.started: float | None = None
        self.stopped: float | None = None

    # -- sampling -----------------------------------------------------------------------------------
    def _sample_once(self) -> None:
        for rail in self.rails:
            try:
                mw = rail.power_mw()
            except (OSError, ValueError) as exc:
                if rail.name not in self._warned:
                    self._warned.add(rail.name)
                    warnings.warn(f"power rail {rail.name!r} unreadable while sampling: {exc}", RuntimeWarning, stacklevel=2)
                continue
            t = time.perf_counter()
            with self._lock:
                self._samples[rail.name].append((t, mw))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample_once()

    def __enter__(self) -> PowerSampler:
        with self._lock:
            for values in self._samples.values():
                values.clear()
        self._stop.clear()
        self.started = time.perf_counter()
        self.stopped = None
        self._sample_once()
        if self.rails:
            self._thread = threading.Thread(target=self._run, name="edgekd-power-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sample_once()
        self.stopped = time.perf_counter()

    # -- results ------------------------------------------------------------------------------------
    @property
    def samples(self) -> int:
        """Number of sampling rounds recorded (for the rail with the most samples)."""
        with self._lock:
            return max((len(v) for v in self._samples.values()), default=0)

    @property
    def duration_s(self) -> float:
        if self.started is None:
            return 0.0
        end = self.stopped if self.stopped is not None else time.perf_counter()
        return end - self.started

    def _series(self) -> dict[str, list[tuple[float, float]]]:
        with self._lock:
            return {name: list(values) for name, values in self._samples.items() if values}

    def energy_j(self) -> dict[str, float]:
        """Trapezoid integral of power over time per rail, in joules."""
        out: dict[str, float] = {}
        for name, series in self._series().items():
            mj = 0.0
            for (t0, p0), (t1, p1) in zip(series, series[1:]):
                mj += (p0 + p1) / 2.0 * (t1 - t0)
            out[name] = mj / 1000.0
        return out

    def mean_mw(self) -> dict[str, float]:
        """Time-weighted mean power per rail in mW (the plain mean when there is a single sample)."""
        out: dict[str, float] = {}
        energy = self.energy_j()
        for name, series in self._series().items():
            span = series[-1][0] - series[0][0]
            out[name] = energy[name] * 1000.0 / span if span > 0 else sum(p for _, p in series) / len(series)
        return out


def energy_per_inference(sampler: PowerSampler, n_inferences: int, busy_s: float | None = None
                         ) -> dict[str, float] | None:
    """Joules per inference per rail, or ``None`` when there are no rails (report :data:`NOT_AVAILABLE`).

    Without ``busy_s`` it is the whole sampled energy divided by ``n_inferences``. With ``busy_s`` (the summed
    duration of the timed calls) it is the mean power times ``busy_s / n_inferences``: the energy of the calls
    themselves, without the timing loop's own overhead and the sampler's start and stop, which matter when the
    calls are short.
    """
    if n_inferences <= 0:
        raise ValueError("n_inferences must be positive")
    if busy_s is None:
        energy = sampler.energy_j()
        return {name: joules / n_inferences for name, joules in energy.items()} or None
    power = sampler.mean_mw()
    return {name: mw / 1e3 * busy_s / n_inferences for name, mw in power.items()} or None
