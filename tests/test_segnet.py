"""SegNet and SegNet-MTAN: the reference networks' sizes, pooling indices, upsampling, contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import models
from mtl_jax.models import base, segnet
from mtl_jax.tasks import Task


def _tasks(h, w, classes=13):
  return (Task("segmentation", "segmentation", tuple(range(classes)), label_shape=(h, w)),
          Task("depth", "depth", label_shape=(h, w)),
          Task("normals", "normals", label_shape=(h, w, 3)))


def _variables(model, shape):
  return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), jnp.zeros(shape))


def _size(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


@pytest.mark.parametrize("name, params", [
    # SegNet-MTAN: the authors' model_segnet_mtan.py, counted in PyTorch by
    # experiments/bench_dense.py (less their three `logsigma`); SegNet: model_segnet_split.py,
    # whose script divides by 24,981,069, the single-task SegNet (trunk + one 13-class head):
    # plus the depth and normals heads (36,928 + 65 and 36,928 + 195).
    ("segnet_mtan", 44_229_073), ("segnet", 24_981_069 + 36_993 + 37_123)])
def test_the_paper_widths_give_the_reference_parameter_count_and_owners(name, params):
  tasks, shape = _tasks(288, 384), (1, 288, 384, 3)
  model = models.get(name, tasks)
  variables = _variables(model, shape)
  assert _size(variables["params"]) == params
  assert "batch_stats" in variables
  names = [t.name for t in tasks]
  owners = base.param_owners(model, variables["params"], names)
  shared = {p[0] for p, o in owners.items() if o is None}
  assert shared == ({"trunk", "shared_attention"} if name == "segnet_mtan" else {"trunk"})
  assert {p[0] for p, o in owners.items() if o == "depth"} == (
      {"attention_depth", "head_depth"} if name == "segnet_mtan" else {"head_depth"})


@pytest.mark.parametrize("name", ["segnet", "segnet_mtan"])
def test_both_meet_the_model_contract(name):
  # Outputs for exactly the tasks, decode(encode(x)) shaped like model(x); narrow and small,
  # since the check traces the model (SegNet-MTAN at the paper's widths: ~6 s).
  tasks, shape = _tasks(32, 64), (2, 32, 64, 3)
  model = models.get(name, tasks, filters=(2, 4, 4, 8, 8))
  base.check_model(model, _variables(model, shape), jax.ShapeDtypeStruct(shape, jnp.float32),
                   [t.name for t in tasks])


def test_pooling_remembers_the_first_maximum_and_unpooling_puts_values_back_there():
  x = jnp.array([[1.0, 3.0, 0.0, 2.0], [3.0, 2.0, 2.0, 1.0]])[None, :, :, None]
  pooled, where = segnet.pool_with_indices(x)
  np.testing.assert_array_equal(pooled[0, ..., 0], [[3.0, 2.0]])
  np.testing.assert_array_equal(where[0, ..., 0], [[1, 1]])   # ties: the first, row-major
  np.testing.assert_array_equal(segnet.max_unpool(pooled, where)[0, ..., 0],
                                [[0.0, 3.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]])


def test_upsampling_aligns_the_corners_as_pytorch_does():
  x = jnp.array([[0.0, 3.0]])[None, :, :, None]           # [1, 1, 2, 1]
  up = segnet.upsample_bilinear_2x(x)[0, ..., 0]
  np.testing.assert_allclose(up, [[0.0, 1.0, 2.0, 3.0]] * 2, atol=1e-6)


@pytest.mark.parametrize("make, kwargs, message", [
    (lambda t, **k: models.get("segnet", t, **k), {"filters": (8, 8)}, "5 positive ints"),
    (lambda t, **k: models.get("segnet_mtan", t, **k), {"filters": (4, 8, 8, 8, 16)},
     "last two filters must be equal"),
    (lambda t, **k: models.get("segnet", t, models.ModelSpec(shared_layers=(8,)), **k), {},
     "fixed layers")])
def test_bad_hyper_parameters_are_refused_by_name(make, kwargs, message):
  with pytest.raises(ValueError, match=message):
    make(_tasks(32, 32), **kwargs)


def test_inputs_not_divisible_by_32_are_refused():
  model = models.get("segnet", _tasks(48, 48), filters=(2, 2, 2, 2, 2))
  with pytest.raises(ValueError, match="divisible by 32"):
    _variables(model, (1, 48, 48, 3))
