"""DSelect-k (Hazimeh et al., "DSelect-k: Differentiable Selection in the Mixture of Experts
with Applications to Multi-Task Learning", NeurIPS 2021), per-example gates.

n shared experts f_1..f_n (as in MMoE); task t's gate is a convex combination of k
*single-expert selectors*, each choosing one expert through m = ceil(log2 n) binary
variables relaxed by the smooth-step function (the paper's section 3):

    S(t) = 0 if t <= -gamma/2,  1 if t >= gamma/2,  -2 t^3 / gamma^3 + 3 t / (2 gamma) + 1/2
    r(z)_e = prod_j [S(z_j) if bit j of e is 1 else 1 - S(z_j)]            (e = 0..n-1)
    q_t(x) = sum_i softmax(w_t(x))_i r(z_t,i(x)) in R^n,     Z_t = sum_e q_t(x)_e f_e(x)

The logits are Dense layers of the gate input x (the experts' input, flattened; the
example-conditioned gate of the paper): z_t(x) in R^(k x m) and w_t(x) in R^k, named
`z_logits_<task>` and `w_logits_<task>`, initialised uniform in +-gamma/100 and +-0.05 (kernel
and bias) like the official code. Once every z is outside +-gamma/2 each selector is one-hot
and q_t has at most k non-zeros. Bit j is the j-th most significant (as `np.binary_repr`).

The regularizer (`regularizer(x, *, train)`, added by the trainer outside the task weighting)
is, per example and averaged over the batch,

    entropy_reg * sum_t sum_i H(r(z_t,i)),           H(p) = -sum_e p_e log p_e  (0 log 0 = 0)
  + sum_t sum_i (1 / sum_e r(z_t,i)_e - 1)           only when n is not a power of 2

The entropy pushes each selector to one expert (the paper's entropy regularization; exact
here, where the official code adds 1e-6 inside the log). When n < 2^m, codes n..2^m-1 name no
expert and a selector's mass on them is lost; the second term, from the official
implementation (with weight 1 as there, not scaled by entropy_reg), keeps the existing experts'
mass from vanishing. The official term is 1/sum, whose minimum is 1; the constant 1 is
subtracted here so that binary selectors on existing experts cost exactly 0 (the same
gradient). The official code sums over the batch, here it is the batch mean, so entropy_reg
does not depend on the batch size (official 1e-6 at batch B is about 1e-6 * B here). Every
task's selectors are penalised (LibMTL's port penalises the last task's only).

Hyper-parameters (`config.model.kwargs`): `num_experts` (n, default 8), `num_nonzeros` (k,
default 2, 1 <= k <= n), `gamma` (default 1.0, > 0), `entropy_reg` (default 0.001, >= 0).

Parameters: `backbone` and `experts` (stacked `[n, ...]`) are shared; `z_logits_<task>`,
`w_logits_<task>`, `head_<task>` belong to their task. `encode` -> {task: Z_t}; `gates` ->
{"gate_<task>": q_t(x), f32[B, n]}; `selectors` -> {task: (r, f32[B, k, n];
softmax(w), f32[B, k])}.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.models import experts
from mtl_jax.models.base import ModelSpec
from mtl_jax.tasks import Task

NUM_EXPERTS = 8
NUM_NONZEROS = 2
GAMMA = 1.0
ENTROPY_REG = 1e-3
W_INIT_SCALE = 0.05  # w-logits (kernel and bias) start uniform in +-W_INIT_SCALE
Z_INIT_FRACTION = 0.01  # z-logits start uniform in +-gamma * Z_INIT_FRACTION
MIN_REACHABLE = 1e-6  # floor of a selector's mass on existing experts in the 1/sum term


def smooth_step(t: jnp.ndarray, gamma: float = GAMMA) -> jnp.ndarray:
  """S(t): 0 below -gamma/2, 1 above gamma/2, the cubic -2t^3/gamma^3 + 3t/(2 gamma) + 1/2
  between (continuously differentiable)."""
  cubic = -2.0 / gamma ** 3 * t ** 3 + 1.5 / gamma * t + 0.5
  return jnp.where(t <= -gamma / 2, 0.0, jnp.where(t >= gamma / 2, 1.0, cubic))


def binary_codes(num_experts: int) -> np.ndarray:
  """bool[n, m]: row e is e in binary, most significant bit first (m = ceil(log2 n))."""
  width = num_binary(num_experts)
  return np.array([[bit == "1" for bit in np.binary_repr(e, width=width)] if width else []
                   for e in range(num_experts)], dtype=bool).reshape(num_experts, width)


def num_binary(num_experts: int) -> int:
  """m = ceil(log2 n): the binary variables of one single-expert selector."""
  return math.ceil(math.log2(num_experts)) if num_experts > 1 else 0


def selector_outputs(z: jnp.ndarray, codes: np.ndarray, gamma: float) -> jnp.ndarray:
  """r: f32[..., n] from z-logits f32[..., m]: prod_j S(z_j) or 1 - S(z_j) by expert e's
  bits."""
  s = smooth_step(z, gamma)[..., None, :]  # [..., 1, m]
  return jnp.prod(jnp.where(codes, s, 1.0 - s), axis=-1)


def _uniform(scale: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -scale, scale)
  return init


def _entropy(p: jnp.ndarray) -> jnp.ndarray:
  """-sum p log p over the last axis, 0 log 0 = 0 (and a zero gradient there)."""
  return -jnp.sum(p * jnp.log(jnp.where(p > 0, p, 1.0)), axis=-1)


class DSelectK(experts.MixtureModel):
  """DSelect-k (see the module docstring): n shared experts, k smooth-step selectors per
  task."""
  num_experts: int = NUM_EXPERTS
  num_nonzeros: int = NUM_NONZEROS
  gamma: float = GAMMA
  entropy_reg: float = ENTROPY_REG

  def regularizer(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
    """f32[]: the entropy of the selectors and, for n not a power of 2, the term keeping them
    on existing experts (the module docstring), averaged over the batch."""
    return self._forward(x, None, train, "regularizer")

  def selectors(self, x: jnp.ndarray, *, train: bool = False) -> dict:
    """{task: (r, softmax(w))}: each of the k selectors' outputs f32[B, k, n] and weights
    f32[B, k]."""
    return self._forward(x, None, train, "selectors")

  def _selectors(self, g_in: jnp.ndarray, task: Task):
    k, m = self.num_nonzeros, num_binary(self.num_experts)
    w = nn.Dense(k, kernel_init=_uniform(W_INIT_SCALE), bias_init=_uniform(W_INIT_SCALE),
                 name=f"w_logits_{task.name}")(g_in)
    if m == 0:  # one expert: every selector chooses it
      r = jnp.ones((g_in.shape[0], k, 1), g_in.dtype)
    else:
      z_init = _uniform(self.gamma * Z_INIT_FRACTION)
      z = nn.Dense(k * m, kernel_init=z_init, bias_init=z_init,
                   name=f"z_logits_{task.name}")(g_in).reshape(-1, k, m)
      r = selector_outputs(z, binary_codes(self.num_experts), self.gamma)
    return r, nn.softmax(w, axis=-1)

  def _route(self, h: jnp.ndarray, *, train: bool, part: str):
    g_in = experts.gate_input(h)
    sel = {t.name: self._selectors(g_in, t) for t in self.tasks}
    if part == "selectors":
      return sel
    if part == "regularizer":
      return self._penalty(sel)
    gates = {f"gate_{t}": jnp.einsum("bk,bkn->bn", w, r) for t, (r, w) in sel.items()}
    if part == "gates":
      return gates
    f = self.bank(self.num_experts, train=train, name=experts.EXPERTS)(h)
    return {t.name: experts.mix(gates[f"gate_{t.name}"], f) for t in self.tasks}

  def _penalty(self, sel: dict) -> jnp.ndarray:
    total = 0.0
    power_of_2 = self.num_experts == 2 ** num_binary(self.num_experts)
    for r, _ in sel.values():
      per_example = self.entropy_reg * _entropy(r).sum(axis=-1)  # [B]
      if not power_of_2:
        reachable = jnp.maximum(r.sum(axis=-1), MIN_REACHABLE)  # [B, k]
        per_example = per_example + (1.0 / reachable - 1.0).sum(axis=-1)
      total = total + per_example.mean()
    return jnp.asarray(total, jnp.float32)


def make(tasks: Sequence[Task], spec: ModelSpec, *, num_experts: int = NUM_EXPERTS,
         num_nonzeros: int = NUM_NONZEROS, gamma: float = GAMMA,
         entropy_reg: float = ENTROPY_REG) -> DSelectK:
  """The registry's factory (`config.model.name = "dselect_k"`).

  Raises:
    ValueError: naming the bad hyper-parameter (num_experts < 1, num_nonzeros outside
      [1, num_experts], gamma <= 0, entropy_reg < 0).
  """
  num_experts = experts.check_count("dselect_k", "num_experts", num_experts, minimum=1)
  num_nonzeros = experts.check_count("dselect_k", "num_nonzeros", num_nonzeros, minimum=1)
  if num_nonzeros > num_experts:
    raise ValueError(f"model 'dselect_k': num_nonzeros (k = {num_nonzeros}) must be at most "
                     f"num_experts ({num_experts})")
  gamma = _real("gamma", gamma)
  if not gamma > 0:
    raise ValueError(f"model 'dselect_k': gamma must be > 0, got {gamma!r}")
  entropy_reg = _real("entropy_reg", entropy_reg)
  if not entropy_reg >= 0:
    raise ValueError(f"model 'dselect_k': entropy_reg must be >= 0, got {entropy_reg!r}")
  return DSelectK(**experts.model_fields(tasks, spec), num_experts=num_experts,
                  num_nonzeros=num_nonzeros, gamma=gamma, entropy_reg=entropy_reg)


def _real(key: str, value) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise ValueError(f"model 'dselect_k': {key} must be a finite number, got {value!r}")
  return float(value)
