"""DSelect-k gates (Hazimeh et al., NeurIPS 2021). (Being written: issue 10.)"""

from __future__ import annotations


def make(tasks, spec, **hyperparameters):
  raise NotImplementedError("model 'dselect_k' is being written (issue 10)")
