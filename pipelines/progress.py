"""Progress of a long run and its end summary, printed to stderr.

Why its own module: every pipeline (extract-frames, compute-flow) reports the same way, so a
user reads one format: ``[extract-frames] 12/40 sequences  1.3 seq/s  412 frames/s  ETA 0:00:21
(1 failed)``, then a summary of what was done, skipped (with why) and failed (file and reason).

Usage::

    progress = Progress("extract-frames", total=len(todo), unit="sequences")
    progress.skip("001-bkgrd-090", "not a sequence: empty-scene clip")
    for result in results:
        progress.done(seq_id, frames=n)                 # or .failed(seq_id, source, reason)
    summary = progress.finish()                          # prints the summary, returns it
    sys.exit(0 if summary.ok else 1)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO


@dataclass(frozen=True)
class Failure:
    item: str
    source: str
    reason: str


@dataclass
class Summary:
    """What a run did; ``ok`` is False when anything failed (the exit code follows it)."""

    name: str
    done: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = [
            f"[{self.name}] done {len(self.done)}, skipped {len(self.skipped)}, "
            f"failed {len(self.failed)}, warnings {len(self.warnings)}; "
            f"{self.frames} frames in {self.seconds:.1f} s ({rate:.0f} frames/s)"
        ]
        lines += _skipped_lines(self.skipped)
        lines += [f"  warning {item}: {why}" for item, why in self.warnings]
        lines += [f"  FAILED  {f.item} ({f.source}): {f.reason}" for f in self.failed]
        return "\n".join(lines)


class Progress:
    """Counts finished items and frames; prints a rate line at most every ``interval`` s."""

    def __init__(
        self, name: str, total: int, unit: str = "items", stream: TextIO | None = None,
        interval: float = 2.0,
    ):
        self.name, self.total, self.unit = name, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.summary = Summary(name)
        self._start = time.perf_counter()
        self._last_print = -float("inf")
        self._count = 0
        self._printed_at_count = -1

    # ------------------------------------------------------------------ events
    def done(self, item: str, frames: int = 0, warning: str | None = None) -> None:
        """An item finished (possibly with a warning that the summary lists)."""
        self.summary.done.append(item)
        if warning:
            self.summary.warnings.append((item, warning))
        self._advance(frames)

    def failed(self, item: str, source: str, reason: str, frames: int = 0) -> None:
        self.summary.failed.append(Failure(item, source, reason))
        self._advance(frames)

    def skip(self, item: str, reason: str) -> None:
        """An item not attempted (already done, unparsable name); not counted in ``total``."""
        self.summary.skipped.append((item, reason))

    def finish(self) -> Summary:
        """Print the last rate line and the summary; return the summary."""
        self.summary.seconds = time.perf_counter() - self._start
        if self.total and self._printed_at_count != self._count:
            self._print_line()
        print(self.summary.format(), file=self.stream, flush=True)
        return self.summary

    # ------------------------------------------------------------------ rates
    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def line(self) -> str:
        """The current rate line: items/s, frames/s, ETA."""
        elapsed = max(self.elapsed, 1e-9)
        item_rate = self._count / elapsed
        frame_rate = self.summary.frames / elapsed
        left = self.total - self._count
        eta = _clock(left / item_rate) if item_rate > 0 else "?"
        failed = f"  ({len(self.summary.failed)} failed)" if self.summary.failed else ""
        return (
            f"[{self.name}] {self._count}/{self.total} {self.unit}  {item_rate:.2f}/s  "
            f"{frame_rate:.0f} frames/s  ETA {eta}{failed}"
        )

    def _advance(self, frames: int) -> None:
        self._count += 1
        self.summary.frames += int(frames)
        now = time.perf_counter()
        if now - self._last_print >= self.interval or self._count == self.total:
            self._print_line(now)

    def _print_line(self, now: float | None = None) -> None:
        self._last_print = now if now is not None else time.perf_counter()
        self._printed_at_count = self._count
        print(self.line(), file=self.stream, flush=True)


def _skipped_lines(skipped: list[tuple[str, str]], listed: int = 3) -> list[str]:
    """One line per skipped item, except a reason shared by many ("already in the store")."""
    by_reason: dict[str, list[str]] = {}
    for item, why in skipped:
        by_reason.setdefault(why, []).append(item)
    lines = []
    for why, items in by_reason.items():
        if len(items) > listed:
            lines.append(f"  skipped {len(items)} items: {why} ({', '.join(items[:listed])}, ...)")
        else:
            lines += [f"  skipped {item}: {why}" for item in items]
    return lines


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
