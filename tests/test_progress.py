"""The progress display: what its line says, live on a terminal, plain lines elsewhere."""

import io

import pytest

from mtl_jax import progress


class Clock:
  """A clock the test moves by hand."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_the_line_gives_step_and_epoch_of_total_rate_eta_and_losses():
  line = progress.status_line(500, 2000, 10, 250.0, {"digit": 0.2, "parity": 0.1})
  assert line == ("step  500/2000 (epoch 51/200) | 250 steps/s | ETA 6s | "
                  "loss 0.15 (digit 0.2, parity 0.1)")


def test_many_tasks_are_counted_not_listed():
  text = progress.format_losses({f"attr_{i}": 1.0 for i in range(40)})
  assert text == "loss 1 (attr_0 1, attr_1 1, attr_2 1, attr_3 1, +36 more)"


@pytest.mark.parametrize("seconds, text", [(42.4, "42s"), (185, "3m05s"), (7620, "2h07m")])
def test_durations_are_short(seconds, text):
  assert progress.format_duration(seconds) == text


def test_the_rate_leaves_out_the_first_dispatch_which_compiles():
  clock, out = Clock(), io.StringIO()
  display = progress.Progress(1000, plain_every=100, stream=out, clock=clock)
  clock.now = 30.0  # the first dispatch: 30 s of compilation for 100 steps
  display.update(100, {"a": 1.0})
  assert "steps/s" not in out.getvalue()  # nothing to measure a rate on yet
  clock.now = 31.0
  display.update(200, {"a": 0.5})
  assert display.rate(200) == pytest.approx(100.0)
  assert out.getvalue().splitlines()[-1].startswith("step  200/1000 | 100 steps/s | ETA 8s")


def test_plain_lines_come_every_plain_every_steps_and_at_the_end():
  clock, out = Clock(), io.StringIO()
  display = progress.Progress(120, plain_every=50, stream=out, clock=clock)
  for step in range(10, 121, 10):
    clock.now += 1.0
    display.update(step, {"a": 1.0})
  assert [line.split("|")[0].strip() for line in out.getvalue().splitlines()] == [
      "step  50/120", "step 100/120", "step 120/120"]
  assert "\r" not in out.getvalue()


def test_the_live_line_is_redrawn_in_place_and_announcements_go_above_it():
  clock, out = Clock(), io.StringIO()
  display = progress.Progress(100, stream=out, live=True, clock=clock)
  display.update(50, {"a": 1.0})
  display.announce("val at step 50: a accuracy 0.9")
  clock.now = 1.0
  display.update(100, {"a": 0.5})
  display.close()
  text = out.getvalue()
  assert text.count("\r\x1b[K") == 4  # draw, clear, redraw after the announcement, draw
  assert "\r\x1b[Kval at step 50: a accuracy 0.9\n\r\x1b[Kstep  50/100" in text
  assert text.endswith("done | loss 0.5 (a 0.5)\n")


def test_other_processes_and_files_get_plain_prefixed_lines():
  assert not progress.for_process(10, steps_per_epoch=0, plain_every=1, process_index=0,
                                  process_count=1, stream=io.StringIO()).live
  other = progress.for_process(10, steps_per_epoch=0, plain_every=1, process_index=1,
                               process_count=2, stream=io.StringIO())
  assert not other.live and other.prefix == "process 1/2: "
