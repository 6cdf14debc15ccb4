"""The HDR recording of the load engine: exact against hdrhistogram, exact merging."""

from __future__ import annotations

import numpy as np

from pytest_agentmem.load import histogram as hdr
from pytest_agentmem.load.result import LoadResult, merge_results


def _one_by_one(values_ns: np.ndarray):
    hist = hdr.new_histogram()
    for value in hdr.to_us(values_ns):
        hist.record_value(int(value))
    return hist


def _values(seed: int, n: int = 5000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([
        rng.integers(0, 2_000_000, n),  # 0 .. 2 ms
        rng.lognormal(17, 2, n).astype(np.int64),  # ms .. minutes
        np.array([0, 1, 499, 500, 1_000, 10**15]),  # edges, clipped to 1 us .. 10 min
    ])


def test_batch_recording_equals_hdrhistogram_record_value() -> None:
    values = _values(1)
    batch = hdr.new_histogram()
    hdr.record_ns(batch, values)
    reference = _one_by_one(values)
    assert np.array_equal(hdr.counts_view(batch), hdr.counts_view(reference))
    assert batch.get_total_count() == reference.get_total_count() == len(values)
    for pct in (0, 50, 90, 99, 99.9, 100):
        assert (hdr.percentile_us(hdr.counts_view(batch).astype(np.int64), pct)
                == reference.get_value_at_percentile(pct)) or pct == 0
    summary = hdr.summary_ms(batch)
    assert summary["p99_ms"] * 1000 == reference.get_value_at_percentile(99)
    assert summary["max_ms"] * 1000 == reference.get_max_value()
    assert abs(summary["mean_ms"] * 1000 - reference.get_mean_value()) < 1e-6 * reference.get_mean_value()


def test_range_is_1us_to_10min_at_3_digits() -> None:
    hist = hdr.new_histogram()
    hdr.record_ns(hist, [1_000, 600 * 10**9, 123_456_789])
    assert hist.get_min_value() == 1
    assert hist.get_value_at_percentile(100) >= 600_000_000 * 0.999
    # 3 significant digits: 123,456 us is within 0.1 %
    assert abs(hist.get_value_at_percentile(66) - 123_457) <= 124


def test_merge_is_exact_and_encoding_round_trips() -> None:
    a_values, b_values = _values(2), _values(3)
    a, b, both = hdr.new_histogram(), hdr.new_histogram(), hdr.new_histogram()
    hdr.record_ns(a, a_values)
    hdr.record_ns(b, b_values)
    hdr.record_ns(both, np.concatenate([a_values, b_values]))
    merged = hdr.merge([hdr.decode(hdr.encode(a)), hdr.decode(hdr.encode(b))])
    assert np.array_equal(hdr.counts_view(merged), hdr.counts_view(both))
    assert merged.get_total_count() == both.get_total_count()
    assert hdr.summary_ms(merged) == hdr.summary_ms(both)


def _result(values_ns: list[int], errors: int, duration: float) -> LoadResult:
    hist = hdr.new_histogram()
    hdr.record_ns(hist, values_ns)
    return LoadResult.build(histogram=hist, ops=len(values_ns) + errors, errors=errors,
                            duration_s=duration, name="x", timeouts=0, concurrency=1, rate=None,
                            errors_by_type={"ValueError": {"count": errors, "samples": ["boom"]}},
                            timeline=[{"t": 1.0, "dt": 1.0, "ops": 1, "errors": 0, "p95_ms": 1.0}])


def test_load_result_figures_and_round_merge() -> None:
    first = _result([10_000_000] * 90, errors=10, duration=1.0)
    assert first.ops == 100 and first.error_rate == 0.1
    assert first.qps == 90.0  # successful ops per second
    assert abs(first.p50_ms - 10.0) < 0.01
    assert first.value_at_percentile_ms(50) == first.p50_ms
    second = _result([20_000_000] * 100, errors=0, duration=2.0)
    merged = merge_results([first, second])
    assert merged.ops == 200 and merged.errors == 10
    assert merged.qps == 190 / 3.0
    assert merged.histogram.get_total_count() == 190
    assert [r["qps"] for r in merged.rounds] == [90.0, 50.0]
    assert merged.errors_by_type["ValueError"] == {"count": 10, "samples": ["boom"]}
    assert [e["t"] for e in merged.timeline] == [1.0, 2.0]
    data = merged.to_dict()
    assert set(first.metrics()) == {"qps", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms",
                                    "p999_ms", "max_ms", "error_rate", "cpu_ms_per_op"}
    decoded = hdr.decode(data["histogram"])
    assert decoded.get_total_count() == 190
    import json
    json.dumps(data)
