"""appliance/web/retry.py: the one backoff (full jitter, capped) and the one Retry-After reading,
used by the uplink worker and the tablet client alike."""

from __future__ import annotations

import email.utils
import random
import time

import httpx
import pytest

from appliance.web.retry import (
    RETRY_AFTER_MAX_S,
    Backoff,
    backoff_ceiling,
    full_jitter,
    parse_retry_after,
    retry_after_s,
)


def test_the_ceiling_starts_at_the_base_doubles_per_failure_and_stops_at_the_cap() -> None:
    assert [backoff_ceiling(1.0, 10.0, n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_ceiling(0.5, 300.0, 0) == 0.5  # no failure yet counts as the first
    assert backoff_ceiling(1.0, 300.0, 10_000) == 300.0  # no overflow after a very long outage


def test_full_jitter_spreads_waits_over_the_whole_range_up_to_the_ceiling() -> None:
    rng = random.Random(7)
    for failures, ceiling in ((1, 1.0), (3, 4.0), (9, 60.0)):
        samples = [full_jitter(1.0, 60.0, failures, rng) for _ in range(300)]
        assert all(0 <= s <= ceiling for s in samples)
        assert min(samples) < ceiling * 0.2 and max(samples) > ceiling * 0.8


def test_the_backoff_object_draws_the_same_waits_as_the_function_from_the_same_rng() -> None:
    backoff = Backoff(base_s=1.0, cap_s=10.0, rng=random.Random(1234))
    reference = random.Random(1234)
    assert [backoff.delay(n) for n in range(1, 9)] == [
        full_jitter(1.0, 10.0, n, reference) for n in range(1, 9)
    ]
    assert backoff.ceiling(5) == 10.0


def test_retry_after_reads_delta_seconds_and_caps_them() -> None:
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after(" 7 ") == 7.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("999999") == RETRY_AFTER_MAX_S == 3600.0
    assert parse_retry_after("999999", cap_s=60.0) == 60.0


def test_retry_after_reads_http_dates_against_the_wall_clock() -> None:
    now = time.time()
    ahead = email.utils.formatdate(now + 30, usegmt=True)
    assert 29 <= (parse_retry_after(ahead, now) or 0) <= 31
    past = email.utils.formatdate(now - 300, usegmt=True)
    assert parse_retry_after(past, now) == 0.0  # a date gone by: retry now
    far = email.utils.formatdate(now + 30 * 86_400, usegmt=True)
    assert parse_retry_after(far, now) == RETRY_AFTER_MAX_S


def test_an_http_date_without_a_zone_is_read_as_gmt() -> None:
    now = time.time()
    gmt = email.utils.formatdate(now + 60, usegmt=True)
    no_zone = gmt.replace("GMT", "-0000")
    assert parse_retry_after(no_zone, now) == pytest.approx(parse_retry_after(gmt, now), abs=0.001)


@pytest.mark.parametrize(
    "value", [None, "", "   ", "-5", "1.5", "inf", "nan", "soon", "²", "Wed, 32 Oct 2015 07:28:00 GMT"]
)
def test_absent_negative_or_garbage_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value, time.time()) is None


def test_retry_after_is_read_from_a_response_header() -> None:
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0
    assert retry_after_s(httpx.Response(503)) is None
