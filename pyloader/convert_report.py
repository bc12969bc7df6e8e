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
    otherwise."""

    def __init__(self, stream=None, tty=None, width=30):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.width = width
        self.t0 = time.monotonic()
        self.drawn = False  # a bar line is open on the terminal

    def __call__(self, result, done, total, bytes_done, bytes_total):
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = bytes_done / elapsed
        left = (bytes_total - bytes_done) / rate if rate > 0 else 0.0
        name = os.path.basename(result.source)
        if self.tty:
            frac = done / total if total else 1.0
            fill = int(round(frac * self.width))
            bar = "#" * fill + "-" * (self.width - fill)
            line = (f"{done}/{total} {rate / 1e6:.1f} MB/s {_fmt_time(left)} left [{bar}] "
                    f"{_fmt_time(elapsed)} elapsed, {result.status} {name}")
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
            extra = f" -> {result.output}" if result.status == "converted" else f": {cli_reason(result.reason)}"
            self.stream.write(f"pyloader: [{done}/{total}] {result.status} {result.source}{extra} "
                              f"({result.seconds:.1f} s; {rate / 1e6:.1f} MB/s, {_fmt_time(left)} left)\n")
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
