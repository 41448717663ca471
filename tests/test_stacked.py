"""`mtl_jax.models.stacked`: N modules with stacked parameters, batched or as an unrolled loop.

- the two ways read and write the same parameters (same names, same [N, ...] shapes, the
  same initial values for the same rng) and give the same outputs for the same parameters,
  for a shared input and for one input per member, Dense and conv layers, with and without
  dropout (the same masks for the same rng);
- the members are initialised independently and draw different dropout masks;
- the default: batched, except image inputs on the CPU backend; `batched=` and `forced`
  override it;
- `map_members` (per-member parameter trees, or one stacked tree) agrees on both ways;
- an architecture through each entry point (LTB's nodes through `apply_stacked`, as the
  expert banks; cross-stitch's columns through `map_members`, as MTAN's attention modules)
  gives the same outputs either way.
"""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.models import base, cross_stitch, ltb, stacked
from mtl_jax.models.specs import SpecStack
from mtl_jax.tasks import Task

N = 3
VECTORS = jax.random.normal(jax.random.PRNGKey(0), (4, 5))
IMAGES = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 6, 2))
DENSE = (4, "d", 3)
CONV = (3, "d", "r")


class Member(nn.Module):
  layers: tuple
  rate: float = 0.5

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    return SpecStack(self.layers, self.rate, name="layers")(x, train=train)


class Parent(nn.Module):
  """A stack named "stack" of N members, as the architectures build theirs."""
  layers: tuple
  shared: bool
  batched: bool | None

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    return stacked.apply_stacked(Member(self.layers, name="stack"), N, x,
                                 in_axes=None if self.shared else 0, batched=self.batched,
                                 train=train)


def _input(layers, shared):
  x = VECTORS if layers is DENSE else IMAGES
  if shared:
    return x
  return x[None] + jnp.arange(N, dtype=x.dtype).reshape((N,) + (1,) * x.ndim)


def _close(a, b, rtol=1e-5):
  """Equal to float tolerance: rtol, and as much absolute error on entries near zero (sums of
  terms of order one that cancel)."""
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=rtol), a, b)


CASES = [(layers, shared) for layers in (DENSE, CONV) for shared in (True, False)]
IDS = [f"{'dense' if l is DENSE else 'conv'}-{'shared' if s else 'per_member'}"
       for l, s in CASES]


def _jit(fn):
  """`fn` compiled once, at -O0: one small program instead of many op-by-op ones."""
  return jax.jit(fn)


def _perturbed(params, seed):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return tree.unflatten([l + 0.5 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)])


def _init_and_apply(model, x, **apply_kwargs):
  """(initial variables, outputs evaluating, outputs training with dropout), the outputs with
  perturbed (not initial) parameters; one program."""
  def run(key):
    initial = model.init(key, x)
    variables = {**initial, "params": _perturbed(initial["params"], 3)}
    rngs = {"dropout": jax.random.PRNGKey(4)}
    return (initial, model.apply(variables, x, **apply_kwargs),
            model.apply(variables, x, train=True, rngs=rngs, **apply_kwargs))
  return _jit(run)(jax.random.PRNGKey(2))


@pytest.mark.parametrize("layers,shared", CASES, ids=IDS)
def test_both_ways_share_parameters_and_outputs(layers, shared):
  x = _input(layers, shared)
  init_b, eval_b, train_b = _init_and_apply(Parent(layers, shared, True), x)
  init_l, eval_l, train_l = _init_and_apply(Parent(layers, shared, False), x)
  assert jax.tree.structure(init_b) == jax.tree.structure(init_l)
  assert jax.tree.map(jnp.shape, init_b) == jax.tree.map(jnp.shape, init_l)
  leaf = next(iter(init_b["params"]["stack"]["layers"].values()))["kernel"]
  assert leaf.shape[0] == N
  _close(init_b, init_l)   # the same initial values too (to float tolerance)
  assert eval_b.shape == (N,) + (x.shape if shared else x.shape[1:])[:-1] + (eval_b.shape[-1],)
  _close(eval_b, eval_l)
  _close(train_b, train_l)   # the same dropout masks
  assert not np.allclose(eval_b, train_b)


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("layers", [DENSE, CONV], ids=["dense", "conv"])
def test_members_are_initialised_independently_and_drop_out_independently(layers, batched):
  model = Parent(layers, True, batched)
  x = _input(layers, True)

  def run(key):
    variables = model.init(key, x)
    # Every member with the same parameters: members differ only by their dropout masks.
    same = jax.tree.map(lambda l: jnp.broadcast_to(l[:1], l.shape) + 0.1, variables)
    return (variables, model.apply(same, x),
            model.apply(same, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)}))

  variables, evaluated, trained = _jit(run)(jax.random.PRNGKey(0))
  for leaf in jax.tree.leaves(variables["params"]):
    if np.abs(leaf).max() > 0:   # biases start at zero
      for i in range(1, N):
        assert not np.allclose(leaf[0], leaf[i])
  for i in range(1, N):
    np.testing.assert_allclose(evaluated[0], evaluated[i], rtol=1e-6)
    assert not np.allclose(trained[0], trained[i])


def test_the_default_is_batched_except_images_on_the_cpu_backend(monkeypatch):
  assert jax.default_backend() == "cpu"
  assert stacked.is_batched([VECTORS], None)
  assert stacked.is_batched([VECTORS[None]], 0)
  assert not stacked.is_batched([IMAGES], None)
  assert not stacked.is_batched([IMAGES[None]], 0)
  assert stacked.is_batched([IMAGES[None]], None)   # a shared rank-5 input is no image
  assert not stacked.is_batched([VECTORS[None], IMAGES[None]], (0, 0))
  assert stacked.is_batched([IMAGES], None, batched=True)
  assert not stacked.is_batched([VECTORS], None, batched=False)
  with stacked.forced(False):
    assert not stacked.is_batched([VECTORS], None)
    assert stacked.is_batched([VECTORS], None, batched=True)
    with stacked.forced(True):
      assert stacked.is_batched([IMAGES], None)
    assert not stacked.is_batched([VECTORS], None)
  assert stacked.is_batched([VECTORS], None)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert stacked.is_batched([IMAGES], None)


def _groups(text):
  return {int(g) for g in re.findall(r"(?:feature|batch)_group_count = (\d+)", text)}


def test_the_loop_runs_one_convolution_per_member_and_leaves_no_loop_in_the_program():
  params = Parent(CONV, True, False).init(jax.random.PRNGKey(0), IMAGES)
  text = {}
  for batched in (True, False):
    model = Parent(CONV, True, batched)
    grad = jax.jit(jax.grad(lambda p, model=model: model.apply(p, IMAGES).sum()))
    text[batched] = grad.lower(params).as_text()
  assert "while" not in text[False]
  assert _groups(text[False]) == {1}
  assert _groups(text[True]) - {1}   # vmapped convolutions: grouped


def test_bad_in_axes_are_refused():
  with pytest.raises(ValueError, match="in_axes"):
    stacked.map_members(lambda p, x: x, [{}, {}], VECTORS, in_axes=1)
  with pytest.raises(ValueError, match="2 in_axes for 1 inputs"):
    stacked.map_members(lambda p, x: x, [{}, {}], VECTORS, in_axes=(0, None))


@pytest.mark.parametrize("shared", [True, False])
def test_map_members_agrees_on_both_ways_for_listed_or_stacked_parameters(shared):
  conv = nn.Conv(3, (3, 3))
  trees = [conv.init(jax.random.PRNGKey(i), IMAGES)["params"] for i in range(N)]
  stacked_tree = jax.tree.map(lambda *l: jnp.stack(l), *trees)
  x = _input(CONV, shared)
  keys = jax.random.split(jax.random.PRNGKey(5), N)
  fn = lambda p, u, k: conv.apply({"params": p}, u) * jax.random.uniform(k)
  axes = (None if shared else 0, 0)
  reference = jnp.stack([fn(trees[i], x if shared else x[i], keys[i]) for i in range(N)])
  for params in (trees, stacked_tree):
    for batched in (True, False, None):
      _close(stacked.map_members(fn, params, x, keys, in_axes=axes, batched=batched),
             reference)


TASKS = (Task("a", "classification", ("x", "y", "z")), Task("b", "regression"))


def _models():
  spec = base.ModelSpec(backbone_spec=(2,), shared_layers=(3, "d", "p", 4), task_layers=(),
                        dropout_rate=0.3)
  return {"ltb": ltb.make(TASKS, spec, search_steps=5),
          "cross_stitch": cross_stitch.make(TASKS, spec)}


# One architecture per entry point: `apply_stacked` (LTB's nodes, as the expert banks of MMoE,
# CGC, PLE and DSelect-k) and `map_members` (cross-stitch's columns, as MTAN's attention).
@pytest.mark.parametrize("name", ["ltb", "cross_stitch"])
def test_the_architectures_give_the_same_outputs_either_way(name):
  model = _models()[name]
  x = jax.random.normal(jax.random.PRNGKey(6), (2, 8, 8, 1))
  results = {}
  for batched in (True, False):
    with stacked.forced(batched):   # traced inside (`forced` is no part of jit's cache key)
      results[batched] = _init_and_apply(model, x, mutable=True)
  _close(results[True][0], results[False][0])
  _close(results[True][1:], results[False][1:])
