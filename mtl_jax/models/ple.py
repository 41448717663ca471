"""Progressive Layered Extraction (Tang et al., RecSys 2020). (Being written: issue 10.)"""

from __future__ import annotations


def make(tasks, spec, **hyperparameters):
  raise NotImplementedError("model 'ple' is being written (issue 10)")
