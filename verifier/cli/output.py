"""Printing, shared by every command: lines escaped for a terminal, JSON, one-sentence errors
with their exit codes, and the progress bar.
"""

# No `from __future__ import annotations` here: typer would then evaluate every annotation
# string of every command on each run, about 20 ms of a command's start-up.
import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import typer

from verifier.errors import VerifierError


def _emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _say(line: str) -> None:
    """Print one line of output. File names, step names and every other string an input put
    in it are escaped (verifier.formats.terminal), so no input can move the cursor, forge a line or
    fail to encode on a strict UTF-8 stream; --json output is escaped by the JSON encoder."""
    from verifier.formats.terminal import clean

    print(clean(line))


def _fail(error: VerifierError, as_json: bool) -> NoReturn:
    from verifier.formats.terminal import clean

    if as_json:
        _emit_json({"error": str(error), "exit_code": error.exit_code})
    else:
        sys.stderr.write(f"error: {clean(str(error))}\n")
    raise typer.Exit(error.exit_code)


def _guard(as_json: bool, action: Callable[[], int | None]) -> None:
    """Run a command body: library errors become one sentence and an exit code."""
    try:
        code = action()
    except VerifierError as error:
        _fail(error, as_json)
    except KeyboardInterrupt as interruption:
        sys.stderr.write("interrupted; nothing was written.\n")
        raise typer.Exit(128 + getattr(interruption, "signal_number", 2)) from None
    raise typer.Exit(code or 0)


class _Progress:
    """A one-line progress bar on stderr with bytes per second and time left, on a terminal only.

    Each batch the hasher announces (`expect`) gets its own bar, drawn once the batch is large
    (64 MiB) or has taken half a second, and wiped when the batch is done, so that the output of
    a recorded or rebuilt command never lands on a half-drawn bar.
    """

    LARGE = 64 * 1024 * 1024
    DELAY_S = 0.5

    def __init__(self, label: str, enabled: bool) -> None:
        import threading
        import time

        self._label = label
        self._enabled = enabled and sys.stderr.isatty()
        self._lock = threading.Lock()
        self._time = time.monotonic
        self._total = self._done = 0
        self._start = self._last = 0.0
        self._shown = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    def expect(self, total: int) -> None:
        with self._lock:
            self._total, self._done = total, 0
            self._start, self._last = self._time(), 0.0

    def advance(self, count: int) -> None:
        if not self._enabled or self._total <= 0:
            return
        with self._lock:
            self._done += count
            now = self._time()
            if self._done >= self._total:
                self._wipe()
                return
            elapsed = now - self._start
            if not self._shown and self._total < self.LARGE and elapsed < self.DELAY_S:
                return
            if now - self._last < 0.2:
                return
            self._last = now
            rate = self._done / max(elapsed, 1e-6)
            left = (self._total - self._done) / rate if rate else 0.0
            width = 24
            filled = int(width * self._done / self._total)
            sys.stderr.write(
                f"\r{self._label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self._done / 1e9:5.2f}/{self._total / 1e9:.2f} GB "
                f"{rate / 1e9:5.2f} GB/s {left:4.0f}s left "
            )
            sys.stderr.flush()
            self._shown = True

    def _wipe(self) -> None:
        if self._shown:
            sys.stderr.write("\r" + " " * 79 + "\r")
            sys.stderr.flush()
            self._shown = False

    def close(self) -> None:
        with self._lock:
            self._wipe()


def _hasher_with_progress(quiet: bool, label: str, algorithms: tuple[str, ...] = ("sha256",)
                          ) -> tuple[Any, _Progress]:
    """A hasher whose batches draw a progress bar (unless --quiet or not on a terminal)."""
    from verifier.formats.digest import Hasher

    progress = _Progress(label, not quiet)
    if not progress.enabled:
        return Hasher(algorithms=algorithms), progress
    hasher = Hasher(progress=progress.advance, on_total=progress.expect, algorithms=algorithms)
    return hasher, progress


def _warn(warnings: list[str | None]) -> None:
    from verifier.formats.terminal import clean

    for warning in warnings:
        if warning:
            sys.stderr.write(f"warning: {clean(warning)}\n")


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _print_fetched(reference: Any, fetched: Any) -> None:
    if reference.digest is None:
        _say(f"resolved {reference} to {fetched.digest}")
    cached = fetched.bytes - fetched.fetched_bytes
    _say(f"fetched {fetched.reference}: {fetched.files} file(s), {_size(fetched.bytes)}"
          f"{f' ({_size(cached)} from the cache, re-checked)' if cached else ''}; "
          f"{len(fetched.referrers)} attestation(s) via the {fetched.discovery}")
    for note in fetched.notes:
        _say(f"  note: {note}")
