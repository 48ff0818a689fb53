"""The optimizer every trainer here uses: global-norm clipping, then AdamW on a warmup-cosine schedule."""

from __future__ import annotations

import optax


def adamw_cosine(lr: float, warmup: int, steps: int, weight_decay: float, grad_clip: float,
                 b2: float = 0.999) -> optax.GradientTransformation:
  """Linear warmup to `lr` over `warmup` steps, cosine decay to 5% of it at `steps`."""
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1), end_value=lr * 0.05)
  return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adamw(schedule, b2=b2, weight_decay=weight_decay))
