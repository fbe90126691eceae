"""Canary bake verdicts: error rates and p95 latencies against a baseline measured alongside."""

from dockship.bake import Sample, figures, judge
from dockship.config import Bake

BAKE = Bake(seconds=10, max_error_increase=0.01, max_p95_ratio=1.5, min_p95_ms=20)


def samples(n, *, errors=0, ms=5.0):
    return [Sample(i >= errors, ms) for i in range(n)]


def test_figures_count_errors_and_take_latency_percentiles_of_good_answers():
    f = figures([Sample(True, float(ms)) for ms in range(1, 101)] + [Sample(False, 2000.0)])
    assert (f.requests, f.errors, f.p50_ms, f.p95_ms) == (101, 1, 50.0, 95.0)


def test_a_canary_as_good_as_the_baseline_passes():
    v = judge(samples(100, ms=5), samples(100, ms=5), BAKE)
    assert v.passed and "canary 0/100 errors" in v.reason


def test_more_errors_than_the_baseline_fails_with_the_figures():
    v = judge(samples(100, errors=10), samples(100, errors=1), BAKE)
    assert not v.passed
    assert "canary error rate 10.0% exceeds baseline 1.0% by more than 1.0%" in v.reason
    assert v.to_json()["canary"]["errors"] == 10 and v.to_json()["baseline"]["errors"] == 1


def test_errors_the_baseline_has_too_are_not_blamed_on_the_canary():
    assert judge(samples(100, errors=5), samples(100, errors=5), BAKE).passed


def test_a_slow_canary_fails_on_the_p95_ratio():
    v = judge(samples(100, ms=90), samples(100, ms=30), BAKE)
    assert not v.passed and "3.00× the baseline's 30.0 ms" in v.reason


def test_latencies_under_the_noise_floor_never_fail():
    assert judge(samples(100, ms=15), samples(100, ms=2), BAKE).passed


def test_without_baseline_nodes_errors_are_judged_against_zero():
    assert judge(samples(100), None, BAKE).passed
    assert not judge(samples(100, errors=3), None, BAKE).passed


def test_a_silent_canary_fails():
    assert not judge([], samples(10), BAKE).passed
