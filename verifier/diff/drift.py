"""Environment drift in the order a reader needs it: what usually changes numbers first.

A rebuild's drift list (every environment field that differs from the record) is sorted by
field name when it is made; shown that way, `packages.*` (hundreds of them) push the few fields
that explain a difference out of sight. `order_drift` puts the interpreter, torch, CUDA and its
libraries, BLAS, thread counts and determinism flags first, then the platform, other variables
and, last, the long tail of packages; the order within a group stays by name.
"""

from __future__ import annotations

from typing import Any

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


def order_drift(changes: list[dict[str, Any]] | tuple[dict[str, Any], ...]
                ) -> list[dict[str, Any]]:
    """The drift entries, what usually matters first (see the module); stable by field name."""
    return sorted(changes, key=lambda c: (_rank(str(c.get("field", ""))),
                                          str(c.get("field", ""))))
