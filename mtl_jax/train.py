"""Training: the TrainState, the jit-compiled train step, evaluation and the loop.

The loop (`run`) is shared by every data source (`mtl_jax.data.feeds`): `ArrayData`
(in-memory arrays, K steps per dispatch in a `lax.scan`) and `StreamData` (host batches such as
decoded image files, one jitted step per batch). `train_and_evaluate` runs it on in-memory
datasets; `mtl_jax.trainer.MultiTaskTrainer` runs it on image files. A run's static pieces
(model, optimizer, weighting) come from `mtl_jax.build`.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Sequence

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mtl_jax import atomic
from mtl_jax import best as best_lib
from mtl_jax import build as build_lib
from mtl_jax import checkpoint as checkpoint_lib
from mtl_jax import config as config_lib
from mtl_jax import data as data_lib
from mtl_jax import gradients
from mtl_jax import guard
from mtl_jax import interrupt
from mtl_jax import losses as losses_lib
from mtl_jax import metrics as metrics_lib
from mtl_jax import models
from mtl_jax import optim
from mtl_jax import predictor
from mtl_jax import progress as progress_lib
from mtl_jax import report
from mtl_jax import sharding as sharding_lib
from mtl_jax import validate
from mtl_jax import viz
from mtl_jax import weighting as weighting_lib
from mtl_jax import workdir_lock
from mtl_jax.build import Setup
from mtl_jax.errors import ConfigError
from mtl_jax.models import backbones

FINAL_METRICS_FILE = "final_metrics.json"


class MultiTaskOptState(NamedTuple):
  """The optimizer state: the weighting method's state beside optax's."""
  weighting: Any
  optimizer: Any


class TrainState(flax.struct.PyTreeNode):
  """Everything a step reads and writes; one checkpoint of it resumes a run exactly."""
  step: jnp.ndarray         # i32[], the number of steps taken
  params: Any
  model_state: Any          # non-parameter collections such as batch_stats ({} if none)
  opt_state: MultiTaskOptState
  rng: jnp.ndarray          # u32[2], the run's key; step keys are fold_in(rng, step)
  task_weights: jnp.ndarray  # f32[T], the weights the last step used
  task_gram: jnp.ndarray    # f32[T, T], the last step's Gram matrix of task gradients (or 0)
  frozen: Any = flax.struct.field(default_factory=dict)  # a frozen backbone's variables, or {}

  @property
  def variables(self) -> dict:
    """The model's variables: params, other collections, the frozen backbone grafted in."""
    return backbones.graft({"params": self.params, **self.model_state}, self.frozen)


class NonFiniteLossError(FloatingPointError):
  """A loss or a part of the train state became NaN or Inf; the run stops without saving the
  bad state (`mtl_jax.guard`)."""


class Interrupted(Exception):
  """SIGTERM arrived: the run stopped at `step`, having checkpointed it if `saved`."""

  def __init__(self, step: int, saved: bool = True):
    what = ("checkpoint saved, rerun to resume" if saved else
            f"before training step {step + 1}: nothing new to save, rerun to "
            + ("resume" if step else "start"))
    super().__init__(f"interrupted at step {step}; {what}")
    self.step = step


# ----------------------------------------------------------------------------------------------
# The step.


# fold_in(step key, AUGMENT_STREAM) keys the step's augmentation, LABEL_AUGMENT_STREAM the
# augmentation of images with their label maps, VAL_STREAM the draw of the validation batch of
# methods with `Weighting.val_batch` and that batch's dropout.
AUGMENT_STREAM = 1
LABEL_AUGMENT_STREAM = 2
VAL_STREAM = 3


def _apply(setup: Setup, params, model_state, frozen, inputs, *, train: bool, rng=None,
           method: str | None = None):
  """(the model's result, its updated non-parameter collections).

  `method`: "encode" or "decode" for one side of a split model (`inputs` then being its
  input), None for the whole model. The frozen backbone's variables come in as constants;
  whatever the model writes to them (a backbone that updates batch statistics whatever `train`
  says) is dropped.
  """
  variables = backbones.graft({"params": params, **model_state}, frozen)
  rngs = {"dropout": rng} if rng is not None else None
  call = {} if method is None else {"method": method}
  mutable = [c for c in variables if c != "params"]
  if mutable and train:
    result, written = setup.model.apply(variables, inputs, train=True, rngs=rngs,
                                        mutable=mutable, **call)
    new_state, _ = backbones.split(written) if frozen else (written, None)
    return result, {c: new_state[c] for c in model_state}
  return setup.model.apply(variables, inputs, train=train, rngs=rngs, **call), model_state


def _loss_terms(setup: Setup, outputs: dict, labels: dict):
  """(losses f32[T], (counts i32[T], KPIs f32[T])) of the batch."""
  losses, counts = losses_lib.task_losses(setup.tasks, outputs, labels)
  return losses, (counts, losses_lib.task_kpis(setup.tasks, outputs, labels))


def _loss_weighted_grads(setup: Setup, state: TrainState, inputs, labels, dropout_key,
                         weighting_inputs):
  """Loss-based methods: weights from the losses, then one backward with them as cotangent."""

  def forward(params):
    outputs, model_state = _apply(setup, params, state.model_state, state.frozen, inputs,
                                  train=True, rng=dropout_key)
    losses, (counts, kpis) = _loss_terms(setup, outputs, labels)
    return losses, (counts, kpis, model_state)

  losses, backward, (counts, kpis, model_state) = jax.vjp(forward, state.params, has_aux=True)
  weighting_inputs = weighting_inputs._replace(losses=jax.lax.stop_gradient(losses),
                                               counts=counts, kpis=kpis)
  weights, weighting_state = setup.weighting.update(state.opt_state.weighting, weighting_inputs)
  weights = jax.lax.stop_gradient(weights).astype(losses.dtype)
  (grads,) = backward(weights)
  return grads, losses, weights, weighting_state, model_state, state.task_gram


def _task_gradients(setup: Setup, state: TrainState, inputs, labels,
                    dropout_key) -> gradients.TaskGradients:
  """Per-task gradients of the shared parameters (or representation) from one forward pass:
  through the model's encode/decode split when it has one, else the generic path."""
  names = setup.task_names
  owners = models.base.param_owners(setup.model, state.params, names)
  shared, task_params = models.base.split_params(state.params, owners)

  def run(params, inputs, model_state, method=None):
    return _apply(setup, params, model_state, state.frozen, inputs, train=True,
                  rng=dropout_key, method=method)

  owner_index = flax.traverse_util.unflatten_dict(
      {p: names.index(owners[p]) for p in flax.traverse_util.flatten_dict(task_params)})
  if not models.base.has_split(setup.model):
    def loss_fn(shared, task_params):
      outputs, model_state = run(models.base.merge_params(shared, task_params), inputs,
                                 state.model_state)
      losses, (counts, kpis) = _loss_terms(setup, outputs, labels)
      return losses, (counts, kpis, model_state)

    return gradients.generic_task_gradients(loss_fn, shared, task_params, owner_index,
                                            len(names), unroll=True)

  def encode_fn(shared, task_params):
    return run(models.base.merge_params(shared, task_params), inputs, state.model_state,
               "encode")

  def decode_fn(task_params, reps, model_state):
    outputs, model_state = run(models.base.merge_params(shared, task_params), reps, model_state,
                               "decode")
    losses, (counts, kpis) = _loss_terms(setup, outputs, labels)
    return losses, (counts, kpis, model_state)

  return gradients.task_gradients(encode_fn, decode_fn, shared, task_params, owner_index, names,
                                  grad_wrt=setup.grad_wrt, unroll=True,
                                  gram_only=setup.weighting.needs != "grads")


def _task_gradient_grads(setup: Setup, state: TrainState, inputs, labels, dropout_key,
                         weighting_inputs):
  """Gradient methods (and diagnostics): per-task gradients of the shared part, then the
  method's combination (mtl_jax.gradients)."""
  task_grads = _task_gradients(setup, state, inputs, labels, dropout_key)
  counts, kpis, model_state = task_grads.aux
  weighting_inputs = weighting_inputs._replace(
      losses=jax.lax.stop_gradient(task_grads.losses), counts=counts, kpis=kpis)
  grads, weights, weighting_state, gram = gradients.apply_weighting(
      setup.weighting, state.opt_state.weighting, weighting_inputs, task_grads)
  return grads, task_grads.losses, weights, weighting_state, model_state, gram


def _regularizer_grads(setup: Setup, state: TrainState, inputs, dropout_key):
  """The gradient of the model's own penalty (`regularizer`), added to the weighted one."""
  def penalty(params):
    value, _ = _apply(setup, params, state.model_state, state.frozen, inputs, train=True,
                      rng=dropout_key, method="regularizer")
    return value
  return jax.grad(penalty)(state.params)


def _lookahead(setup: Setup, state: TrainState, inputs, labels, dropout_key, val: dict,
               val_key) -> weighting_lib.Lookahead:
  """The per-task losses on this step's batch and on a validation batch drawn from `val` (the
  whole split) uniformly with replacement by `val_key`, as functions of the parameters."""
  size = inputs.shape[0]
  rows = jax.random.randint(val_key, (size,), 0, val["inputs"].shape[0])
  val_batch = jax.tree.map(lambda a: a[rows], val)

  def losses_on(params, x, y, key):
    outputs, _ = _apply(setup, params, state.model_state, state.frozen, x, train=True, rng=key)
    return losses_lib.task_losses(setup.tasks, outputs, y)[0]

  return weighting_lib.Lookahead(
      state.params, lambda p: losses_on(p, inputs, labels, dropout_key),
      lambda p: losses_on(p, val_batch["inputs"], val_batch["labels"],
                          jax.random.fold_in(dropout_key, VAL_STREAM)))


def train_step(setup: Setup, state: TrainState, batch: dict,
               val: dict | None = None) -> tuple[TrainState, dict]:
  """One step: forward, per-task losses, weights (from the losses, or from the per-task
  gradients for gradient methods), the combined gradient, the optimizer update. `val`: the
  whole validation split, for a method with `val_batch` (see `mtl_jax.weighting.base`)."""
  step_key = jax.random.fold_in(state.rng, state.step)
  dropout_key, weighting_key = jax.random.split(step_key)
  inputs, labels = batch["inputs"], batch["labels"]
  if setup.augment_labels is not None:
    inputs, labels = setup.augment_labels(jax.random.fold_in(step_key, LABEL_AUGMENT_STREAM),
                                          inputs, labels)
  if setup.augment is not None:
    inputs = setup.augment(jax.random.fold_in(step_key, AUGMENT_STREAM), inputs)
  weighting_inputs = weighting_lib.WeightingInputs(None, None, None, weighting_key, state.step)
  if setup.weighting.val_batch:
    weighting_inputs = weighting_inputs._replace(lookahead=_lookahead(
        setup, state, inputs, labels, dropout_key, val,
        jax.random.fold_in(step_key, VAL_STREAM)))
  combine = _loss_weighted_grads if setup.grad_wrt is None else _task_gradient_grads
  grads, losses, weights, weighting_state, model_state, gram = combine(
      setup, state, inputs, labels, dropout_key, weighting_inputs)
  if models.base.has_regularizer(setup.model):
    grads = jax.tree.map(jnp.add, grads, _regularizer_grads(setup, state, inputs, dropout_key))
  updates, opt_state = setup.tx.update(grads, state.opt_state.optimizer, state.params)
  new_state = state.replace(
      step=state.step + 1, params=optax.apply_updates(state.params, updates),
      model_state=model_state, opt_state=MultiTaskOptState(weighting_state, opt_state),
      task_weights=weights, task_gram=gram)
  return new_state, losses


def summarize(losses: jnp.ndarray, first_step: jnp.ndarray, state: TrainState) -> dict:
  """Reduces the f32[K, T] losses of a dispatch's K steps and its new `state` to four small
  arrays.

  `loss`: the mean over the K steps; `bad_step`: the first step whose losses were not all
  finite (-1 if none), with `bad_tasks` flagging its non-finite tasks; `finite_state`: which
  parts of `state` are all finite (`mtl_jax.guard.finite_parts`).
  """
  finite = jnp.isfinite(losses)
  first_bad = jnp.argmin(finite.all(axis=1))
  return {"loss": losses.mean(0),
          "bad_step": jnp.where(finite.all(), -1, first_step + first_bad),
          "bad_tasks": ~finite[first_bad], "finite_state": guard.finite_parts(state)}


def make_train_fn(setup: Setup, mesh, *, on_device: bool) -> Callable:
  """jit(state, source, xs) -> (state, summary), running len(xs) steps in one `lax.scan`;
  jit(state, source, xs, val) for a method with `val_batch`, `val` the whole validation split
  on the devices (replicated).

  on_device: `source` is the whole training split on the devices and `xs` i32[K, B] the batch
  indices; otherwise `source` is None and `xs` the stacked batches [K, B, ...] themselves.
  K = 1 runs the step without a loop: XLA:CPU runs a convolution's weight gradient inside a
  loop without its fast kernel (jax-ml/jax#12868), so convolutional models on CPU train
  faster one step per dispatch (MultiLeNet, batch 256, 2 cores: 19 ms a step against 153 ms
  in a `lax.scan`, of length 1 or 50 alike).
  """
  replicated = sharding_lib.replicated(mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)

  def run(state, source, xs, val=None):
    first_step = state.step

    def body(state, x):
      batch = jax.tree.map(lambda a: a[x], source) if on_device else x
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
      return train_step(setup, state, batch, val)

    if jax.tree.leaves(xs)[0].shape[0] == 1:
      state, loss = body(state, jax.tree.map(lambda a: a[0], xs))
      losses = loss[None]
    else:
      state, losses = jax.lax.scan(body, state, xs)
    return state, summarize(losses, first_step, state)

  in_shardings = (replicated, replicated, sharding_lib.batch_sharding(mesh, 1))
  if setup.weighting.val_batch:
    in_shardings += (replicated,)
  return jax.jit(run, in_shardings=in_shardings, out_shardings=(replicated, replicated),
                 donate_argnums=(0,))


def make_step_fn(setup: Setup, mesh) -> Callable:
  """jit(state, batch) -> (state, losses f32[T]): one train step on one global batch
  (jit(state, batch, val) for a method with `val_batch`, as `make_train_fn`).

  For convolutional models fed from the host: XLA:CPU runs a convolution's weight gradient
  inside a `lax.scan` body without its fast kernel, ~50x slower (jax-ml/jax#12868).
  """
  replicated = sharding_lib.replicated(mesh)
  in_shardings = (replicated, sharding_lib.batch_sharding(mesh))
  if setup.weighting.val_batch:
    in_shardings += (replicated,)
  return jax.jit(functools.partial(train_step, setup), in_shardings=in_shardings,
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


def make_eval_fn(setup: Setup, mesh) -> Callable:
  """jit(variables, batch) -> {task: {metric: clu Average}} over the batch."""

  def run(variables, batch):
    outputs = setup.model.apply(variables, batch["inputs"], train=False)
    return losses_lib.task_metrics(setup.tasks, outputs, batch["labels"])

  replicated = sharding_lib.replicated(mesh)
  return jax.jit(run, in_shardings=(replicated, sharding_lib.batch_sharding(mesh)),
                 out_shardings=replicated)


# ----------------------------------------------------------------------------------------------
# State, evaluation and the schedule of dispatches.


def create_train_state(setup: Setup, seed: int, example_inputs: np.ndarray, mesh,
                       backbone_variables: dict | None = None) -> TrainState:
  """A fresh, replicated TrainState; shapes come from `example_inputs` [B, ...].

  `backbone_variables` (e.g. pretrained) replace the backbone's fresh ones; they must have
  its structure (`mtl_jax.models.backbones.feature_shape` checks). A model with
  `freeze_backbone` keeps them in `TrainState.frozen`, out of the trained params.
  """

  def init(rng, backbone_variables):
    init_key, dropout_key, run_key = jax.random.split(rng, 3)
    variables = setup.model.init({"params": init_key, "dropout": dropout_key},
                                 jnp.asarray(example_inputs), train=False)
    if backbone_variables is not None:
      variables = backbones.graft(variables, backbone_variables)
    frozen = {}
    if getattr(setup.model, "freeze_backbone", False):
      variables, frozen = backbones.split(variables)
    params = variables.pop("params")
    opt_state = MultiTaskOptState(setup.weighting.init(setup.tasks, **_state_shapes(setup, params)),
                                  setup.tx.init(params))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=dict(variables),
                      opt_state=opt_state, rng=run_key,
                      task_weights=jnp.zeros((len(setup.tasks),), jnp.float32),
                      task_gram=jnp.zeros((len(setup.tasks),) * 2, jnp.float32), frozen=frozen)

  return jax.jit(init, out_shardings=sharding_lib.replicated(mesh))(jax.random.PRNGKey(seed),
                                                                    backbone_variables)


def _state_shapes(setup: Setup, params: dict) -> dict:
  """{"grads_like": shapes of the per-task shared-parameter gradients} for a method that asks."""
  if not setup.weighting.grad_state:
    return {}
  owners = models.base.param_owners(setup.model, params, setup.task_names)
  shared, _ = models.base.split_params(params, owners)
  return {"grads_like": jax.tree.map(
      lambda p: jax.ShapeDtypeStruct((len(setup.tasks),) + p.shape, p.dtype), shared)}


def evaluate(eval_fn, state: TrainState, batches: Iterable[dict], mesh,
             prefix: str) -> dict[str, float]:
  """{"<prefix>/<task>/<metric>": value} over `batches` (this process's rows of each)."""
  sharding = sharding_lib.batch_sharding(mesh)
  variables, total = state.variables, None
  for local in batches:
    batch = sharding_lib.put_global(local, sharding)
    total = metrics_lib.merge(total, eval_fn(variables, batch))
  return metrics_lib.compute(jax.device_get(total), prefix)


def dispatch_chunks(start: int, stop: int, max_length: int,
                    boundaries: Sequence[int]) -> list[tuple[int, int]]:
  """(first step, length) of each dispatch from `start` to `stop`.

  A dispatch runs at most `max_length` steps and ends on every multiple of each boundary
  (logging, evaluation, checkpoints), so the chunks depend on `start` alone and a resumed run
  compiles and runs exactly the chunks of the uninterrupted one.
  """
  chunks, step = [], start
  while step < stop:
    end = min([step + max_length, stop] + [(step // b + 1) * b for b in boundaries])
    chunks.append((step, end - step))
    step = end
  return chunks


# ----------------------------------------------------------------------------------------------
# Dispatches: what one call from the loop runs.

Dispatch = Callable[[TrainState], tuple[TrainState, dict]]
TrainData = data_lib.ArrayData | data_lib.StreamData


def dispatches(data: TrainData, setup: Setup, mesh,
               chunks: Sequence[tuple[int, int]]) -> Iterator[Dispatch]:
  """One function state -> (state, `summarize` of its losses) per (first step, length) chunk,
  to be called in order: K steps in one `lax.scan` for in-memory data, else one jitted step
  per host batch."""
  if isinstance(data, data_lib.ArrayData):
    train_fn = make_train_fn(setup, mesh, on_device=data.on_device)
    # The whole validation split, once, on every device, for look-ahead methods.
    val = (data_lib.on_devices(data.val, mesh),) if setup.weighting.val_batch else ()
    for source, xs in data.chunk_inputs(chunks, mesh):
      yield lambda state, source=source, xs=xs: train_fn(state, source, xs, *val)
    return
  if setup.weighting.val_batch:  # the image trainer refuses these methods before any work
    raise ValueError("a weighting method that reads validation batches needs ArrayData")
  if not chunks:
    return
  step_fn = make_step_fn(setup, mesh)
  summarize_fn = jax.jit(summarize, out_shardings=sharding_lib.replicated(mesh))
  sharding = sharding_lib.batch_sharding(mesh)
  batches = data.batches(range(chunks[0][0], sum(chunks[-1])))

  def dispatch(state, first, length):
    losses = []
    for local in itertools.islice(batches, length):
      state, loss = step_fn(state, sharding_lib.put_global(local, sharding))
      losses.append(loss)
    return state, summarize_fn(jnp.stack(losses), jnp.int32(first), state)

  for first, length in chunks:
    yield functools.partial(dispatch, first=first, length=length)


# ----------------------------------------------------------------------------------------------
# The loop.


def run(config: ml_collections.ConfigDict, workdir: str, setup: Setup, data: TrainData,
        state: TrainState, *, mesh, run_info: dict,
        evaluate_periodic: Callable[[TrainState], dict[str, float]],
        evaluate_final: Callable[[TrainState], dict[str, float]]) -> tuple[TrainState, dict]:
  """Trains `state` up to step `config.num_steps`; returns it and the final metrics.

  Resumes from `workdir`'s latest checkpoint when that is ahead of `state`. Logs per-task
  losses, weights and the learning rate every `log_every` steps, `evaluate_periodic` every
  `eval_every` steps, checkpoints every `checkpoint_every` steps; at the end writes
  `evaluate_final` plus "weight/<task>" to the writers and `<workdir>/final_metrics.json`.
  `run_info` (tasks, config, ...) goes to `<workdir>/run.json` and into every checkpoint.
  The console shows progress (`mtl_jax.progress`), each evaluation and a closing table of the
  final metrics (`mtl_jax.report`); `<workdir>/curves.png` is drawn at the end. A workdir that
  finished already returns its `final_metrics.json` at once, writing nothing.

  Holds the workdir's lock (`mtl_jax.workdir_lock`) and records SIGTERM
  (`mtl_jax.interrupt`) throughout.

  Raises:
    NonFiniteLossError: a loss or a part of the state became NaN or Inf (nothing non-finite
      is saved; the message names the last good checkpoint).
    Interrupted: SIGTERM arrived; the state was checkpointed first when there was one.
    ConfigError: another run holds the workdir, or its checkpoints belong to another run.
  """
  with workdir_lock.hold(workdir, is_lead=jax.process_index() == 0), \
      interrupt.handle_sigterm():
    return _run(config, workdir, setup, data, state, mesh=mesh, run_info=run_info,
                evaluate_periodic=evaluate_periodic, evaluate_final=evaluate_final)


def _run(config: ml_collections.ConfigDict, workdir: str, setup: Setup, data: TrainData,
         state: TrainState, *, mesh, run_info: dict,
         evaluate_periodic: Callable[[TrainState], dict[str, float]],
         evaluate_final: Callable[[TrainState], dict[str, float]]) -> tuple[TrainState, dict]:
  tasks = setup.tasks
  if config.best_metric:  # checked on an evaluation, before training starts
    best_lib.check_name(config.best_metric, setup.task_names)
    best_lib.check_metric(config.best_metric, evaluate_periodic(state))
  checkpoints = checkpoint_lib.Checkpointer(workdir, config.keep_checkpoints)
  saved = checkpoints.latest_step()
  if saved is not None and saved > int(state.step):
    state = checkpoints.restore(state, run_info) or state
  start = int(state.step)
  if interrupt.requested():  # during start-up or compilation: nothing new to save
    interrupt.reset()
    raise Interrupted(start, saved=False)
  is_lead = jax.process_index() == 0
  show = progress_lib.for_process(
      config.num_steps, steps_per_epoch=data.steps_per_epoch, plain_every=config.log_every,
      process_index=jax.process_index(), process_count=jax.process_count())
  say = lambda message: show.announce(message) if is_lead else None
  final_path = os.path.join(workdir, FINAL_METRICS_FILE)
  if start >= config.num_steps and not sharding_lib.any_process(not os.path.isfile(final_path)):
    checkpoints.close()
    say(report.already_finished(config.num_steps, workdir))
    with open(final_path, encoding="utf-8") as f:
      return state, json.load(f)
  best = best_lib.BestCheckpoint(workdir, config.best_metric) if config.best_metric else None
  say(report.starting(start, config.num_steps, workdir))
  if is_lead:
    atomic.write_json(os.path.join(workdir, "run.json"), run_info)
  writer = metrics_lib.create_writer(workdir)
  if start == 0:
    writer.write_hparams(_flatten(config.to_dict()))
    if config.notes:
      writer.write_texts(0, {"notes": config.notes})
  schedule = optim.learning_rate_schedule(config.optimizer, config.num_steps)

  chunks = dispatch_chunks(start, config.num_steps, config.steps_per_dispatch,
                           (config.log_every, config.eval_every, config.checkpoint_every))
  if chunks:
    say("compiling the train step...")
  window_start, window_time = start, time.perf_counter()
  for (first, length), dispatch in zip(chunks, dispatches(data, setup, mesh, chunks)):
    state, summary = dispatch(state)
    summary = jax.device_get(summary)
    step = first + length
    if not guard.is_finite(summary):
      checkpoints.wait()  # the last good checkpoint may still be being written
      show.close()
      raise NonFiniteLossError(guard.describe(summary, setup.task_names, first, length,
                                              checkpoints.latest_step()))
    show.update(step, {t.name: float(l) for t, l in zip(tasks, summary["loss"])})
    if first == start:  # that dispatch compiled the step: steps/s is measured after it
      window_start, window_time = step, time.perf_counter()
    if step % config.log_every == 0 or step == config.num_steps:
      scalars = {f"train/{t.name}/loss": l for t, l in zip(tasks, summary["loss"])}
      scalars.update(metrics_lib.weight_metrics(state.task_weights, tasks))
      scalars["train/learning_rate"] = schedule(step - 1)
      if step > window_start:
        scalars["train/steps_per_s"] = ((step - window_start)
                                        / (time.perf_counter() - window_time))
      if setup.grad_wrt is not None:
        grad_scalars, cosines = metrics_lib.gradient_metrics(state.task_gram, tasks)
        scalars.update(grad_scalars)
        if is_lead:
          writer.write_images(step, {"grad_cosines": viz.cosine_heatmap(
              cosines, setup.task_names)})
      writer.write_scalars(step, metrics_lib.to_scalars(scalars))
      window_start, window_time = step, time.perf_counter()
    if step % config.eval_every == 0 and step < config.num_steps:
      values = evaluate_periodic(state)
      writer.write_scalars(step, values)
      say(report.evaluation_line(step, values))
      if best is not None:
        best.update(step, values, state, run_info)
    stop = sharding_lib.any_process(interrupt.requested())  # all stop at the same step
    if step % config.checkpoint_every == 0 or step == config.num_steps or stop:
      checkpoints.save(step, state, run_info)
    if stop:
      checkpoints.wait()
      writer.close()
      show.close()
      if is_lead:
        _write_curves(workdir)
      interrupt.reset()
      raise Interrupted(step)
  checkpoints.wait()
  show.close()

  final = {**evaluate_final(state), **metrics_lib.weight_metrics(state.task_weights, tasks)}
  writer.write_scalars(config.num_steps, final)
  writer.close()
  if best is not None:
    best.update(config.num_steps, final, state, run_info)
    best.close()
  if is_lead:
    atomic.write_json(final_path, final)
    written = [final_path, os.path.join(checkpoints.directory, str(config.num_steps)),
               getattr(writer, "path", ""), _write_curves(workdir)]
    if best is not None:
      written.append(f"the best {config.best_metric} ({best.best['value']:.4g}, step "
                     f"{best.best['step']:,}) in {os.path.join(workdir, best_lib.DIRECTORY)}")
    say(report.metrics_table(final) + "\n" + report.written([p for p in written if p]))
  checkpoints.close()
  if interrupt.requested():
    interrupt.reset()
    logging.warning("SIGTERM arrived during the final evaluation, which finished: "
                    "final_metrics.json and the checkpoint of step %d are saved", config.num_steps)
  return state, final


def _write_curves(workdir: str) -> str:
  """`<workdir>/curves.png` (`mtl_jax.viz.curves`); its path, or "" when nothing was logged yet
  (SIGTERM during the first dispatch)."""
  path = os.path.join(workdir, viz.CURVES_FILE)
  try:
    viz.curves(workdir, save=path)
  except viz.NoScalarsError:
    return ""
  return path


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       data: data_lib.Dataset | None = None,
                       backbone: nn.Module | None = None,
                       heads: Mapping[str, nn.Module] | None = None,
                       model: nn.Module | None = None, mesh=None) -> dict[str, float]:
  """Trains as `config` says, resuming from `workdir`'s checkpoints; returns the final metrics.

  `data` replaces the built-in dataset `config.dataset.name` (see `mtl_jax.data.from_arrays`).
  `backbone` replaces the spec-built backbone (or `config.model.backbone_path`, a backbone
  saved with its variables by `mtl_jax.save_backbone`) and `heads` ({task: module}) the
  spec-built heads of hard parameter sharing; `model` replaces the whole registered model by a
  module meeting the contract of `mtl_jax.models.base`. `mesh`: the mesh over every device.
  The final
  metrics, also written to `<workdir>/final_metrics.json`, are "<split>/<task>/<metric>" for
  val and test, and "weight/<task>", the task weights of the last step.
  """
  config = config_lib.complete(config)
  mesh = sharding_lib.make_mesh() if mesh is None else mesh
  config_lib.validate(config, num_devices=mesh.size)
  if config.dataset.name == config_lib.IMAGES:
    raise ConfigError("config.dataset.name='images' trains image files: use "
                      "mtl_jax.trainer.train_from_config (or python -m mtl_jax.main)")
  validate.check_workdir(workdir)
  report.announce(f"loading the {config.dataset.name if data is None else 'given'} data and "
                  f"building the {config.model.name if model is None else 'given'} model...")
  if data is None:
    dataset = data_lib.load(config.dataset)
  else:
    dataset = data.blank_train_labels(config.dataset.missing_fraction, config.dataset.split_seed)
  dataset = dataset.select(config_lib.select_tasks(config, dataset.task_names))
  tasks = dataset.tasks
  validate.check_labelled({"train": dataset.train.labels, "val": dataset.val.labels},
                          tasks)
  try:
    sampler = data_lib.Sampler(len(dataset.train), config.batch_size, config.seed)
  except ValueError as e:
    raise ConfigError(f"config.batch_size: {e}") from None
  if config.num_epochs:
    config.num_steps = config.num_epochs * sampler.steps_per_epoch
  user_modules = {k: v for k, v in (("backbone", backbone), ("heads", heads), ("model", model))
                  if v is not None}
  backbone_variables = None
  if config.model.backbone_path:
    backbone, backbone_variables = backbones.load_backbone(config.model.backbone_path)
    backbones.feature_shape(backbone, backbone_variables, dataset.train.inputs.shape[1:])
  setup = build_lib.build_setup(config, tasks, backbone=backbone, heads=heads, model=model,
                                steps_per_epoch=sampler.steps_per_epoch)
  build_lib.check_model(setup, dataset.train.inputs[:1])
  if setup.augment is not None and dataset.train.inputs.ndim != 4:
    raise ConfigError(f"config.augment needs images [N, H, W, C]; the inputs have shape "
                      f"{dataset.train.inputs.shape}")
  with workdir_lock.hold(workdir, is_lead=jax.process_index() == 0):  # the first file written
    validate.check_same_config(workdir, config.to_dict())  # under the lock: no run rewrites it
    return _train_checked(config, workdir, setup, dataset, sampler, backbone_variables, mesh,
                          user_modules)


def _train_checked(config: ml_collections.ConfigDict, workdir: str, setup: Setup,
                   dataset: data_lib.Dataset, sampler: data_lib.Sampler,
                   backbone_variables: dict | None, mesh,
                   user_modules: dict[str, Any]) -> dict[str, float]:
  """`train_and_evaluate` once every input is checked and the workdir locked."""
  tasks = dataset.tasks
  on_device = config.dataset.data_on_device and jax.process_count() == 1
  if setup.weighting.val_batch and not len(dataset.val):
    raise ConfigError(f"config.weighting={config.weighting!r} draws batches from the validation "
                      "split, which is empty")
  train_data = data_lib.ArrayData(dataset.train, sampler, on_device, dataset.val)
  state = create_train_state(setup, config.seed, train_data.example_inputs(), mesh,
                             backbone_variables)
  eval_fn = make_eval_fn(setup, mesh)

  def evaluate_split(state, name):
    batches = data_lib.split_batches(getattr(dataset, name), tasks, config.eval_batch_size, mesh)
    return evaluate(eval_fn, state, batches, mesh, name)

  run_info = {"tasks": [t.to_json() for t in tasks], "config": config.to_dict(),
              **predictor.record(workdir, dataset.train.inputs.shape[1:],
                                 sampler.steps_per_epoch, user_modules)}
  _, final = run(config, workdir, setup, train_data, state, mesh=mesh, run_info=run_info,
                 evaluate_periodic=lambda s: evaluate_split(s, "val"),
                 evaluate_final=lambda s: {**evaluate_split(s, "val"),
                                           **evaluate_split(s, "test")})
  return final


def _flatten(d: dict, prefix: str = "") -> dict:
  """{"a.b": value} for nested dicts, values as TensorBoard hparams (str for sequences)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
  return out
