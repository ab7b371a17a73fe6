"""Scheduling delays derived from the measured load times (common/delays.py)."""

from __future__ import annotations

import pytest

from corral.common.delays import COLD_FALLBACK, SWITCH_FALLBACK, Delays, LoadTimes
from corral.common.jobs import Limits
from corral.common.settings import Settings

pytestmark = pytest.mark.unit


def test_a_load_time_is_a_moving_average_of_real_loads() -> None:
    times = LoadTimes()
    times.observe("a", 4.0)
    times.observe("a", 2.0)
    times.observe("a", 0.001)  # the model was loaded after all: not a load
    times.observe("a", float("nan"))
    assert times.estimate("a") == 3.0
    assert times.report() == {"a": 3.0}


def test_an_unmeasured_model_takes_the_median_of_the_hosts_other_models() -> None:
    times = LoadTimes()
    assert times.estimate("x") is None
    for model, seconds in (("a", 1.0), ("b", 5.0), ("c", 2.0)):
        times.observe(model, seconds)
    assert times.estimate("x") == 2.0 and times.estimate("b") == 5.0


def test_the_unit_is_the_longer_of_the_load_time_and_the_job_time() -> None:
    times = LoadTimes()
    times.observe_job("a", 2.0)
    assert times.estimate("a") == 2.0 and times.estimate("b") == 2.0  # b: the median of the others
    times.observe("a", 0.5)
    times.observe_job("a", 1.0)  # a moving average: 2.0 + 0.1 * (1.0 - 2.0)
    assert times.estimate("a") == pytest.approx(1.9)
    times.observe("a", 5.5)
    assert times.estimate("a") == 3.0
    times.observe_job("a", 0.0)  # (nothing measured)
    assert times.jobs == {"a": pytest.approx(1.9)}


def test_unset_delays_are_multiples_of_the_load_time_and_fall_back_before_any() -> None:
    delays = Delays.from_settings(Settings())
    assert (delays.cold, delays.switch, delays.cold_factor, delays.switch_factor) == (None, None, 1.0, 3.0)
    times = LoadTimes()
    assert delays.for_model("a", times) == (COLD_FALLBACK, SWITCH_FALLBACK)
    times.observe("a", 0.05)
    times.observe("b", 40.0)
    assert delays.for_model("a", times) == pytest.approx((0.05, 0.15))
    assert delays.for_model("b", times) == pytest.approx((40.0, 120.0))
    assert delays.arguments(["a", "b"], times) == ("0.050 40.000", "0.150 120.000")


def test_set_delays_are_fixed_seconds_for_every_model() -> None:
    settings = Settings(cold_delay=0.5, switch_delay=4, cold_delay_factor=9)
    delays = Delays.from_settings(settings)
    times = LoadTimes()
    times.observe("a", 30.0)
    assert delays.for_model("a", times) == (0.5, 4.0)
    limits = Limits.from_settings(settings)
    assert (limits.cold_delay, limits.switch_delay) == (0.5, 4.0)
    partly = Delays.from_settings(Settings(switch_delay=7))  # only the cold delay follows the loads
    assert partly.for_model("a", times) == (30.0, 7.0)
    unset = Limits.from_settings(Settings())  # a store without a worker's measurements: the fallbacks
    assert (unset.cold_delay, unset.switch_delay) == (COLD_FALLBACK, SWITCH_FALLBACK)
