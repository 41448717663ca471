"""Multi-gate Mixture-of-Experts (Ma et al., KDD 2018). (Being written: issue 10.)"""

from __future__ import annotations


def make(tasks, spec, **hyperparameters):
  raise NotImplementedError("model 'mmoe' is being written (issue 10)")
