"""Learning to Branch (Guo et al., ICML 2020). (Being written: issue 10.)"""

from __future__ import annotations


def make(tasks, spec, **hyperparameters):
  raise NotImplementedError("model 'ltb' is being written (issue 10)")
