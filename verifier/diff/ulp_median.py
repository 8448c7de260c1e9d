"""The exact median of a tensor's ULP distances in bounded memory.

ULP distances are non-negative integers (below 2**63), and a tensor may hold more of them than
memory does, so they are counted rather than kept:

* distances below ``2**EXACT_BITS`` each have a bucket of their own;
* larger ones are counted in ``2**SUB_BITS`` equal buckets per power of two (each bucket spans
  at most 1/256 of its lower bound).

While a tensor has few nonzero distances they are kept as they are (up to ``RAW_LIMIT`` values),
and the median is taken from them directly. Otherwise the median's rank is looked up in the
counts; when it falls in a bucket wider than one, ``MedianUlp.median`` asks for the distances
again (a second read of the tensor) and keeps those inside that bucket, if they are at most
``COLLECT_LIMIT``, or counts them in ``REFINE_BINS`` narrower buckets and repeats. So the median
is always exact; the extra reads happen only for tensors whose median distance is at least
``2**EXACT_BITS`` ULPs, and each narrows the range by a factor of ``REFINE_BINS`` (at most two
for float32). Memory: the counts (about 0.6 MB), at most ``RAW_LIMIT`` kept values and, while
narrowing, at most two buckets' ``COLLECT_LIMIT`` values or ``REFINE_BINS`` counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

EXACT_BITS = 16
SUB_BITS = 8
RAW_LIMIT = 1 << 20
COLLECT_LIMIT = 1 << 21
REFINE_BINS = 1 << 16
_TOP_BIT_LENGTH = 63  # distances are below 2**63


def bucket_count() -> int:
    return (1 << EXACT_BITS) + (_TOP_BIT_LENGTH - EXACT_BITS << SUB_BITS)


def bucket_counts(distances: np.ndarray, scratch: np.ndarray | None = None) -> np.ndarray:
    """Counts per bucket of non-negative integer distances (trailing empty buckets omitted).
    ``scratch``, an int64 array as long as ``distances``, saves allocating one: fresh memory
    costs page faults, which in a virtual machine took longer than the counting itself."""
    exact = 1 << EXACT_BITS
    if distances.size == 0 or int(distances.max()) < exact:
        return np.bincount(distances)
    index = np.empty(distances.size, np.int64) if scratch is None else scratch
    _high_bucket(distances, index)
    # Small values keep their own index, by arithmetic alone: selecting the large values (or
    # np.where) branches on each one and took several times longer on mixed data.
    index += exact
    index -= distances
    index *= distances >= exact
    index += distances
    return np.bincount(index)


def _high_bucket(values: np.ndarray, out: np.ndarray) -> None:
    """Bucket index, counted from the first bucket above the exact ones, of values of at least
    2**EXACT_BITS (meaningless for smaller ones): the power of two, then the SUB_BITS bits
    below the leading one."""
    if int(values.max()) < 1 << 53:  # exact in float64, whose bits hold both
        np.copyto(out.view(np.float64), values, casting="unsafe")
        np.right_shift(out, 52 - SUB_BITS, out=out)
        out -= (1023 + EXACT_BITS) << SUB_BITS
        return
    values = values.astype(np.int64)  # float64 distances: the exponent found the slow way
    _, exponent = np.frexp(values.astype(np.float64))
    length = exponent.astype(np.int64)
    # The conversion to float64 may round up to the next power of two: one bit too many then.
    length -= values.astype(np.uint64) < np.left_shift(np.uint64(1), (length - 1).astype(np.uint64))
    shift = np.maximum(length - 1 - SUB_BITS, 0)  # below 0 only for small values (unused)
    sub = np.right_shift(values, shift) & ((1 << SUB_BITS) - 1)
    out[...] = ((length - EXACT_BITS - 1) << SUB_BITS) + sub


def bucket_range(index: int) -> tuple[int, int]:
    """(lowest value, width) of a bucket."""
    if index < 1 << EXACT_BITS:
        return index, 1
    octave, sub = divmod(index - (1 << EXACT_BITS), 1 << SUB_BITS)
    shift = octave + EXACT_BITS - SUB_BITS
    return ((1 << SUB_BITS) + sub) << shift, 1 << shift


class Changed(Exception):
    """The distances read again did not match the first reading (the file changed)."""


class MedianUlp:
    """Accumulates one tensor's ULP distances; ``median()`` is exact (see the module)."""

    def __init__(self) -> None:
        self.zeros = 0
        self._kept: list[np.ndarray] = []
        self._kept_size = 0
        self._counts: np.ndarray | None = None

    def add_zeros(self, count: int) -> None:
        self.zeros += count

    def add(self, distances: np.ndarray) -> None:
        """Distances to count (zeros may be among them)."""
        if self._counts is None and self._kept_size + distances.size <= RAW_LIMIT:
            self._kept.append(distances)
            self._kept_size += distances.size
        else:
            self.add_counts(bucket_counts(distances))

    def add_counts(self, counts: np.ndarray) -> None:
        """Counts made by ``bucket_counts``."""
        if self._counts is None:
            self._counts = np.zeros(bucket_count(), np.int64)
            for kept in self._kept:
                kept_counts = bucket_counts(kept)
                self._counts[: kept_counts.size] += kept_counts
            self._kept, self._kept_size = [], 0
        self._counts[: counts.size] += counts

    def median(self, read_again: Callable[[], Iterable[np.ndarray]]) -> float | None:
        """The median (the mean of the two middle values for an even count); None when empty.
        ``read_again`` yields all the distances once more, in any grouping, if they are needed
        (negative values among them are ignored).
        Raises ``Changed`` when that second reading disagrees with the first."""
        if self._counts is None:
            total = self.zeros + self._kept_size
            if total == 0:
                return None
            kept = np.concatenate(self._kept) if self._kept else np.empty(0, np.int64)
            ranks = [(total - 1) // 2, total // 2]
            inside = sorted({r - self.zeros for r in ranks if r >= self.zeros})
            chosen = _at_ranks(kept, inside)
            values = [0 if r < self.zeros else chosen[r - self.zeros] for r in ranks]
            return (values[0] + values[1]) / 2
        counts = self._counts.copy()
        counts[0] += self.zeros
        total = int(counts.sum())
        if total == 0:
            return None
        cumulative = np.cumsum(counts)
        ranks = [(total - 1) // 2, total // 2]
        values: dict[int, int] = {}
        targets: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
        for rank in ranks:
            index = int(np.searchsorted(cumulative, rank, side="right"))
            low, width = bucket_range(index)
            if width == 1:
                values[rank] = low
            else:
                before = int(cumulative[index - 1]) if index else 0
                key = (low, width, int(counts[index]))
                targets.setdefault(key, []).append((rank, rank - before))
        while targets:
            targets = _narrow(targets, values, read_again)
        return (values[ranks[0]] + values[ranks[1]]) / 2


def _at_ranks(values: np.ndarray, ranks: list[int]) -> dict[int, int]:
    """{rank: the value at that rank in sorted order} without sorting everything."""
    if not ranks:
        return {}
    return dict(zip(ranks, np.partition(values, ranks)[ranks].tolist(), strict=True))


def _narrow(
    targets: dict[tuple[int, int, int], list[tuple[int, int]]],
    values: dict[int, int],
    read_again: Callable[[], Iterable[np.ndarray]],
) -> dict[tuple[int, int, int], list[tuple[int, int]]]:
    """One more reading: resolve the ranks of buckets small enough to keep, narrow the others.
    A target is (lowest value, width, count) -> [(rank overall, rank inside the bucket)]."""
    kept: dict[tuple[int, int, int], list[np.ndarray]] = {}
    counted: dict[tuple[int, int, int], np.ndarray] = {}
    for key in targets:
        if key[2] <= COLLECT_LIMIT:
            kept[key] = []
        else:
            counted[key] = np.zeros(REFINE_BINS, np.int64)
    for distances in read_again():
        for key in targets:
            low, width, _ = key
            inside = distances[(distances >= low) & (distances < low + width)].astype(np.int64)
            if key in kept:
                kept[key].append(inside)
            else:
                step = -(-width // REFINE_BINS)
                counted[key] += np.bincount((inside - low) // step, minlength=REFINE_BINS)
    narrower: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for key, ranks in targets.items():
        low, width, count = key
        if key in kept:
            found = np.concatenate(kept[key]) if kept[key] else np.empty(0, np.int64)
            if found.size != count:
                raise Changed
            chosen = _at_ranks(found, sorted({r for _, r in ranks}))
            values.update({rank: chosen[r] for rank, r in ranks})
            continue
        bins = counted[key]
        if int(bins.sum()) != count:
            raise Changed
        step = -(-width // REFINE_BINS)
        cumulative = np.cumsum(bins)
        for rank, r in ranks:
            index = int(np.searchsorted(cumulative, r, side="right"))
            sub_low = low + index * step
            if step == 1:
                values[rank] = sub_low
            else:
                before = int(cumulative[index - 1]) if index else 0
                sub = (sub_low, min(step, low + width - sub_low), int(bins[index]))
                narrower.setdefault(sub, []).append((rank, r - before))
    return narrower
