"""What `pyloader convert` shows: a progress bar while it runs (stderr) and the summary table after (stdout)."""

from __future__ import annotations

import os
import sys
import time

__all__ = ["ProgressBar", "summary_table", "cli_reason"]


def cli_reason(reason: str) -> str:
    """pyloader.convert's reasons, with its keyword arguments named as the command line spells them."""
    return reason.replace("(use overwrite)", "(use --overwrite)")


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class ProgressBar:
    """Checkpoints done, MB/s and time left: a redrawn bar on a terminal, one plain line per checkpoint
    otherwise. The rate counts conversions alone: skipped and failed sources are left out, and the framework import
    (Result.seconds leaves it out); from the second conversion on, the first one (which carries a template export
    in bulk) is left out too."""

    def __init__(self, stream=None, tty=None, width=30):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.width = width
        self.t0 = time.monotonic()
        self.drawn = False  # a bar line is open on the terminal
        self.first = None  # when the first conversion ended
        self.measured = 0  # bytes converted since then
        self.skipped = 0  # bytes of sources not converted (skipped, failed): out of the estimate

    def _rate_left(self, result, bytes_done, bytes_total) -> tuple:
        now = time.monotonic()
        if result.status != "converted":
            self.skipped += result.bytes
        elif self.first is None:
            self.first = now
        else:
            self.measured += result.bytes
        span = now - self.first if self.first is not None else 0.0
        if self.measured > 0 and span > 0:
            rate = self.measured / span
        elif result.status == "converted" and result.seconds > 0:  # the first conversion: its own time
            rate = result.bytes / result.seconds
        else:
            return None, None
        return rate, max(bytes_total - bytes_done, 0) / rate

    def __call__(self, result, done, total, bytes_done, bytes_total):
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate, left = self._rate_left(result, bytes_done, bytes_total)
        speed = "-- MB/s --:-- left" if rate is None else f"{rate / 1e6:.1f} MB/s {_fmt_time(left)} left"
        name = os.path.basename(result.source)
        if self.tty:
            frac = done / total if total else 1.0
            fill = int(round(frac * self.width))
            bar = "#" * fill + "-" * (self.width - fill)
            line = f"{done}/{total} {speed} [{bar}] {_fmt_time(elapsed)} elapsed, {result.status} {name}"
            cols = 120
            try:
                cols = os.get_terminal_size(self.stream.fileno()).columns
            except (OSError, ValueError, AttributeError):
                pass
            self.stream.write("\r\x1b[K" + line[: max(cols - 1, 20)])
            self.drawn = done != total
            if not self.drawn:
                self.stream.write("\n")
        else:
            # a failure's reason is printed once, after the run (and in the summary table)
            extra = f" -> {result.output}" if result.status == "converted" else ""
            self.stream.write(f"pyloader: [{done}/{total}] {result.status} {result.source}{extra} "
                              f"({result.seconds:.1f} s; {speed})\n")
        self.stream.flush()

    def end(self) -> None:
        """End the bar's line where the run stopped before its last checkpoint."""
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


def summary_table(results) -> str:
    rows = [("STATUS", "SOURCE", "OUTPUT / REASON", "TIME")]
    for r in results:
        what = r.output if r.status == "converted" else (r.reason if r.status in ("failed", "interrupted")
                                                          else f"{r.output}: {r.reason}")
        if getattr(r, "verify", None) is not None:  # --verify: max relative difference of the written output
            what = f"{what} (verified: max rel diff {r.verify:.2g})"
        rows.append((r.status, r.source, " ".join(str(what).split()), f"{r.seconds:.1f} s"))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w3 = max(len(r[3]) for r in rows)
    lines = [f"{a:<{w0}}  {b:<{w1}}  {d:>{w3}}  {c}" for a, b, c, d in rows]
    counts = {s: sum(r.status == s for r in results) for s in ("converted", "skipped", "failed", "interrupted")}
    lines.append(f"{counts['converted']} converted, {counts['skipped']} skipped, {counts['failed']} failed"
                 + (f", {counts['interrupted']} not finished (interrupted)" if counts["interrupted"] else ""))
    return "\n".join(lines)
