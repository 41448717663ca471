"""The optax optimizer and learning-rate schedule described by `config.optimizer`."""

from __future__ import annotations

import optax


def learning_rate_schedule(opt_config, num_steps: int) -> optax.Schedule:
  """Linear warm-up to `learning_rate`, then constant, cosine decay to 0 at `num_steps`, or
  exponential decay halving every `half_life` steps (smoothly, or in stairs with `staircase`,
  as PyTorch's StepLR(step_size=half_life, gamma=0.5))."""
  peak, warmup = opt_config.learning_rate, opt_config.warmup_steps
  if opt_config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0 if warmup else peak, peak, warmup,
                                              max(num_steps, warmup + 1))
  if opt_config.schedule == "exponential":
    after = optax.exponential_decay(peak, opt_config.half_life, 0.5,
                                    staircase=opt_config.staircase)
  else:
    after = optax.constant_schedule(peak)
  if warmup:
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])
  return after


def make_optimizer(opt_config, num_steps: int) -> optax.GradientTransformation:
  """adam, adamw (decoupled decay) or sgd (momentum, Nesterov); optional global-norm clip."""
  lr = learning_rate_schedule(opt_config, num_steps)
  wd = opt_config.weight_decay
  if opt_config.name == "adamw":
    core = optax.adamw(lr, weight_decay=wd)
  elif opt_config.name == "adam":
    core = optax.chain(optax.add_decayed_weights(wd), optax.adam(lr)) if wd else optax.adam(lr)
  else:
    sgd = optax.sgd(lr, momentum=opt_config.momentum or None, nesterov=opt_config.nesterov)
    core = optax.chain(optax.add_decayed_weights(wd), sgd) if wd else sgd
  if opt_config.grad_clip_norm:
    return optax.chain(optax.clip_by_global_norm(opt_config.grad_clip_norm), core)
  return core
