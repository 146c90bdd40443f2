"""Progress of a long run (rate, ETA) and its end summary: the one implementation.

Why one module: every long command (synth, extract-frames, compute-flow, train-copy's training
and embedding) reports the same way, so a user reads one format, e.g. ``[extract-frames] 12/40
sequences  1.3/s  412 frames/s  ETA 0:00:21 (1 failed)``, then a summary of what was done,
skipped (with why) and failed (file and reason).

The ETA is honest at the start: :class:`Meter` measures the rate from the FIRST completed item
on (start-up -- worker pools, imports, the first batch's warm-up -- is not work that repeats)
and says ``?`` until ``WARMUP_UPDATES`` more items and ``WARMUP_SECONDS`` of work lie behind
that, so an early guess from one item never prints as "ETA 378 s" for a 14 s job.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

#: An ETA needs this many completions after the first one ...
WARMUP_UPDATES = 2
#: ... and this much time measured since the first one.
WARMUP_SECONDS = 1.0


def clock(seconds: float) -> str:
    """``h:mm:ss``."""
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def eta(done: float, left: float, seconds: float) -> str:
    """``h:mm:ss`` to do ``left`` at the rate of ``done`` in ``seconds``; ``?`` until at least
    ``WARMUP_UPDATES + 1`` units and ``WARMUP_SECONDS`` lie behind (a stateless caller, e.g.
    the training loop, whose log lines come every few steps)."""
    if done < WARMUP_UPDATES + 1 or seconds < WARMUP_SECONDS:
        return "?"
    return clock(left * seconds / done)


class Meter:
    """Rate and ETA of an amount of work (items, frames, pairs, steps) towards ``total``."""

    def __init__(self, total: float, now: Callable[[], float] = time.perf_counter) -> None:
        self.total = total
        self._now = now
        self.start = now()
        self.amount = 0.0
        self._first: tuple[float, float] | None = None  # (time, amount) of the first completion
        self._updates = 0

    def update(self, amount: float) -> None:
        """The work done so far (cumulative)."""
        self.amount = float(amount)
        if self._first is None:
            if amount > 0:
                self._first = (self._now(), self.amount)
        else:
            self._updates += 1

    @property
    def elapsed(self) -> float:
        return self._now() - self.start

    def _measured(self) -> tuple[float, float] | None:
        """(work, seconds) since the first completion, once it is enough to judge a rate by."""
        if self._first is None or self._updates < WARMUP_UPDATES:
            return None
        seconds = self._now() - self._first[0]
        work = self.amount - self._first[1]
        return (work, seconds) if seconds >= WARMUP_SECONDS and work > 0 else None

    @property
    def rate(self) -> float:
        """Work per second: measured since the first completion when possible, else overall."""
        measured = self._measured()
        if measured:
            return measured[0] / measured[1]
        elapsed = self.elapsed
        return self.amount / elapsed if elapsed > 0 else 0.0

    def eta(self) -> str:
        """``h:mm:ss`` left, or ``?`` while the rate cannot be judged yet."""
        measured = self._measured()
        if measured is None:
            return "?" if self.amount < self.total else clock(0)
        return clock((self.total - self.amount) * measured[1] / measured[0])


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
    #: What ``frames`` counts (compute-flow: "pairs").
    work_unit: str = "frames"
    #: Work actually done when items share it (compute-flow: pairs through TV-L1, once for
    #: all the tracks of a video); None when every item did its own.
    computed: int | None = None

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        work = self.frames if self.computed is None else self.computed
        rate = work / self.seconds if self.seconds > 0 else 0.0
        amount = (f"{self.frames} {self.work_unit}" if self.computed is None else
                  f"{self.frames} {self.work_unit} stored, {self.computed} computed")
        per = self.work_unit if self.computed is None else f"computed {self.work_unit}"
        lines = [
            f"[{self.name}] done {len(self.done)}, skipped {len(self.skipped)}, "
            f"failed {len(self.failed)}, warnings {len(self.warnings)}; "
            f"{amount} in {self.seconds:.1f} s ({rate:.0f} {per}/s)"
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
        self.meter = Meter(total)

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
        item_rate = self.meter.rate
        frame_rate = self.summary.frames / elapsed
        eta = self.meter.eta()
        failed = f"  ({len(self.summary.failed)} failed)" if self.summary.failed else ""
        return (
            f"[{self.name}] {self._count}/{self.total} {self.unit}  {item_rate:.2f}/s  "
            f"{frame_rate:.0f} frames/s  ETA {eta}{failed}"
        )

    def _advance(self, frames: int) -> None:
        self._count += 1
        self.summary.frames += int(frames)
        self.meter.update(self._count)
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
