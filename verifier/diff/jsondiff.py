"""Structural comparison of two JSON documents: same shape, and how far apart their numbers are.

A training step's metrics (`metrics.json`, a log of losses) never match bit for bit across
rebuilds, but their structure should, and their numbers should be close. `compare_json` says
both, in a summary small enough to sign (it goes into a rebuild attestation's `diff`), so that a
verifier can apply a policy's JSON tolerance from signed data alone
(attestations/rebuild-predicate.md, "JSON diff").

Semantics (`b` is the second, reference side, as for tensors):
* Only a document whose top level is an object or an array is compared as JSON; NaN and
  Infinity (not JSON), a key given twice in one object, nesting too deep for the parser (about
  a thousand levels) or a file over `MAX_BYTES` make it "not JSON" (the caller falls back to
  bytes). The comparison itself is iterative, so no depth the parser accepts can exhaust the
  stack.
* Objects are compared by key (order does not matter), arrays by position. A key or an item on
  one side only, or two values of different JSON types, is a structural difference.
* Numbers (integers and floats alike, never booleans) are compared by value:
  `max_abs_diff = max |a-b|`, `max_rel_diff = max |a-b|/|b|` (infinite when b == 0 != a).
  A differing pair where either side is written as an integer (no fraction, no exponent: a
  token id, a count, a dimension) is counted in `integers_differing` too, and no tolerance
  ever admits it: a tolerance is for floating-point rounding, and 50256 -> 50255 is another
  token.
  Any other differing value (a string, a boolean, null) is an "other" difference.
* Paths are JSON Pointers (RFC 6901); "first" means first in document order with object keys
  sorted, so it does not depend on how either file orders its keys.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

MAX_BYTES = 64 << 20  # larger files are compared byte by byte


class _NotJson(Exception):
    pass


@dataclass(frozen=True)
class JsonDiff:
    values: int  # leaf pairs compared
    numbers: int  # numeric leaf pairs compared
    numbers_differing: int
    max_abs_diff: float | None  # None: infinite (a number too large for a float)
    max_rel_diff: float | None  # None: infinite (a difference against 0)
    first_number_difference: str | None
    structure_equal: bool
    first_structural_difference: str | None
    other_differences: int
    first_other_difference: str | None
    passes_tolerance: bool | None = None  # elementwise |a-b| <= atol + rtol*|b|, when asked
    integers_differing: int = 0  # of numbers_differing, pairs with an integer on either side

    @property
    def equal(self) -> bool:
        return self.structure_equal and not self.numbers_differing and not self.other_differences

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _reject_constant(name: str) -> Any:
    raise _NotJson(name)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _NotJson(f"duplicate key {key!r}")
        found[key] = value
    return found


def parse_container(data: bytes) -> dict[str, Any] | list[Any] | None:
    """The document, when `data` is a JSON object or array this module compares; else None."""
    if len(data) > MAX_BYTES:
        return None
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant,
                           object_pairs_hook=_no_duplicates)
    except (_NotJson, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict | list) else None


def _pointer(parent: str, key: str | int) -> str:
    return f"{parent}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _kind(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "literal"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _gap(a: int | float, b: int | float) -> tuple[float, float]:
    """(|a-b|, |a-b|/|b|) without overflow surprises: exact for integers, inf when too large."""
    try:
        difference = abs(a - b) if isinstance(a, int) and isinstance(b, int) else abs(
            float(a) - float(b))
        absolute = float(difference)
    except OverflowError:
        absolute = math.inf
    if absolute == 0:
        return 0.0, 0.0
    try:
        relative = absolute / abs(float(b)) if b != 0 else math.inf
    except OverflowError:
        relative = 0.0 if math.isfinite(absolute) else math.inf
    return absolute, relative


def compare_json(a: Any, b: Any, rtol: float | None = None,
                 atol: float | None = None) -> JsonDiff:
    """Compare two parsed documents (see the module's semantics); iterative, so depth is safe."""
    values = numbers = differing = others = integers = 0
    max_abs = max_rel = 0.0
    first_number = first_structure = first_other = None
    passes = True
    pending: list[tuple[str, Any, Any]] = [("", a, b)]
    while pending:
        path, x, y = pending.pop()
        kx, ky = _kind(x), _kind(y)
        if kx != ky:
            first_structure = first_structure or path or "/"
            continue
        if isinstance(x, dict):
            if x.keys() != y.keys():
                first_structure = first_structure or _pointer(
                    path, min(x.keys() ^ y.keys()))
            shared = sorted(x.keys() & y.keys(), reverse=True)
            pending.extend((_pointer(path, k), x[k], y[k]) for k in shared)
        elif isinstance(x, list):
            if len(x) != len(y):
                first_structure = first_structure or _pointer(path, min(len(x), len(y)))
            pending.extend((_pointer(path, i), x[i], y[i])
                           for i in reversed(range(min(len(x), len(y)))))
        elif kx == "number":
            values += 1
            numbers += 1
            if x == y:
                continue
            absolute, relative = _gap(x, y)
            differing += 1
            first_number = first_number or path
            max_abs, max_rel = max(max_abs, absolute), max(max_rel, relative)
            if isinstance(x, int) or isinstance(y, int):
                integers += 1
                passes = False
            elif rtol is not None or atol is not None:
                bound = (atol or 0.0) + (rtol or 0.0) * abs(float(y))
                passes = passes and absolute <= bound
        else:
            values += 1
            if x != y or type(x) is not type(y):
                others += 1
                first_other = first_other or path
    asked = rtol is not None or atol is not None
    return JsonDiff(
        values, numbers, differing,
        max_abs if math.isfinite(max_abs) else None,
        max_rel if math.isfinite(max_rel) else None,
        first_number, first_structure is None, first_structure, others, first_other,
        (passes and first_structure is None and not others) if asked else None,
        integers,
    )
