"""Environment drift in the order a reader needs it: what usually changes numbers first.

A rebuild's drift list (every environment field that differs from the record) is sorted by
field name when it is made; shown that way, `packages.*` (hundreds of them) push the few fields
that explain a difference out of sight. `order_drift` puts first the packages the step itself
imports (a tokenizers 0.23 -> 0.19 change beside anyio, click and h11 is the likely cause), then
the interpreter, torch, CUDA and its libraries, BLAS, thread counts and determinism flags, then
the machine (platform, other variables) and, last, the long tail of packages; the order within
a group stays by name. What a step imports is read from its own code (`imported_modules`): a
package it never imports can only matter through one it does.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Any

# Import names whose distribution is called otherwise (`import yaml` comes from PyYAML).
_DISTRIBUTIONS = {"yaml": "pyyaml", "sklearn": "scikit-learn", "pil": "pillow",
                  "cv2": "opencv-python", "bs4": "beautifulsoup4", "attr": "attrs",
                  "dateutil": "python-dateutil", "skimage": "scikit-image", "jwt": "pyjwt",
                  "google": "protobuf", "git": "gitpython", "fitz": "pymupdf"}


def imported_modules(sources: Iterable[str]) -> set[str]:
    """The top-level modules the Python sources import (`import a.b`, `from a import b`); a
    source that does not parse names none (it is a stranger's file, so nothing is run)."""
    found: set[str] = set()
    for text in sources:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_package(field: str, imported: frozenset[str]) -> bool:
    if not field.startswith("packages.") or not imported:
        return False
    name = _normal(field[len("packages."):])
    return any(name in (_normal(m), _DISTRIBUTIONS.get(m.lower(), "")) for m in imported)

_THREADS = ("THREADS",)
_DETERMINISM = ("deterministic", "benchmark", "tf32", "CUBLAS_WORKSPACE_CONFIG",
                "PYTHONHASHSEED", "CUDA_LAUNCH_BLOCKING")
_BLAS = ("blas", "mkl", "lapack", "accelerate", "veclib")
_CUDA = ("cuda", "cudnn", "gpus", "devices", "nccl", "nvidia")


def _rank(field: str) -> int:
    lower = field.lower()
    head = field.split(".", 1)[0]
    if head == "python":
        return 0
    if field == "torch.version":
        return 1
    if any(word in lower for word in _DETERMINISM[:3]) or any(
            word in field for word in _DETERMINISM[3:]):
        return 5
    if head == "packages":
        name = lower[len("packages."):]
        if name in ("torch", "numpy", "jax", "jaxlib", "tensorflow"):
            return 1
        if any(word in name for word in _BLAS):
            return 3
        if any(word in name for word in _CUDA):
            return 2
        return 8
    if head in ("gpus",) or (head == "torch" and any(word in lower for word in _CUDA)):
        return 2
    if any(word in lower for word in _BLAS):
        return 3
    if any(word in field for word in _THREADS) or field in ("torch.threads", "cpu.count"):
        return 4
    if head in ("platform", "cpu"):
        return 6
    if head == "variables":
        return 7
    return 6


def order_drift(changes: list[dict[str, Any]] | tuple[dict[str, Any], ...],
                imported: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The drift entries, what usually matters first (see the module), the packages among
    `imported` (module names the step imports) before all; stable by field name."""
    modules = frozenset(imported)
    return sorted(changes, key=lambda c: (
        -1 if _imported_package(str(c.get("field", "")), modules)
        else _rank(str(c.get("field", ""))), str(c.get("field", ""))))


def describe_change(change: dict[str, Any], imported: Iterable[str] = ()) -> str:
    """One drift entry as a phrase: `packages.tokenizers: recorded '0.23.0', now '0.19.0'
    (imported by the step)`. Values come from a signed file that may be a stranger's: each is
    cut short."""
    field = str(change.get("field", ""))
    recorded, current = (_brief(repr(change.get(k))) for k in ("recorded", "current"))
    mark = (" (imported by the step)" if _imported_package(field, frozenset(imported))
            else "")
    return f"{_brief(field)}: recorded {recorded}, now {current}{mark}"


def likely_cause(changes: list[dict[str, Any]] | tuple[dict[str, Any], ...],
                 imported: Iterable[str] = ()) -> str | None:
    """The first drift entry in that order, as a phrase; None without drift."""
    modules = tuple(imported)
    ordered = order_drift(changes, modules)
    return describe_change(ordered[0], modules) if ordered else None


def _brief(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"
