"""Cross-stitch networks (Misra et al., CVPR 2016) and MTAN (Liu et al., CVPR 2019): the
architectures built in stages, checked against their papers' equations on small cases.

- the stage rule: every width in `shared_layers` starts a stage;
- cross-stitch: each unit mixes the columns as h'_t = sum_s alpha_ts h_s (per stage, or per
  channel); initialised to the identity it is T independent single-task networks;
- MTAN: every attention mask lies in (0, 1); with the masks fixed to one it is hard parameter
  sharing with the same trunk and heads; its encode/decode split agrees with __call__;
- both take training steps on images [B, 8, 8, 1] with conv stages, and refuse bad
  hyper-parameters by name.
"""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mtl_jax as mj
from mtl_jax import build, models, train
from mtl_jax.models import base, cross_stitch, hps, mtan
from mtl_jax.models.specs import SpecStack
from mtl_jax.tasks import Task

TASKS = (Task("a", "classification", ("x", "y", "z")), Task("b", "regression"))
NAMES = ("a", "b")
VECTORS = jax.random.normal(jax.random.PRNGKey(0), (5, 7))
IMAGES = jax.random.normal(jax.random.PRNGKey(1), (3, 8, 8, 1))


class Identity(nn.Module):
  """A head that returns its representation: the model's output is then Z_t itself."""

  def __call__(self, z):
    return z


IDENTITY_HEADS = {t: Identity() for t in NAMES}


def _spec(**fields):
  return base.ModelSpec(**{"backbone_spec": (5,), "shared_layers": (6, "d", 4),
                           "task_layers": (3,), **fields})


def _as_spec_params(stage_params, stages):
  """Stage j's `SpecStack` parameters (local layer indices) renamed as one `SpecStack` over
  the whole spec names them (global indices): what `hps` calls its trunk."""
  out, offset = {}, 0
  for j, layers in enumerate(stages):
    for name, value in stage_params.get(f"stage_{j}", {}).items():
      kind, index = name.rsplit("_", 1)
      out[f"{kind}_{int(index) + offset}"] = value
    offset += len(layers)
  return out


def _hps(tasks, spec):
  return hps.make(tasks, spec)


def _jit(fn):
  """`fn` compiled once, at -O0: one small program instead of many op-by-op ones."""
  return jax.jit(fn)


def _close(got, want):
  jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6), got, want)


def _init(model, seed, inputs):
  return flax.core.unfreeze(_jit(model.init)(jax.random.PRNGKey(seed), inputs))


def test_every_width_starts_a_stage_and_the_tokens_after_it_join_it():
  assert cross_stitch.stages_of((32, "p", 64, "p")) == ((32, "p"), (64, "p"))
  assert cross_stitch.stages_of((256,)) == ((256,),)
  assert cross_stitch.stages_of("d,8,r,4") == (("d", 8, "r"), (4,))
  with pytest.raises(ValueError, match="shared_layers"):
    cross_stitch.stages_of(("r", "d"))


def test_cross_stitch_initialised_to_the_identity_is_independent_single_task_networks():
  spec = _spec()
  model = models.get("cross_stitch", TASKS, spec, init_self=1.0, init_other=0.0)
  params = _init(model, 2, VECTORS)["params"]
  stages = cross_stitch.stages_of(spec.shared_layers)

  def outputs(params, x):
    single = {}
    for task in TASKS:
      own = {"backbone": params["backbone"], f"head_{task.name}": params[f"head_{task.name}"],
             hps.SHARED: _as_spec_params(params[f"column_{task.name}"], stages)}
      single[task.name] = _hps((task,), spec).apply({"params": own}, x)[task.name]
    return model.apply({"params": params}, x), single

  got, want = _jit(outputs)(params, VECTORS)
  _close(got, want)
  # The columns are initialised apart: not one network copied T times.
  assert not np.allclose(params["column_a"]["stage_0"]["dense_0"]["kernel"],
                         params["column_b"]["stage_0"]["dense_0"]["kernel"])


@pytest.mark.parametrize("per_channel", [False, True])
def test_a_cross_stitch_unit_mixes_the_columns_as_h_t_equals_sum_over_s_of_alpha_ts_h_s(
    per_channel):
  tasks = TASKS + (Task("c", "regression"),)
  spec = base.ModelSpec(shared_layers=(4,), heads={**IDENTITY_HEADS, "c": Identity()})
  model = models.get("cross_stitch", tasks, spec, per_channel=per_channel)
  params = _init(model, 3, VECTORS)["params"]
  shape = (3, 3, 4) if per_channel else (3, 3)
  alpha = np.asarray(jax.random.normal(jax.random.PRNGKey(4), shape))
  params["stitch_0"] = alpha

  def outputs(params, x):
    columns = [SpecStack((4,)).apply({"params": params[f"column_{t}"]["stage_0"]}, x,
                                     train=False) for t in "abc"]
    return model.apply({"params": params}, x), columns

  got, h = _jit(outputs)(params, VECTORS)
  for t, name in enumerate("abc"):
    want = sum(alpha[t, s] * h[s] for s in range(3))
    np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-6)


def test_cross_stitch_starts_at_the_papers_convex_mixture_and_has_no_encoder_but_features():
  model = models.get("cross_stitch", TASKS + (Task("c", "regression"),), _spec())
  params = _init(model, 5, VECTORS)["params"]
  np.testing.assert_allclose(params["stitch_1"], [[0.9, 0.05, 0.05], [0.05, 0.9, 0.05],
                                                  [0.05, 0.05, 0.9]], rtol=1e-6)
  assert not base.has_split(model)
  owners = base.param_owners(model, params, ("a", "b", "c"))
  assert {p[0] for p, o in owners.items() if o is None} == {"backbone", "stitch_0", "stitch_1"}
  assert {p[0] for p, o in owners.items() if o == "b"} == {"column_b", "head_b"}
  # A linear probe reads every task's last stitched stage (width 4), concatenated.
  assert base.features(model, {"params": params}, VECTORS).shape == (5, 3 * 4)


def _mtan_with_masks_fixed_to_one(params):
  params = flax.core.unfreeze(params)
  for name in NAMES:
    for layer, value in params[f"attention_{name}"].items():
      if layer.startswith("h_"):   # sigmoid(0 * g + 100) == 1.0 in float32
        value["kernel"] = jnp.zeros_like(value["kernel"])
        value["bias"] = jnp.full_like(value["bias"], 100.0)
  return params


def test_mtan_with_every_mask_fixed_to_one_is_hard_parameter_sharing():
  inputs, layers = VECTORS, (6, "d", 4, "r")
  spec = _spec(shared_layers=layers)
  model = models.get("mtan", TASKS, spec)
  params = _mtan_with_masks_fixed_to_one(_init(model, 6, inputs)["params"])
  stages = cross_stitch.stages_of(layers)

  def outputs(params, x):
    same = {"backbone": params["backbone"],
            hps.SHARED: _as_spec_params(params[mtan.SHARED], stages),
            **{f"head_{t}": params[f"head_{t}"] for t in NAMES}}
    return (model.apply({"params": params}, x, method="attention_masks"),
            model.apply({"params": params}, x), _hps(TASKS, spec).apply({"params": same}, x))

  masks, got, want = _jit(outputs)(params, inputs)
  assert all(np.all(m == 1.0) for m in jax.tree.leaves(masks))
  _close(got, want)


def test_mtan_masks_lie_in_zero_one_shaped_as_each_stage_and_select_the_task_features():
  inputs, layers = IMAGES, (4, "p", 6, "p")   # f^(2) pools as stage 2 does
  model = models.get("mtan", TASKS, _spec(shared_layers=layers, heads=IDENTITY_HEADS),
                     attention_ratio=0.5)
  variables = _init(model, 7, inputs)
  masks, trunk, out = _jit(lambda v, x: (model.apply(v, x, method="attention_masks"),
                                          model.apply(v, x, method="encode"),
                                          model.apply(v, x)))(variables, inputs)
  for name in NAMES:
    assert len(masks[name]) == 2
    for m in masks[name]:
      assert np.all((m > 0) & (m < 1))
    assert masks[name][1].shape == trunk[name].shape
  assert not np.allclose(masks["a"][1], masks["b"][1])  # one mask per task
  # Z_t = a_t^(J) * p^(J): the last mask applied to the trunk's last stage.
  p_last = trunk["a"] / masks["a"][1]
  np.testing.assert_allclose(trunk["b"], masks["b"][1] * p_last, rtol=1e-5, atol=1e-6)
  # encode/decode is __call__ (identity heads: the outputs are the Z_t).
  _close(out, trunk)
  # g's width is attention_ratio x the stage's width (rounded, at least one).
  widths = {k: v["kernel"].shape[-1] for k, v in variables["params"]["attention_a"].items()}
  stage_widths = [w for w in layers if isinstance(w, int)]
  assert widths == {**{f"g_{j}": max(1, round(0.5 * w)) for j, w in enumerate(stage_widths)},
                    **{f"h_{j}": w for j, w in enumerate(stage_widths)}}


def test_mtan_owns_the_attention_per_task_and_shares_the_trunk():
  model = models.get("mtan", TASKS, _spec(shared_layers=(6, 4)))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(8), VECTORS)["params"]
  owners = base.param_owners(model, params, NAMES)
  assert {p[0] for p, o in owners.items() if o is None} == {"backbone", "shared", "shared_f_1"}
  assert {p[0] for p, o in owners.items() if o == "a"} == {"attention_a", "head_a"}
  assert base.has_split(model)


@pytest.mark.parametrize("name", ["cross_stitch", "mtan"])
def test_two_training_steps_on_images_with_conv_stages(name):
  config = mj.config.complete(mj.default_config())
  config.model.name = name
  config.model.shared_layers = (4, "p")
  config.model.task_layers = ()
  config.model.dropout_rate = 0.0
  setup = build.build_setup(config, TASKS, steps_per_epoch=10)
  mesh = mj.sharding.make_mesh(jax.devices()[:1])
  images = np.asarray(IMAGES)
  batch = {"inputs": images, "labels": {"a": np.array([0, 2, -1], np.int32),
                                        "b": np.array([0.5, np.nan, 1.0], np.float32)}}
  state = train.create_train_state(setup, 0, images[:1], mesh)
  before = jax.device_get(state.params)
  step = jax.jit(functools.partial(train.train_step, setup))
  for _ in range(2):
    state, losses = step(state, batch)
  assert np.all(np.isfinite(jax.device_get(losses)))
  moved = jax.tree.map(lambda a, b: not np.array_equal(a, b), before,
                       jax.device_get(state.params))
  assert all(jax.tree.leaves(moved))


@pytest.mark.parametrize("name,kwargs,key", [
    ("cross_stitch", {"init_self": "0.9"}, "init_self"),
    ("cross_stitch", {"init_other": float("nan")}, "init_other"),
    ("cross_stitch", {"per_channel": 1}, "per_channel"),
    ("cross_stitch", {"alpha": 0.5}, "alpha"),
    ("mtan", {"attention_ratio": 0}, "attention_ratio"),
    ("mtan", {"attention_ratio": True}, "attention_ratio"),
    ("mtan", {"ratio": 1.0}, "ratio"),
])
def test_bad_hyperparameters_are_value_errors_naming_the_key(name, kwargs, key):
  with pytest.raises(ValueError, match=key):
    models.get(name, TASKS, _spec(), **kwargs)


@pytest.mark.parametrize("name", ["cross_stitch", "mtan"])
def test_a_trunk_without_a_width_has_no_stage(name):
  with pytest.raises(ValueError, match="shared_layers"):
    models.get(name, TASKS, _spec(shared_layers=("d",)))
