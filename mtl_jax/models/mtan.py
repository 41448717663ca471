"""Multi-Task Attention Network (Liu et al., CVPR 2019). (Being written: issue 10.)"""

from __future__ import annotations


def make(tasks, spec, **hyperparameters):
  raise NotImplementedError("model 'mtan' is being written (issue 10)")
