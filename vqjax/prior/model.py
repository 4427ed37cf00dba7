"""The prior: a small decoder-only (GPT-style, pre-LN) transformer over a Layout's tokens.

  inputs [B, T]  = [BOS, t_0, ..., t_{T-2}]  (`shift_right`)
  logits [B, T, num_code_tokens]: position i predicts t_i from t_<i

Token and learned position embeddings (T positions: the layout fixes which
level and entry every position holds, so the position embedding also says
which segment is next), `num_layers` blocks of causal self-attention
(`flax.linen.MultiHeadDotProductAttention` with `nn.make_causal_mask`, no
biases: a key bias only shifts a query's logits by a constant, so its
gradient is rounding noise that Adam would turn into steps) and an
MLP (GELU, mlp_ratio * width), each behind a LayerNorm and added to the
residual stream, a final LayerNorm and a Dense to the code tokens (BOS is
never predicted). `segment_log_probs` turns logits into log-probabilities over
each position's own segment only (the other levels' and entries' tokens get
probability 0), so a position's NLL is that of a K-way choice.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class Block(nn.Module):
  """x + attn(LN(x)), then x + mlp(LN(x)); dropout on both branch outputs."""

  num_heads: int
  width: int
  mlp_ratio: int
  dropout: float

  decode: bool = False    # one position per call, keys and values cached (PriorTransformer)

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None, *, train: bool) -> jax.Array:
    h = nn.LayerNorm(name="ln_attention")(x)
    h = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, qkv_features=self.width, dropout_rate=self.dropout,
        deterministic=not train, use_bias=False, decode=self.decode,
        name="attention")(h, h, mask=mask)
    x = x + nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.LayerNorm(name="ln_mlp")(x)
    h = nn.Dense(self.mlp_ratio * self.width, name="mlp_in")(h)
    h = nn.Dense(self.width, name="mlp_out")(nn.gelu(h))
    return x + nn.Dropout(self.dropout, deterministic=not train)(h)


class PriorTransformer(nn.Module):
  """inputs int32 [B, T] (T <= seq_len) -> logits float32 [B, T, num_code_tokens].

  decode=True (the sampler's, same params): a key/value cache in the `cache`
  collection, as flax's `MultiHeadDotProductAttention(decode=True)` keeps it.
  Initialise it with inputs [B, seq_len] (`init_cache`), then call with one
  position [B, 1] at a time, mutable=['cache']: the call at step t sees positions
  0..t (the cache's index) and gives position t's logits, what the full causal
  pass gives there, in O(t) instead of O(t^2) per step.
  """

  vocab_size: int        # embedding rows: code tokens + BOS
  num_code_tokens: int   # logits' width
  seq_len: int           # positions (learned embeddings)
  num_layers: int = 4
  num_heads: int = 4
  width: int = 128
  mlp_ratio: int = 4
  dropout: float = 0.0
  decode: bool = False

  @nn.compact
  def __call__(self, inputs: jax.Array, *, train: bool = False) -> jax.Array:
    t = inputs.shape[1]
    x = nn.Embed(self.vocab_size, self.width, name="token_embedding")(inputs)
    pos = self.param("position_embedding", nn.initializers.normal(0.02),
                     (self.seq_len, self.width))
    if self.decode and self.has_variable("cache", "position"):
      index = self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
      pos = jax.lax.dynamic_slice_in_dim(pos, index.value, t)   # positions index .. index+t-1
      index.value = index.value + t
      mask = None        # the attention's cache masks the positions not yet written
    else:
      if self.decode:    # initialising the cache
        self.variable("cache", "position", lambda: jnp.array(0, jnp.int32))
      pos = pos[:t]
      mask = nn.make_causal_mask(inputs)  # [B, 1, T, T]: position i attends to j <= i
    x = nn.Dropout(self.dropout, deterministic=not train)(x + pos[None])
    for i in range(self.num_layers):
      x = Block(self.num_heads, self.width, self.mlp_ratio, self.dropout, self.decode,
                name=f"block_{i}")(x, mask, train=train)
    x = nn.LayerNorm(name="ln_final")(x)
    return nn.Dense(self.num_code_tokens, name="head")(x).astype(jnp.float32)


def create_model(prior_config, layout) -> PriorTransformer:
  """The transformer config.prior describes, sized for `layout`."""
  p = prior_config
  return PriorTransformer(
      vocab_size=layout.vocab_size, num_code_tokens=layout.num_code_tokens,
      seq_len=layout.seq_len, num_layers=p.num_layers, num_heads=p.num_heads,
      width=p.width, mlp_ratio=p.mlp_ratio, dropout=p.dropout)


def init_cache(model: PriorTransformer, batch_size: int):
  """The zeroed key/value cache of `model.clone(decode=True)` for batch_size rows."""
  decoder = model.clone(decode=True)
  shapes = jax.eval_shape(decoder.init, jax.random.PRNGKey(0),
                          jnp.zeros((batch_size, model.seq_len), jnp.int32))["cache"]
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def shift_right(tokens: jax.Array, bos: int) -> jax.Array:
  """[B, T] -> [B, T]: BOS, then the tokens but the last (the model's inputs)."""
  return jnp.concatenate(
      [jnp.full((tokens.shape[0], 1), bos, tokens.dtype), tokens[:, :-1]], axis=1)


def segment_mask(lo, hi, num_code_tokens: int) -> jax.Array:
  """bool [..., V]: token v is allowed at a position iff lo <= v < hi there
  (lo, hi int [...]: `Layout.lo`, `Layout.hi`, or one position's)."""
  v = jnp.arange(num_code_tokens)
  lo, hi = jnp.asarray(lo)[..., None], jnp.asarray(hi)[..., None]
  return (v >= lo) & (v < hi)


def segment_log_probs(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """log-softmax over each position's segment; -inf elsewhere.

  logits [..., T, V] (or [..., V] with mask [V]); mask as `segment_mask`.
  """
  return jax.nn.log_softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)


def token_nll(logits: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """float32 [B, T]: -log p(token) in nats, p restricted to each position's segment."""
  logp = segment_log_probs(logits, mask)
  return -jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
