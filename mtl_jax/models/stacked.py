"""N copies of one module with stacked parameters, evaluated batched or as an unrolled loop.

Expert banks (`experts.expert_bank`: MMoE, CGC, PLE, DSelect-k), the tree nodes of Learning to
Branch (`ltb`), the columns of cross-stitch networks (`cross_stitch`) and MTAN's attention
modules (`mtan`) all evaluate N modules of the same shape, each with its own parameters. They
run in one of two ways, chosen when the model is traced:

- batched, `jax.vmap` / `nn.vmap` over the members: one large operation per layer. Right for
  Dense layers (one batched matmul) and on accelerators; the default, and always for vectors;
- an unrolled loop over the members, one operation per member and layer: on the CPU backend
  (`jax.default_backend() == "cpu"`) when a member's input is an image [B, H, W, C]. There a
  vmapped convolution becomes a batched (grouped) convolution, which XLA:CPU runs very slowly:
  a 3x3 conv's forward and backward, batch 32, N = 2, took 600 / 160 / 110 ms on 32x32x64 /
  8x8x256 / 4x4x512 maps vmapped, against 63 / 35 / 42 ms as one conv per member in a loop
  (jaxlib 0.10.2, 2026-11-30).

Both ways read and write the same parameters (the same names, the same `[N, ...]` layout), so
the same parameters give the same outputs either way, to float tolerance, and a checkpoint
moves between machines. Two entry points:

    # inside a compact method: a module instance named as the stack, its parameters stacked
    member = MyLayers(..., name="experts")
    y = apply_stacked(member, 8, x, in_axes=None)        # x [B, ...] shared -> y [8, B, ...]
    y = apply_stacked(member, 8, xs)                     # xs [8, B, ...], one per member

    # pure functions: fn(params_i, *inputs_i), params one tree per member (or stacked)
    y = map_members(fn, [params_a, params_b], h, keys)   # h [2, B, ...], keys [2, 2]

`apply_stacked` lifts `member` with `nn.vmap` or with an unrolled `nn.scan` (`unroll=N`, no
loop left in the program); both split the "params" and "dropout" rngs per member the same way
(`random.split(rng, N)`, member i gets the i-th), so the members are initialised independently
and draw their own dropout masks, and the two ways give the same initial parameters and the
same masks for the same rngs. `map_members` runs `jax.vmap` or a Python loop.

`batched=True` / `False` forces a way; None (the default) chooses as above. `forced(batched)`
sets that default for everything traced inside it (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["apply_stacked", "forced", "is_batched", "map_members"]

_FORCED = threading.local()


@contextlib.contextmanager
def forced(batched: bool | None) -> Iterator[None]:
  """Within the block, stacks traced with `batched=None` run batched (True), as a loop (False)
  or by backend (None)."""
  previous = getattr(_FORCED, "value", None)
  _FORCED.value = batched
  try:
    yield
  finally:
    _FORCED.value = previous


def _axes(in_axes: Any, count: int) -> tuple:
  if isinstance(in_axes, (list, tuple)):
    if len(in_axes) != count:
      raise ValueError(f"{len(in_axes)} in_axes for {count} inputs")
    axes = tuple(in_axes)
  else:
    axes = (in_axes,) * count
  for axis in axes:
    if axis not in (0, None):
      raise ValueError(f"in_axes entries must be 0 (one input per member) or None (shared), "
                       f"got {axis!r}")
  return axes


def is_batched(inputs: Sequence[Any], in_axes: Any = 0, batched: bool | None = None) -> bool:
  """Whether a stack over `inputs` runs batched: `batched` if given, else the `forced` value if
  set, else False only on the CPU backend when some member's input is an image (rank 4)."""
  if batched is None:
    batched = getattr(_FORCED, "value", None)
  if batched is not None:
    return bool(batched)
  if jax.default_backend() != "cpu":
    return True
  for x, axis in zip(inputs, _axes(in_axes, len(inputs))):
    for leaf in jax.tree_util.tree_leaves(x):
      if jnp.ndim(leaf) - (axis is not None) == 4:
        return False
  return True


def apply_stacked(member: nn.Module, num: int, *inputs, in_axes: Any = 0,
                  batched: bool | None = None, **kwargs) -> Any:
  """Inside a compact method: `member` evaluated `num` times, each time with its own
  parameters, the outputs stacked on a new leading axis.

  Args:
    member: a module instance created in the calling compact method, with the stack's name;
      its parameters become `[num, ...]` under that name (as `nn.vmap(..., variable_axes=
      {"params": 0})` makes them).
    num: the number of members N.
    *inputs: positional inputs of `member`'s `__call__`.
    in_axes: per input (or one for all): 0, an input per member stacked on a leading axis
      [N, ...]; None, one input every member reads.
    batched: True: `nn.vmap`; False: an unrolled `nn.scan`; None: `is_batched`.
    **kwargs: static keyword arguments of `__call__` (e.g. `train=True`), the same for every
      member.

  Returns:
    The members' outputs (each a pytree) stacked: leaves [N, ...].
  """
  axes = _axes(in_axes, len(inputs))
  rngs = {"params": True, "dropout": True}
  if is_batched(inputs, axes, batched):
    return nn.vmap(lambda module, *xs: module(*xs, **kwargs), in_axes=axes, out_axes=0,
                   variable_axes={"params": 0}, split_rngs=rngs, axis_size=num)(member, *inputs)
  scan_axes = tuple(nn.broadcast if axis is None else 0 for axis in axes)
  # check_constancy_invariants traces the body twice, advancing the rng counters in between:
  # without it the members' rngs (and so the initial parameters and the dropout masks) are
  # those of nn.vmap.
  body = lambda module, carry, *xs: (carry, module(*xs, **kwargs))
  _, ys = nn.scan(body, in_axes=scan_axes, out_axes=0, variable_axes={"params": 0},
                  split_rngs=rngs, length=num, unroll=max(num, 1),
                  check_constancy_invariants=False)(member, None, *inputs)
  return ys


def map_members(fn: Callable[..., Any], params: Any, *inputs, in_axes: Any = 0,
                batched: bool | None = None) -> Any:
  """fn(params_i, *inputs_i) for every member i, the outputs stacked on a leading axis.

  Args:
    fn: a pure function of one member's parameters and inputs.
    params: a sequence (list or tuple) of N parameter trees, one per member, or one tree with
      leaves stacked [N, ...].
    *inputs, in_axes: as for `apply_stacked` (0: [N, ...] per member; None: shared).
    batched: True: `jax.vmap`; False: a Python loop; None: `is_batched`.
  """
  axes = _axes(in_axes, len(inputs))
  per_member = isinstance(params, (list, tuple))
  if per_member:
    num = len(params)
  else:
    num = jax.tree_util.tree_leaves(params)[0].shape[0]
  if is_batched(inputs, axes, batched):
    if per_member:
      params = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)
    return jax.vmap(fn, in_axes=(0,) + axes)(params, *inputs)
  outs = []
  for i in range(num):
    p = params[i] if per_member else jax.tree.map(lambda leaf, i=i: leaf[i], params)
    xs = [x if axis is None else jax.tree.map(lambda leaf, i=i: leaf[i], x)
          for x, axis in zip(inputs, axes)]
    outs.append(fn(p, *xs))
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *outs)
