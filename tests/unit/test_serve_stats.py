"""The server's plain-Python numbers (the dashboard's panel) and how the table shows them:
the rolling per-minute counts on a fake clock, per-model counts, the last error, the
"(estimated)" mark of an endpoint's token count."""

from __future__ import annotations

from tui.app.views import ModelRow, count_text, status_label
from tui.serve.stats import PerMinute, ServeStats

from tests.support.clock import FakeClock


def test_per_minute_counts_the_last_sixty_seconds_only() -> None:
    clock = FakeClock()
    counter = PerMinute(clock)
    assert counter.value() == 0
    counter.add()
    clock.advance(30)
    counter.add(5)
    assert counter.value() == 6
    clock.advance(29.9)
    assert counter.value() == 6  # the first is 59.9 s old
    clock.advance(0.1)
    assert counter.value() == 5  # 60 s old: out of the window
    clock.advance(30)
    assert counter.value() == 0
    counter.add(2)
    assert counter.value() == 2


def test_per_minute_window_is_a_parameter() -> None:
    clock = FakeClock()
    counter = PerMinute(clock, window=10)
    counter.add(3)
    clock.advance(10)
    assert counter.value() == 0


def test_stats_count_requests_tokens_models_and_in_flight() -> None:
    clock = FakeClock()
    stats = ServeStats(clock=clock)
    stats.arrived()
    stats.arrived()
    stats.answered("a", 200, 10)
    stats.left()
    stats.answered("a", 200, 7)
    stats.answered("b", 404)  # refused: not counted for the model
    stats.answered("a", 499, 3)  # client gone
    snap = stats.snapshot()
    assert (snap.in_flight, snap.queued) == (1, 0)
    assert (snap.requests_per_min, snap.tokens_per_min, snap.requests_total) == (4, 20, 4)
    assert snap.per_model == {"a": 2}
    clock.advance(61)
    snap = stats.snapshot()
    assert (snap.requests_per_min, snap.tokens_per_min, snap.requests_total) == (0, 0, 4)
    stats.left()
    stats.left()  # never below zero
    assert stats.snapshot().in_flight == 0


def test_last_error_is_one_clean_bounded_line() -> None:
    stats = ServeStats(clock=FakeClock())
    assert stats.snapshot().last_error is None
    stats.error(404, "no installed model 'x\x1b[31m'\nsecond line" + "y" * 1000)
    error = stats.snapshot().last_error
    assert error is not None and error.startswith("404 no installed model")
    assert "\x1b" not in error and "\n" not in error and len(error) <= 300


def test_loaded_rows_show_requests_served() -> None:
    row = ModelRow(key="m", name="m", status="loaded", model_id="m")
    assert status_label(row) == "loaded"
    row.served = 12
    assert status_label(row) == "loaded, 12 req"
    row.served = 12_345
    assert status_label(row) == "loaded, 12k req"
    assert len(status_label(row)) <= 15  # the status column
    row.status = "installed"
    assert status_label(row) == "installed"


def test_count_text_is_short() -> None:
    assert [count_text(n) for n in (0, 999, 1000, 1234, 9949, 9950, 999_499, 999_500)] == [
        "0", "999", "1.0k", "1.2k", "9.9k", "10k", "999k", "1.0M"]
    assert all(len(count_text(10 ** k)) <= 4 for k in range(13))


def test_metrics_line_marks_estimated_token_counts() -> None:
    from tui.app.views import MetricsView, metrics_text

    assert metrics_text(MetricsView(tokens=5, estimated=True)) == "5 tokens (estimated)"
    assert metrics_text(MetricsView(tokens=5)) == "5 tokens"
