"""What a run shows while it trains: a progress line with step, epoch, rate, ETA and losses.

On a terminal (process 0, stdout a tty) the line is redrawn in place, as Keras, Lightning and
tqdm do; elsewhere (a file, CI, the other processes of a multi-process run) it is printed as a
plain line every `plain_every` steps. The rate leaves out the first dispatch, which compiles
the step, and `announce` names the long silent phases ("compiling...") between updates.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Mapping, TextIO

LOSSES_SHOWN = 4      # tasks named on the line; the rest are counted
REDRAW_SECONDS = 0.1  # the live line is redrawn at most this often


def format_duration(seconds: float) -> str:
  """"42s", "3m05s", "2h07m": short, for an ETA."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_losses(losses: Mapping[str, float], shown: int = LOSSES_SHOWN) -> str:
  """"loss 0.123 (digit 0.2, parity 0.05)": the mean task loss, then the first `shown` tasks."""
  if not losses:
    return ""
  mean = sum(losses.values()) / len(losses)
  parts = [f"{name} {value:.3g}" for name, value in list(losses.items())[:shown]]
  if len(losses) > shown:
    parts.append(f"+{len(losses) - shown} more")
  return f"loss {mean:.3g} ({', '.join(parts)})"


def status_line(step: int, total: int, steps_per_epoch: int, rate: float | None,
                losses: Mapping[str, float]) -> str:
  """"step 500/2000 (epoch 51/203) | 1,850 steps/s | ETA 1s | loss ...": rate None while the
  first (compiling) dispatch is all there is to measure."""
  width = len(str(total))
  parts = [f"step {step:>{width}d}/{total}"]
  if steps_per_epoch > 0:
    epochs = -(-total // steps_per_epoch)
    parts[0] += f" (epoch {min(step // steps_per_epoch + 1, epochs)}/{epochs})"
  if rate:
    parts.append(f"{rate:,.1f} steps/s" if rate < 100 else f"{rate:,.0f} steps/s")
    parts.append("done" if step >= total else f"ETA {format_duration((total - step) / rate)}")
  if losses:
    parts.append(format_losses(losses))
  return " | ".join(parts)


class Progress:
  """The progress display of a run up to step `total`.

  live: redraw one line in place (a terminal); else print a plain line every `plain_every`
  steps and at the end. prefix: put before every line ("process 1/2: ").
  """

  def __init__(self, total: int, *, steps_per_epoch: int = 0, plain_every: int = 1,
               live: bool = False, prefix: str = "", stream: TextIO | None = None,
               clock=time.perf_counter):
    self.total, self.steps_per_epoch, self.plain_every = total, steps_per_epoch, plain_every
    self.live, self.prefix = live, prefix
    self._stream = stream if stream is not None else sys.stdout
    self._clock = clock
    self._origin: tuple[int, float] | None = None  # (step, time) after the first dispatch
    self._shown = ""        # the live line on screen ("" if none)
    self._drawn_at = -1.0e9

  def rate(self, step: int) -> float | None:
    """Steps per second since the end of the first dispatch (None before a second one)."""
    if self._origin is None or step <= self._origin[0]:
      return None
    return (step - self._origin[0]) / max(self._clock() - self._origin[1], 1e-9)

  def update(self, step: int, losses: Mapping[str, float]) -> None:
    """After each dispatch: `losses` are its mean per-task training losses."""
    if self._origin is None:
      self._origin = (step, self._clock())
    line = self.prefix + status_line(step, self.total, self.steps_per_epoch, self.rate(step),
                                     losses)
    if self.live:
      now = self._clock()
      if now - self._drawn_at >= REDRAW_SECONDS or step >= self.total:
        self._draw(line)
        self._drawn_at = now
    elif step % self.plain_every == 0 or step >= self.total:
      self._print(line)

  def announce(self, message: str) -> None:
    """A line of its own above the live line (which is redrawn after it)."""
    shown = self._shown
    self._clear()
    self._print(self.prefix + message)
    if shown:
      self._draw(shown)

  def close(self) -> None:
    """Ends the live line, leaving its last state on screen."""
    if self._shown:
      self._stream.write("\n")
      self._stream.flush()
      self._shown = ""

  def _draw(self, line: str) -> None:
    width = shutil.get_terminal_size((120, 24)).columns - 1
    line = line if len(line) <= width else line[:width - 1] + "…"
    self._stream.write("\r\x1b[K" + line)
    self._stream.flush()
    self._shown = line

  def _clear(self) -> None:
    if self._shown:
      self._stream.write("\r\x1b[K")
      self._shown = ""

  def _print(self, line: str) -> None:
    self._stream.write(line + "\n")
    self._stream.flush()


def for_process(total: int, *, steps_per_epoch: int, plain_every: int,
                process_index: int, process_count: int, stream: TextIO | None = None
                ) -> Progress:
  """The display a process shows: live on process 0's terminal, plain lines otherwise."""
  stream = stream if stream is not None else sys.stdout
  live = process_index == 0 and stream.isatty()
  prefix = f"process {process_index}/{process_count}: " if process_index > 0 else ""
  return Progress(total, steps_per_epoch=steps_per_epoch, plain_every=plain_every,
                  live=live, prefix=prefix, stream=stream)
