"""Latency recording on HdrHistogram: 1 us .. 10 min at 3 significant digits.

The ``hdrhistogram`` package records one value in about 1.5 us of pure Python,
too slow for a runner meant to drive 200,000 operations a second. The runner
therefore appends raw nanosecond latencies to a list and :func:`record_ns` adds
a batch of them at once with numpy, computing exactly the counts index that
``HdrHistogram.record_value`` computes, so the histogram is the one the package
would have built value by value. Histograms merge exactly (counts are added
index by index) and travel between processes as the package's standard
compressed, base64 encoding (:func:`encode` / :func:`decode`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import numpy as np
from hdrh.histogram import HdrHistogram

from ..presentation import PERCENTILES  # the percentiles every summary reports

LOWEST_US = 1
HIGHEST_US = 600_000_000  # 10 minutes
SIGNIFICANT_FIGURES = 3


def new_histogram() -> HdrHistogram:
    """An empty latency histogram in microseconds (1 us .. 10 min, 3 digits)."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)


def counts_view(hist: HdrHistogram) -> np.ndarray:
    """A writable numpy view on the histogram's counts (no copy)."""
    return np.ctypeslib.as_array(hist.counts)


def indices_us(values_us: np.ndarray) -> np.ndarray:
    """The counts index of each value (int64 microseconds within range).

    Vectorised form of ``HdrHistogram._counts_index_for`` for the layout of
    :func:`new_histogram` (values are exact in float64 below 2**53).
    """
    layout = _layout()
    unit, half_mag, half_count, mask = layout
    _, bit_length = np.frexp((values_us | mask).astype(np.float64))
    bucket = bit_length.astype(np.int64) - unit - (half_mag + 1)
    sub_bucket = values_us >> (bucket + unit)
    return ((bucket + 1) << half_mag) + sub_bucket - half_count


@functools.lru_cache(maxsize=1)
def _layout() -> tuple[int, int, int, int]:
    hist = new_histogram()
    return (hist.unit_magnitude, hist.sub_bucket_half_count_magnitude,
            hist.sub_bucket_half_count, hist.sub_bucket_mask)


def to_us(values_ns: Sequence[int] | np.ndarray) -> np.ndarray:
    """Nanoseconds to whole microseconds (rounded), clipped to the histogram's range."""
    arr = np.asarray(values_ns, dtype=np.int64)
    return np.clip((arr + 500) // 1000, LOWEST_US, HIGHEST_US)


def sparse_counts(values_ns: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, counts)`` of a batch of nanosecond latencies: the non-empty cells."""
    if len(values_ns) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    dense = np.bincount(indices_us(to_us(values_ns)), minlength=counts_len())
    idx = np.flatnonzero(dense)
    return idx.astype(np.int64), dense[idx].astype(np.int64)


def counts_len() -> int:
    """Length of the counts array of :func:`new_histogram`."""
    return _index_values()[0].shape[0]


def prepare() -> None:
    """Compute the cached tables now (before a run's clock starts, not during it)."""
    _layout()
    _index_values()


def add_sparse(hist: HdrHistogram, idx: np.ndarray, cnt: np.ndarray) -> None:
    """Add sparse counts (as from :func:`sparse_counts`) into ``hist`` exactly."""
    if len(idx) == 0:
        return
    view = counts_view(hist)
    np.add.at(view, idx, cnt.astype(view.dtype))
    total = int(cnt.sum())
    lo = int(hist.get_lowest_equivalent_value(hist.get_value_from_index(int(idx.min()))))
    hi = int(hist.get_highest_equivalent_value(hist.get_value_from_index(int(idx.max()))))
    hist.total_count += total
    hist.min_value = min(hist.min_value, lo)
    hist.max_value = max(hist.max_value, hi)


def record_ns(hist: HdrHistogram, values_ns: Sequence[int] | np.ndarray) -> None:
    """Record a batch of latencies given in nanoseconds into ``hist``."""
    add_sparse(hist, *sparse_counts(values_ns))


def merge(hists: Iterable[HdrHistogram]) -> HdrHistogram:
    """A new histogram holding the exact sum of ``hists``."""
    out = new_histogram()
    for hist in hists:
        if hist.get_total_count():
            out.add(hist)
    return out


def encode(hist: HdrHistogram) -> str:
    """The standard compressed, base64 encoding (V2 histoblob) as text."""
    blob = hist.encode()
    return blob.decode("ascii") if isinstance(blob, bytes) else str(blob)


def decode(text: str | bytes) -> HdrHistogram:
    """The histogram of an :func:`encode` string."""
    if isinstance(text, str):
        text = text.encode("ascii")
    return HdrHistogram.decode(text)


# --------------------------------------------------------------------------- statistics


@functools.lru_cache(maxsize=1)
def _index_values() -> tuple[np.ndarray, np.ndarray]:
    """Per counts index: (highest equivalent value, median equivalent value), in us."""
    hist = new_histogram()
    highest = np.empty(hist.counts_len, dtype=np.float64)
    median = np.empty(hist.counts_len, dtype=np.float64)
    for index in range(hist.counts_len):
        value = hist.get_value_from_index(index)
        highest[index] = hist.get_highest_equivalent_value(value)
        median[index] = hist._hdr_median_equiv_value(value)
    return highest, median


def percentile_us(counts: np.ndarray, percentile: float) -> float:
    """The value at ``percentile`` of a counts array, as HdrHistogram reports it."""
    total = int(counts.sum())
    if total == 0:
        return 0.0
    target = max(int(min(percentile, 100.0) * total / 100 + 0.5), 1)
    index = int(np.searchsorted(np.cumsum(counts), target))
    return float(_index_values()[0][index])


def sparse_percentile_us(idx: np.ndarray, cnt: np.ndarray, percentile: float) -> float:
    """The value at ``percentile`` of sparse counts (as from :func:`sparse_counts`); 0.0 when empty."""
    if len(cnt) == 0:
        return 0.0
    total = int(cnt.sum())
    target = max(int(min(percentile, 100.0) * total / 100 + 0.5), 1)
    position = int(np.searchsorted(np.cumsum(cnt), target))
    return float(_index_values()[0][int(idx[position])])


def summary_ms(hist: HdrHistogram) -> dict[str, float]:
    """Mean, percentiles and max of ``hist`` in milliseconds (0.0 when empty)."""
    counts = counts_view(hist).astype(np.int64)
    total = int(counts.sum())
    out = {"mean_ms": 0.0, **{k: 0.0 for k in PERCENTILES}, "max_ms": 0.0}
    if total == 0:
        return out
    highest, median = _index_values()
    cumulative = np.cumsum(counts)
    for key, pct in PERCENTILES.items():
        target = max(int(pct * total / 100 + 0.5), 1)
        out[key] = float(highest[int(np.searchsorted(cumulative, target))]) / 1000.0
    out["mean_ms"] = float((counts * median).sum()) / total / 1000.0
    out["max_ms"] = float(highest[int(np.flatnonzero(counts)[-1])]) / 1000.0
    return out
