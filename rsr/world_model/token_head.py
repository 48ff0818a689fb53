"""How the dynamics model's logits name a token: one softmax over the codebook, or one per FSQ digit.

"codes" (the paper's): a token is one class of `vocab`; the loss is a cross-entropy over all of them.
"digits": a token is its FSQ digits (levels (8, 5, 5, 5): four small softmaxes of 8, 5, 5 and 5 logits),
predicted independently given the network's features. Codes that share digits share evidence: a frame
where the model is sure of three digits and torn on the fourth still gets those three right, while over
1000 unrelated classes the same uncertainty spreads thin and greedy decoding falls back on copying. The
digits are ordinal levels of the tokenizer's latent, so a near miss decodes to nearly the right pixels.

Every function takes logits f32[..., n_logits(...)] and works on the trailing axis.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

OUTPUTS = ("codes", "digits")


def n_logits(output: str, vocab: int, levels: tuple[int, ...]) -> int:
  return vocab if output == "codes" else int(sum(levels))


def _split(logits: jax.Array, levels: tuple[int, ...]) -> list[jax.Array]:
  edges = np.cumsum(levels)[:-1]
  return jnp.split(logits, edges, axis=-1)


def _digits(tokens: jax.Array, levels: tuple[int, ...]) -> list[jax.Array]:
  basis = np.cumprod((1,) + tuple(levels[:-1]))
  return [(tokens // int(b)) % int(l) for b, l in zip(basis, levels, strict=True)]


def _code(digits: list[jax.Array], levels: tuple[int, ...]) -> jax.Array:
  basis = np.cumprod((1,) + tuple(levels[:-1]))
  return sum(d * int(b) for d, b in zip(digits, basis, strict=True)).astype(jnp.int32)


def log_prob(output: str, levels: tuple[int, ...], logits: jax.Array, tokens: jax.Array) -> jax.Array:
  """log p(tokens) f32[...] (the negative of the training cross-entropy)."""
  if output == "codes":
    return jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[..., None], axis=-1)[..., 0]
  return sum(jnp.take_along_axis(jax.nn.log_softmax(lg), d[..., None], axis=-1)[..., 0]
             for lg, d in zip(_split(logits, levels), _digits(tokens, levels), strict=True))


def greedy(output: str, levels: tuple[int, ...], logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The most likely token i32[...] and its log-probability f32[...]."""
  if output == "codes":
    top = jnp.max(logits, axis=-1)
    v = logits.shape[-1]
    # The first index holding the max, as two plain reductions: XLA:CPU vectorizes them, while its fused
    # (value, index) argmax ran ~3x slower over a frame's [N, vocab] logits.
    hit = jnp.where(logits == top[..., None], jnp.arange(v, dtype=jnp.int32), v)
    token = jnp.minimum(jnp.min(hit, axis=-1), v - 1)  # (v - 1 only if a logit is NaN)
    return token, top - jax.nn.logsumexp(logits, axis=-1)
  digits, score = [], 0.0
  for lg in _split(logits, levels):
    digits.append(jnp.argmax(lg, axis=-1).astype(jnp.int32))
    score = score + jnp.max(lg, axis=-1) - jax.nn.logsumexp(lg, axis=-1)
  return _code(digits, levels), score


def sample(output: str, levels: tuple[int, ...], key: jax.Array, logits: jax.Array, temperature: float
           ) -> tuple[jax.Array, jax.Array]:
  """A token drawn at `temperature` (> 0) i32[...] and its log-probability under the tempered logits."""
  logits = logits / temperature
  if output == "codes":
    token = jax.random.categorical(key, logits)
    return token, log_prob(output, levels, logits, token)
  parts = _split(logits, levels)
  digits = [jax.random.categorical(k, lg) for k, lg in zip(jax.random.split(key, len(parts)), parts, strict=True)]
  token = _code(digits, levels)
  return token, log_prob(output, levels, logits, token)


def add_bias(output: str, levels: tuple[int, ...], logits: jax.Array, tokens: jax.Array, bias: jax.Array
             ) -> jax.Array:
  """`bias` (broadcastable to tokens' shape) added to the logits of `tokens` (for digits: of each digit)."""
  if output == "codes":
    # A compare against the vocabulary index fuses into the add: no [..., vocab] one-hot is stored.
    return logits + bias[..., None] * (jnp.arange(logits.shape[-1]) == tokens[..., None])
  parts = [lg + bias[..., None] * (jnp.arange(lg.shape[-1]) == d[..., None])
           for lg, d in zip(_split(logits, levels), _digits(tokens, levels), strict=True)]
  return jnp.concatenate(parts, axis=-1)
