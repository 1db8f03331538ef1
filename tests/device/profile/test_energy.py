"""Power rails from fake INA3221 sysfs trees (both Jetson layouts), sampling and energy per inference."""

from __future__ import annotations

import threading
import time

import pytest

from edgekd.device.profile.energy import NOT_AVAILABLE, PowerSampler, Rail, energy_per_inference, find_rails
from tests.helpers import hwmon_tree, iio_tree


def test_hwmon_layout_names_and_power(tmp_path):
    hwmon_tree(tmp_path, {1: ("VDD_IN", 5000, 1200), 2: ("VDD_CPU_GPU_CV", 5000, 300), 3: ("VDD_SOC", 4992, 250)})
    rails = find_rails(tmp_path)
    assert [r.name for r in rails] == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]
    power = {r.name: r.power_mw() for r in rails}
    assert power["VDD_IN"] == pytest.approx(6000.0)
    assert power["VDD_CPU_GPU_CV"] == pytest.approx(1500.0)
    assert power["VDD_SOC"] == pytest.approx(4992 * 250 / 1000)


def test_iio_layout_names_and_power(tmp_path):
    iio_tree(tmp_path, {0: ("POM_5V_IN", 3500), 1: ("POM_5V_GPU", 800), 2: ("POM_5V_CPU", 1200)})
    rails = find_rails(tmp_path)
    assert [r.name for r in rails] == ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]
    assert [r.power_mw() for r in rails] == pytest.approx([3500.0, 800.0, 1200.0])


def test_no_rails_means_not_available(tmp_path):
    assert find_rails(tmp_path) == []
    with PowerSampler([], interval=0.005) as sampler:
        time.sleep(0.02)
    assert sampler.energy_j() == {}
    assert sampler.samples == 0
    assert energy_per_inference(sampler, 10) is None
    assert NOT_AVAILABLE == "not available"


def test_garbage_rail_is_skipped_with_a_warning(tmp_path):
    d = hwmon_tree(tmp_path, {1: ("VDD_IN", 5000, 1000), 2: ("VDD_SOC", 5000, 200)})
    (d / "curr2_input").write_text("not-a-number\n")
    with pytest.warns(RuntimeWarning, match="VDD_SOC"):
        rails = find_rails(tmp_path)
    assert [r.name for r in rails] == ["VDD_IN"]


def test_rail_going_bad_while_sampling_does_not_crash(tmp_path):
    d = hwmon_tree(tmp_path, {1: ("VDD_IN", 5000, 1000)})
    rails = find_rails(tmp_path)
    with pytest.warns(RuntimeWarning, match="unreadable"):
        with PowerSampler(rails, interval=0.005) as sampler:
            time.sleep(0.03)
            (d / "curr1_input").write_text("garbage")
            time.sleep(0.03)
    assert sampler.energy_j()["VDD_IN"] > 0


def test_sampler_integrates_changing_power(tmp_path):
    d = hwmon_tree(tmp_path, {1: ("VDD_IN", 5000, 1000)})  # 5 W
    rails = find_rails(tmp_path)
    switched = threading.Event()

    def bump():
        time.sleep(0.2)
        (d / "curr1_input").write_text("3000\n")  # 15 W from now on
        switched.set()

    with PowerSampler(rails, interval=0.005) as sampler:
        worker = threading.Thread(target=bump)
        worker.start()
        worker.join()
        t_switch = time.perf_counter()
        time.sleep(0.2)
    assert switched.is_set()
    first = t_switch - sampler.started
    second = sampler.stopped - t_switch
    expected = 5.0 * first + 15.0 * second  # joules
    energy = sampler.energy_j()["VDD_IN"]
    assert energy == pytest.approx(expected, rel=0.2)
    assert sampler.samples > 10
    mean = sampler.mean_mw()["VDD_IN"]
    assert 5000 < mean < 15000
    per = energy_per_inference(sampler, 4)
    assert per == {"VDD_IN": pytest.approx(energy / 4)}


def test_energy_integral_of_constant_power_is_exact(tmp_path):
    hwmon_tree(tmp_path, {1: ("VDD_IN", 5000, 2000)})  # 10 W
    with PowerSampler(find_rails(tmp_path), interval=0.005) as sampler:
        time.sleep(0.1)
    energy = sampler.energy_j()["VDD_IN"]
    assert energy == pytest.approx(10.0 * sampler.duration_s, rel=0.05)
    assert sampler.mean_mw()["VDD_IN"] == pytest.approx(10000.0)
    assert energy_per_inference(sampler, 10)["VDD_IN"] == pytest.approx(energy / 10)
    # with the calls' own busy time: mean power x busy time / n (10 W x 0.05 s / 10 = 50 mJ)
    assert energy_per_inference(sampler, 10, busy_s=0.05)["VDD_IN"] == pytest.approx(0.05)
    with pytest.raises(ValueError):
        energy_per_inference(sampler, 0)


def test_rail_is_frozen(tmp_path):
    rail = Rail("X", power_path=tmp_path / "p")
    with pytest.raises(Exception):
        rail.name = "Y"  # type: ignore[misc]
