"""The mixture-of-experts architectures (MMoE, CGC, PLE, DSelect-k), from their papers' claims
on small hand-checkable cases."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import models
from mtl_jax.models import base, dselect_k, experts, specs
from mtl_jax.tasks import Task

TASKS = (Task("a", "classification", ("x", "y", "z")), Task("b", "regression"))
NAMES = ("a", "b")
SPEC = base.ModelSpec(backbone_spec=(8,), shared_layers=(6, 6), task_layers=(4,))  # 2 PLE levels
X = jax.random.normal(jax.random.PRNGKey(0), (4, 5))


def _params(model, x=X, seed=1):
  """Parameters of the model's shapes, drawn by numpy: no initialiser is compiled (these
  tests are about the architectures, not their initialisation)."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(seed), x)["params"]
  rng = np.random.default_rng(seed)
  return flax.core.unfreeze(jax.tree.map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype), shapes))




def _apply(model, params, x=X, method=None):
  return jax.jit(lambda p, x: model.apply({"params": p}, x, method=method))(params, x)


def _close(a, b):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6), a, b)


MODELS = {
    "mmoe": {"num_experts": 3},
    "cgc": {"num_shared_experts": 2, "num_task_experts": 1},
    "ple": {"num_levels": 2, "num_shared_experts": 2, "num_task_experts": {"a": 1, "b": 2}},
    "dselect_k": {"num_experts": 4, "num_nonzeros": 2},
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_gate_is_a_distribution_over_its_experts(name):
  model = models.get(name, TASKS, SPEC, **MODELS[name])
  gates = _apply(model, _params(model), method="gates")
  assert gates
  for g in gates.values():
    assert g.shape[0] == X.shape[0]
    assert (g >= 0).all()
    np.testing.assert_allclose(g.sum(axis=-1), 1.0, rtol=1e-5)


def test_the_gates_weigh_the_experts_each_task_may_read():
  cgc = models.get("cgc", TASKS, SPEC, num_shared_experts=2, num_task_experts={"a": 1, "b": 3})
  assert {k: v.shape[1] for k, v in _apply(cgc, _params(cgc), method="gates").items()} == {
      "gate_a": 3, "gate_b": 5}
  spec = base.ModelSpec(shared_layers=(6, 6, 6), task_layers=(4,))
  ple = models.get("ple", TASKS, spec, num_levels=3, num_shared_experts=2, num_task_experts=1)
  assert {k: v.shape[1] for k, v in _apply(ple, _params(ple), method="gates").items()} == {
      "level0_gate_a": 3, "level0_gate_b": 3, "level0_shared_gate": 4,
      "level1_gate_a": 3, "level1_gate_b": 3, "level1_shared_gate": 4,
      "level2_gate_a": 3, "level2_gate_b": 3}  # the last level has no shared gate


def test_mmoe_with_one_expert_is_hard_parameter_sharing():
  mmoe = models.get("mmoe", TASKS, SPEC, num_experts=1)
  hps = models.get("hps", TASKS, SPEC)
  params = _params(mmoe)
  expert = jax.tree.map(lambda p: p[0], params["experts"]["layers"])  # the only expert
  hps_params = {"backbone": params["backbone"], "shared": expert,
                "head_a": params["head_a"], "head_b": params["head_b"]}
  assert jax.tree.map(jnp.shape, hps_params) == jax.tree.map(jnp.shape, _params(hps))
  _close(_apply(mmoe, params), _apply(hps, hps_params))


def test_cgc_without_task_experts_is_mmoe():
  mmoe = models.get("mmoe", TASKS, SPEC, num_experts=3)
  cgc = models.get("cgc", TASKS, SPEC, num_shared_experts=3, num_task_experts=0)
  params = _params(mmoe)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, _params(cgc))
  _close(_apply(cgc, params), _apply(mmoe, params))


def test_ple_with_one_level_is_cgc():
  cgc = models.get("cgc", TASKS, SPEC, num_shared_experts=2, num_task_experts=2)
  ple = models.get("ple", TASKS, SPEC, num_levels=1, num_shared_experts=2, num_task_experts=2)
  params = _params(cgc)
  renamed = {("level0_" + k if k.startswith(("experts", "gate_")) else k): v
             for k, v in params.items()}
  assert jax.tree.map(jnp.shape, renamed) == jax.tree.map(jnp.shape, _params(ple))
  _close(_apply(ple, renamed), _apply(cgc, params))


@pytest.mark.parametrize("layers, num_levels, levels", [
    ((16, 8), None, ((16,), (8,))),                      # one level per layer by default
    ((16, 8), 1, ((16, 8),)),
    ((8, "d", 6, "r", 4), 2, ((8, "d", 6), ("r", 4))),   # "d", "p" stay with their layer
    ((64, 32, 16), 2, ((64, 32), (16,))),                # the earlier levels take the extra
])
def test_ple_levels_split_the_expert_spec_between_its_layers(layers, num_levels, levels):
  ple = models.get("ple", TASKS, base.ModelSpec(shared_layers=layers), num_levels=num_levels)
  assert ple.levels == levels


def test_ple_level_experts_are_the_levels_layers():
  spec = base.ModelSpec(shared_layers=(7, "d", 6, 5), dropout_rate=0.5)
  ple = models.get("ple", TASKS, spec, num_levels=2, num_shared_experts=3, num_task_experts=1)
  params = _params(ple)
  assert jax.tree.map(jnp.shape, params["level0_experts"]["layers"]) == {
      "dense_0": {"kernel": (3, 5, 7), "bias": (3, 7)},
      "dense_2": {"kernel": (3, 7, 6), "bias": (3, 6)}}
  assert jax.tree.map(jnp.shape, params["level1_experts_b"]["layers"]) == {
      "dense_0": {"kernel": (1, 6, 5), "bias": (1, 5)}}
  assert _apply(ple, params, method="encode")["a"].shape == (4, 5)


def test_ple_levels_read_the_branches_the_gates_mix():
  """Level 1's shared experts read level 0's shared gate; changing a task gate of level 0
  changes only that task's output."""
  ple = models.get("ple", TASKS, SPEC, num_levels=2, num_shared_experts=2, num_task_experts=1)
  params = _params(ple)
  before = _apply(ple, params)
  params["level0_gate_a"]["bias"] = params["level0_gate_a"]["bias"] + jnp.array([3.0, 0, -3.0])
  after = _apply(ple, params)
  assert not np.allclose(after["a"], before["a"])
  _close(after["b"], before["b"])
  params["level0_shared_gate"]["bias"] = params["level0_shared_gate"]["bias"] + 3 * jnp.arange(4.)
  moved = _apply(ple, params)
  assert not np.allclose(moved["a"], after["a"]) and not np.allclose(moved["b"], after["b"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_experts_and_shared_gates_are_shared_and_the_rest_belongs_to_a_task(name):
  model = models.get(name, TASKS, SPEC, **MODELS[name])
  owners = {path[0]: owner for path, owner in
            base.param_owners(model, _params(model), NAMES).items()}
  for module, owner in owners.items():
    if module == "backbone" or module.endswith("experts") or module.endswith("shared_gate"):
      assert owner is None, module
    else:
      assert owner == module.rsplit("_", 1)[1], module


@pytest.mark.parametrize("name", sorted(MODELS))
def test_experts_are_one_batched_stack_not_a_loop(name):
  """The parameters of a bank are stacked on a leading expert axis, the experts differ, and
  the forward pass has as many matmuls for 16 experts as for 2."""
  def matmuls(kwargs):
    model = models.get(name, TASKS, SPEC, **kwargs)
    params = _params(model)
    jaxpr = jax.make_jaxpr(lambda p: model.apply({"params": p}, X))(params)
    return str(jaxpr).count("dot_general"), params
  counts = {"mmoe": "num_experts", "dselect_k": "num_experts", "cgc": "num_shared_experts",
            "ple": "num_shared_experts"}[name]
  few, _ = matmuls({**MODELS[name], counts: 2})
  many, params = matmuls({**MODELS[name], counts: 16})
  assert few == many
  bank = params["experts" if "experts" in params else "level0_experts"]["layers"]["dense_0"]
  assert bank["kernel"].shape == (16, 8, 6)


def test_each_expert_is_initialised_on_its_own():
  model = models.get("mmoe", TASKS, SPEC, num_experts=2)
  init = jax.jit(model.init)
  kernel = init(jax.random.PRNGKey(0), X)["params"]["experts"]["layers"]["dense_0"]
  assert not np.allclose(kernel["kernel"][0], kernel["kernel"][1])


def test_cgc_banks_reading_one_input_run_as_one_stack_each_with_its_own_parameters():
  """CGC's shared and task banks all read x: their experts run as one batched stack (as many
  matmuls as MMoE with as many experts in one bank), the outputs are each bank's evaluated on
  its own, each bank's parameters keep the initial values of a bank on its own, and a task's
  loss reaches only the shared bank and its own."""
  spec = base.ModelSpec(shared_layers=(6, 6), task_layers=(4,))
  model = models.get("cgc", TASKS, spec, num_shared_experts=4, num_task_experts=2)
  mmoe = models.get("mmoe", TASKS, spec, num_experts=8)
  def matmuls(m):
    jaxpr = jax.make_jaxpr(lambda p: m.apply({"params": p}, X))(_params(m))
    return str(jaxpr).count("dot_general")
  assert matmuls(model) == matmuls(mmoe)

  params = _params(model)
  assert {k: params[k]["layers"]["dense_0"]["kernel"].shape
          for k in ("experts", "experts_a", "experts_b")} == {
              "experts": (4, 5, 6), "experts_a": (2, 5, 6), "experts_b": (2, 5, 6)}
  def bank(name):  # one bank on its own, f32[E, B, 6]
    layer = specs.SpecStack((6, 6))
    return jax.vmap(lambda q: layer.apply({"params": q}, X, train=False))(params[name]["layers"])
  gates = _apply(model, params, method="gates")
  want = {t: (jnp.einsum("be,ebd->bd", gates[f"gate_{t}"][:, :4], bank("experts"))
              + jnp.einsum("be,ebd->bd", gates[f"gate_{t}"][:, 4:], bank(f"experts_{t}")))
          for t in NAMES}
  _close(_apply(model, params, method="encode"), want)

  class OneBank(flax.linen.Module):
    @flax.linen.compact
    def __call__(self, x):
      return experts.expert_bank((6, 6), 0.0, 2, train=False, name="experts_a")(x)
  key = jax.random.PRNGKey(3)
  _close(model.init(key, X)["params"]["experts_a"], OneBank().init(key, X)["params"]["experts_a"])

  grads = jax.grad(lambda p: model.apply({"params": p}, X, method="encode")["a"].sum())(params)
  assert all(np.any(g != 0) for g in jax.tree.leaves(grads["experts"]))
  assert all(np.any(g != 0) for g in jax.tree.leaves(grads["experts_a"]))
  assert all(np.all(g == 0) for g in jax.tree.leaves(grads["experts_b"]))


# Banks of two experts everywhere: the batched convolutions of one shape are compiled once.
IMAGE_MODELS = {"mmoe": {"num_experts": 2}, "cgc": {"num_task_experts": 2, "num_shared_experts": 2},
                "ple": {"num_task_experts": 2, "num_shared_experts": 2},
                "dselect_k": {"num_experts": 2, "num_nonzeros": 1}}


@pytest.mark.parametrize("name", sorted(IMAGE_MODELS))
def test_images_mix_feature_maps_of_conv_experts(name):
  images = jax.random.uniform(jax.random.PRNGKey(2), (2, 6, 6, 3))
  spec = base.ModelSpec(shared_layers=(4, 4), task_layers=(5,))
  model = models.get(name, TASKS, spec, **IMAGE_MODELS[name])
  params = _params(model, images)
  reps = _apply(model, params, images, method="encode")
  assert {t: z.shape for t, z in reps.items()} == {"a": (2, 6, 6, 4), "b": (2, 6, 6, 4)}
  bank = params["experts" if "experts" in params else "level0_experts"]["layers"]["conv_0"]
  assert bank["kernel"].shape[1:] == (3, 3, 3, 4)
  outputs = _apply(model, params, images)
  assert {t: y.shape for t, y in outputs.items()} == {"a": (2, 3), "b": (2, 1)}
  _close(model.apply({"params": params}, reps, method="decode"), outputs)


def test_smooth_step_is_0_below_minus_gamma_half_1_above_and_cubic_between():
  t = jnp.array([-5.0, -1.0, -0.5, 0.0, 0.5, 1.0, 5.0])
  np.testing.assert_allclose(dselect_k.smooth_step(t, gamma=2.0),
                             [0, 0, 0.5 - 0.375 + 0.03125, 0.5, 0.5 + 0.375 - 0.03125, 1, 1],
                             atol=1e-6)
  np.testing.assert_allclose(dselect_k.smooth_step(jnp.array([-0.25, 0.25]), gamma=0.5),
                             [0, 1])


def _binary_selectors(params, task, experts_chosen, m, scale=10.0):
  """z-logits far outside +-gamma/2, single-expert selector i choosing experts_chosen[i]."""
  codes = dselect_k.binary_codes(2 ** m)[np.array(experts_chosen)]  # [k, m]
  z = params[f"z_logits_{task}"]
  z["kernel"] = jnp.zeros_like(z["kernel"])
  z["bias"] = jnp.asarray(np.where(codes, scale, -scale).reshape(-1), jnp.float32)


def test_dselect_k_with_binary_gates_selects_exactly_k_experts():
  model = models.get("dselect_k", TASKS, SPEC, num_experts=8, num_nonzeros=3)
  params = _params(model)
  _binary_selectors(params, "a", [1, 5, 6], m=3)
  _binary_selectors(params, "b", [0, 7, 7], m=3)  # two selectors may choose the same expert
  selectors = _apply(model, params, method="selectors")
  for task, chosen in (("a", [1, 5, 6]), ("b", [0, 7, 7])):
    r, w = selectors[task]
    np.testing.assert_array_equal(r, np.broadcast_to(np.eye(8)[chosen], r.shape))  # one-hot
    np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-6)
    assert (w > 0).all()
  gates = _apply(model, params, method="gates")
  assert ((gates["gate_a"] > 0).sum(axis=-1) == 3).all()
  assert ((gates["gate_b"] > 0).sum(axis=-1) == 2).all()
  np.testing.assert_allclose(gates["gate_a"].sum(axis=-1), 1.0, rtol=1e-6)
  assert set(np.flatnonzero(gates["gate_a"][0])) == {1, 5, 6}


def test_dselect_k_entropy_regularizer_is_zero_for_binary_selectors_positive_otherwise():
  model = models.get("dselect_k", TASKS, SPEC, num_experts=4, num_nonzeros=2, entropy_reg=0.1)
  params = _params(model)
  for task in NAMES:  # z = 0: S(z) = 1/2, every selector uniform over the 4 experts
    params[f"z_logits_{task}"] = jax.tree.map(jnp.zeros_like, params[f"z_logits_{task}"])
  uniform = _apply(model, params, method="regularizer")
  np.testing.assert_allclose(uniform, 0.1 * 2 * 2 * np.log(4), rtol=1e-5)  # 2 tasks, k = 2
  penalty = lambda p: model.apply({"params": p}, X, method="regularizer")
  grad = jax.jit(jax.grad(penalty))(_params(model))
  assert np.abs(grad["z_logits_a"]["bias"]).sum() > 0
  _binary_selectors(params, "a", [0, 3], m=2)
  _binary_selectors(params, "b", [2, 2], m=2)
  assert _apply(model, params, method="regularizer") == 0.0


def test_dselect_k_keeps_selectors_off_nonexistent_experts_when_n_is_no_power_of_2():
  """With 3 experts, code 3 (binary 11) names none: a selector on it is penalised even with
  no entropy term, one on an existing expert is not."""
  model = models.get("dselect_k", TASKS, SPEC, num_experts=3, num_nonzeros=1, entropy_reg=0.0)
  params = _params(model)
  _binary_selectors(params, "a", [2], m=2)
  _binary_selectors(params, "b", [1], m=2)
  assert _apply(model, params, method="regularizer") == 0.0
  params["z_logits_a"]["bias"] = jnp.array([0.3, 0.3])  # leaning to code 3 (binary 11)
  assert _apply(model, params, method="regularizer") > 0.5


@pytest.mark.parametrize("name, kwargs, key", [
    ("mmoe", {"num_experts": 0}, "num_experts"),
    ("mmoe", {"num_experts": 2.5}, "num_experts"),
    ("mmoe", {"num_expert": 4}, "num_expert"),
    ("cgc", {"num_shared_experts": 0}, "num_shared_experts"),
    ("cgc", {"num_task_experts": -1}, "num_task_experts"),
    ("cgc", {"num_task_experts": {"a": 1}}, "num_task_experts"),
    ("ple", {"num_levels": 0}, "num_levels"),
    ("ple", {"num_levels": 3}, "num_levels"),   # SPEC's experts have 2 layers
    ("ple", {"num_task_experts": {"a": 1, "b": True}}, "num_task_experts"),
    ("dselect_k", {"num_experts": 0}, "num_experts"),
    ("dselect_k", {"num_experts": 4, "num_nonzeros": 5}, "num_nonzeros"),
    ("dselect_k", {"num_nonzeros": 0}, "num_nonzeros"),
    ("dselect_k", {"gamma": 0.0}, "gamma"),
    ("dselect_k", {"entropy_reg": -1.0}, "entropy_reg"),
])
def test_a_bad_hyper_parameter_is_a_value_error_naming_it(name, kwargs, key):
  with pytest.raises(ValueError, match=key):
    models.get(name, TASKS, SPEC, **kwargs)
