"""The weighting registry and the fixed-weight methods."""

import numpy as np
import pytest

from mtl_jax import weighting
from mtl_jax.tasks import Task
from mtl_jax.weighting import base


def _weights(method, num_tasks, losses):
  w, _ = method.update(method.init(num_tasks), weighting.make_inputs(losses))
  return np.asarray(w)


def test_equal_gives_every_task_weight_one():
  np.testing.assert_array_equal(_weights(weighting.get("equal"), 3, [1.0, 5.0, 0.1]), [1, 1, 1])


def test_manual_gives_the_listed_weights():
  np.testing.assert_allclose(_weights(weighting.get("manual", weights=[1.0, 0.5]), 2, [3., 4.]),
                             [1.0, 0.5])


@pytest.mark.parametrize("kwargs, message", [
    ({"weights": [1.0, -1.0]}, ">= 0"),
    ({"weights": [0.0, 0.0]}, "not all 0"),
    ({"wieghts": [1.0]}, "wieghts"),
])
def test_bad_hyperparameters_are_value_errors_naming_them(kwargs, message):
  with pytest.raises(ValueError, match=message):
    weighting.get("manual", **kwargs)


def test_manual_weights_must_match_the_number_of_tasks():
  with pytest.raises(ValueError, match="2 weights for 3 tasks"):
    weighting.get("manual", weights=[1.0, 0.5]).init(3)


def test_unknown_names_list_the_known_ones():
  with pytest.raises(ValueError, match=r"unknown weighting 'magic'.*'equal'"):
    weighting.get("magic")


def test_run_facts_reach_only_the_methods_that_declare_them():
  def make(scale=1.0, optimizer=None):
    return scale, optimizer
  weighting.REGISTRY["_probe"] = make
  try:
    assert weighting.get("_probe", context={"optimizer": "tx", "num_steps": 9}) == (1.0, "tx")
    assert weighting.get("_probe", context={"optimizer": "tx"}, optimizer="mine") == (1.0, "mine")
  finally:
    del weighting.REGISTRY["_probe"]


def test_only_regression_has_an_error_kpi_among_the_kinds():
  """Any kind outside ERROR_KINDS (binary, future ones) is an accuracy in [0, 1]."""
  assert base.error_kpis(("classification", "binary", "regression")) == (False, False, True)
  assert base.error_kpis(2) == (False, False)
  tasks = (Task("a", "regression"), Task("b", "classification", classes=("x", "y")))
  assert base.error_kpis(tasks) == (True, False)


def test_methods_whose_init_takes_grads_like_say_so_with_grad_state():
  """train.py reads `grad_state` (not init's signature) to pass the gradient shapes."""
  grad_state = {name for name, make in weighting.REGISTRY.items()
                if make(**{"manual": {"weights": (1.0,)}, "stch": {"steps_per_epoch": 1}}
                        .get(name, {})).grad_state}
  assert grad_state == {"moco", "db_mtl", "excess_mtl"}
  assert not weighting.get("excess_mtl", hessian="scalar").grad_state


@pytest.mark.parametrize("name, kwargs, expected", [
    ("equal", {}, [1.0, 0.0, 1.0]),
    ("manual", {"weights": (1.0, 0.5, 2.0)}, [1.0, 0.0, 2.0]),
])
def test_a_task_without_labels_gets_weight_zero(name, kwargs, expected):
  method = weighting.get(name, **kwargs)
  w, _ = method.update(method.init(3), weighting.make_inputs([1.0, 0.0, 2.0], [4, 0, 4]))
  np.testing.assert_array_equal(w, expected)
