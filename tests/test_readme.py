"""The README's standalone weighting example runs as written."""

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _block_after(text: str, marker: str) -> str:
  """The first ```python block after `marker` in the README."""
  start = text.index(marker)
  return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


@pytest.mark.slow
def test_the_weighting_in_your_own_train_step_example_runs(capsys):
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    code = _block_after(f.read(), "A method works inside your own JAX train step too")
  exec(compile(code, "README.md", "exec"), {})  # pylint: disable=exec-used
  losses = [float(v) for v in capsys.readouterr().out.strip(" []\n").split()]
  assert losses == pytest.approx([0.1443, 1.5005], abs=2e-3)  # as the README says
