"""Health judgement: crash fails at once, healthy must hold, timeouts say what was seen."""

from dockship.config import HealthCheck
from dockship.health import HealthJudge, Observation, State

CHECK = HealthCheck(path="/health", status=200, timeout=10, min_healthy=2)


def run(observations, check=CHECK):
    judge = HealthJudge(check)
    verdict = None
    for obs in observations:
        verdict = judge.observe(obs)
    return verdict


def test_healthy_once_the_window_is_held():
    v = run([Observation(0.5, "running", error="connection refused"),
             Observation(1.0, "running", http_status=200),
             Observation(2.0, "running", http_status=200),
             Observation(3.0, "running", http_status=200)])
    assert v.state is State.HEALTHY and v.healthy_since == 1.0


def test_pending_while_the_window_is_not_yet_held():
    v = run([Observation(1.0, "running", http_status=200), Observation(2.5, "running", http_status=200)])
    assert v.state is State.PENDING


def test_an_exited_container_fails_at_once_with_its_exit_code():
    v = run([Observation(0.3, "exited", exit_code=3)])
    assert v.state is State.FAILED and "exited with code 3" in v.reason


def test_a_restarting_container_is_a_crash_loop():
    v = run([Observation(0.3, "running", restarts=1, http_status=200)])
    assert v.state is State.FAILED and "crash loop" in v.reason


def test_503_until_the_timeout_fails_naming_the_answer():
    obs = [Observation(t, "running", http_status=503) for t in (1, 5, 10)]
    v = run(obs)
    assert v.state is State.FAILED
    assert v.reason == "not healthy within 10s: GET /health answered 503 (expected 200)"


def test_a_bad_answer_inside_the_window_resets_it():
    v = run([Observation(1, "running", http_status=200), Observation(2, "running", http_status=503),
             Observation(3, "running", http_status=200), Observation(4.5, "running", http_status=200)])
    assert v.state is State.PENDING and v.healthy_since == 3


def test_healthy_too_late_says_how_long_it_held():
    v = run([Observation(9, "running", http_status=200), Observation(10, "running", http_status=200)])
    assert v.state is State.FAILED and "healthy for only 1.0s of the required 2s" in v.reason


def test_min_healthy_zero_accepts_the_first_good_answer():
    check = HealthCheck(timeout=10, min_healthy=0)
    assert run([Observation(0.4, "running", http_status=200)], check).state is State.HEALTHY


def test_a_verdict_is_final():
    judge = HealthJudge(CHECK)
    judge.observe(Observation(0.1, "exited", exit_code=1))
    assert judge.observe(Observation(5, "running", http_status=200)).state is State.FAILED
