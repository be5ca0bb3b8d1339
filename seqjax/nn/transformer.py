"""The Transformer (Vaswani et al. 2017) and its encoder-only / decoder-only relatives.

    embed: tokens -> E[token] · √d_model (+ positional encoding) -> dropout
    block (post-LN, the paper):  x = Norm(x + Dropout(Sublayer(x)))
    block (pre-LN):              x = x + Dropout(Sublayer(Norm(x)))   (+ a final Norm)
    sublayers: self-attention (causal in decoders), cross-attention
    (decoders of encoder-decoder models), feed-forward Dense(d_ff) -> ReLU/GELU -> Dense(d_model)

Models: `TransformerClassifier` (encoder + [CLS] or mean pooling),
`TransformerLM` (decoder-only, GPT-like) and `TransformerSeq2Seq` (encoder-
decoder). Shapes: B batch, T length, d = d_model, V vocabulary.

Incremental decoding: `lm_decoder` / `seq2seq_decoder` give a prefill (or
start) function and the `tokens_to_logits(tokens [B], cache) -> (logits
[B, V], cache)` step that seqjax.decoding (greedy, sampling, beam search)
drives; the cache holds every layer's keys and values
(`init_decoding_cache` makes an empty one).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import decoding
from seqjax.nn import checks, heads
from seqjax.nn.attention import IMPLEMENTATIONS, MultiHeadAttention, init_cache
from seqjax.nn.encoder_decoder import EncoderDecoder, Variables

Array = jax.Array

POSITIONAL = ("sinusoidal", "learned", "rotary", "none")
NORMS = ("layer", "rms", "batch")
NORM_POSITIONS = ("post", "pre")
ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu}
POOLINGS = ("cls", "mean")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters shared by every Transformer model (defaults: the paper's base model).

    vocab_size: input vocabulary (0: real-valued inputs [B, T, F], projected to d_model).
    d_model: residual stream width; d_ff: feed-forward hidden width.
    num_heads / num_kv_heads: query heads / key-value heads (None: num_heads).
    num_layers: blocks per stack.
    dropout_rate: on sub-layer outputs and on embeddings + positions (the paper's P_drop).
    attention_dropout_rate: on attention weights (not in the paper; 0 by default).
    positional: 'sinusoidal' (fixed, the paper), 'learned' (a max_len table),
      'rotary' (RoPE in every self-attention), 'none'.
    max_len: size of the learned position table.
    norm: 'layer' (learnable γ, β), 'rms' (RMSNorm) or 'batch' (BatchNorm over
      batch and valid positions, running averages in 'batch_stats').
    norm_position: 'post' (the paper) or 'pre'.
    activation: 'relu' (the paper) or 'gelu'.
    tie_embeddings: output logits use the (target) embedding matrix transposed.
    implementation: attention implementation, see seqjax.nn.attention.
    dtype: compute dtype, 'float32' or 'bfloat16' (parameters stay float32,
      softmax statistics and logits are float32).
    sow_attention_weights: every attention layer stores its weights in
      'intermediates' (for inspection; forces the 'xla' attention path).
    attention_cls: the attention module (MultiHeadAttention's call signature).
    """

    vocab_size: int = 0
    d_model: int = 512
    num_heads: int = 8
    num_kv_heads: int | None = None
    num_layers: int = 6
    d_ff: int = 2048
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    positional: str = "sinusoidal"
    max_len: int = 512
    rotary_base: float = 10000.0
    norm: str = "layer"
    norm_position: str = "post"
    activation: str = "relu"
    tie_embeddings: bool = False
    implementation: str = "auto"
    dtype: str = "float32"
    sow_attention_weights: bool = False
    attention_cls: Callable[..., nn.Module] = MultiHeadAttention

    def __post_init__(self):
        for field, value, allowed in (
            ("positional", self.positional, POSITIONAL),
            ("norm", self.norm, NORMS),
            ("norm_position", self.norm_position, NORM_POSITIONS),
            ("activation", self.activation, tuple(ACTIVATIONS)),
            ("implementation", self.implementation, IMPLEMENTATIONS),
            ("dtype", self.dtype, tuple(DTYPES)),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {field}={value!r}; choose one of {', '.join(allowed)}")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if self.num_heads % (self.num_kv_heads or self.num_heads):
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        if self.positional == "rotary" and (self.d_model // self.num_heads) % 2:
            raise ValueError(
                f"rotary positions need an even head width, got d_model/num_heads={self.d_model // self.num_heads}"
            )
        for field in ("dropout_rate", "attention_dropout_rate"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"{field} must be in [0, 1), got {getattr(self, field)}")

    @property
    def compute_dtype(self):
        return DTYPES[self.dtype]


# ----------------------------------------------------------------------------- positions


def sinusoidal_encoding(positions: Array, d_model: int) -> Array:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).

    positions [..., T] (ints) -> [..., T, d_model] float32.
    """
    half = (d_model + 1) // 2
    inv_freq = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) * 2.0 / d_model)
    angles = jnp.asarray(positions, jnp.float32)[..., None] * inv_freq  # [..., T, ceil(d/2)]
    interleaved = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(*angles.shape[:-1], 2 * half)
    return interleaved[..., :d_model]


class Embedder(nn.Module):
    """Token embedding · √d_model (or a Dense projection of real-valued
    features) plus positional encoding, then dropout."""

    config: TransformerConfig
    vocab_size: int

    def setup(self):
        cfg = self.config
        if self.vocab_size:
            # std d^-1/2 so that E · √d has unit scale, as the paper's scaling intends.
            self.embedding = self.param(
                "embedding", nn.initializers.normal(cfg.d_model**-0.5), (self.vocab_size, cfg.d_model), jnp.float32
            )
        else:
            self.projection = nn.Dense(cfg.d_model, dtype=cfg.compute_dtype, name="projection")
        if cfg.positional == "learned":
            self.position_table = self.param(
                "position_embedding", nn.initializers.normal(0.02), (cfg.max_len, cfg.d_model), jnp.float32
            )
        self.dropout = nn.Dropout(cfg.dropout_rate)

    def embed(self, inputs: Array) -> Array:
        """tokens [B, T] -> [B, T, d] (features [B, T, F] -> [B, T, d])."""
        cfg = self.config
        if not self.vocab_size:
            if inputs.ndim != 3:
                raise ValueError(f"real-valued inputs must be [batch, time, features], got shape {tuple(inputs.shape)}")
            return self.projection(inputs)
        if inputs.ndim != 2 or not jnp.issubdtype(inputs.dtype, jnp.integer):
            raise ValueError(
                f"token-id inputs must be integer [batch, time], got shape {tuple(inputs.shape)} dtype {inputs.dtype}"
            )
        vectors = jnp.take(self.embedding, checks.token_ids(inputs, self.vocab_size, "inputs"), axis=0, mode="fill")
        return (vectors * math.sqrt(cfg.d_model)).astype(cfg.compute_dtype)

    def add_positions(self, x: Array, positions: Array, deterministic: bool) -> Array:
        """x [B, T, d] + encoding of positions [B, T] or [T], then dropout."""
        cfg = self.config
        if cfg.positional == "sinusoidal":
            x = x + sinusoidal_encoding(positions, cfg.d_model).astype(x.dtype)
        elif cfg.positional == "learned":
            if x.shape[1] > cfg.max_len:
                raise ValueError(
                    f"sequence of length {x.shape[1]} is longer than the learned position "
                    f"table (max_len={cfg.max_len}); raise config max_len or use sinusoidal/rotary"
                )
            x = x + jnp.take(self.position_table, positions, axis=0).astype(x.dtype)
        return self.dropout(x, deterministic=deterministic)

    def __call__(self, inputs: Array, positions: Array, deterministic: bool = True) -> Array:
        return self.add_positions(self.embed(inputs), positions, deterministic)

    def attend(self, x: Array) -> Array:
        """Tied output layer: x [B, T, d] -> logits x Eᵀ [B, T, V] (float32)."""
        return jnp.einsum("btd,vd->btv", x, self.embedding.astype(x.dtype), preferred_element_type=jnp.float32)


# ----------------------------------------------------------------------------- blocks


class Norm(nn.Module):
    """LayerNorm (learnable γ, β), RMSNorm, or BatchNorm over batch and valid positions."""

    kind: str
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, valid: Array | None = None, deterministic: bool = True) -> Array:
        """x [B, T, d]; valid [B, T] bool marks real tokens (BatchNorm statistics skip the rest)."""
        if self.kind == "layer":
            return nn.LayerNorm(dtype=self.dtype)(x)
        if self.kind == "rms":
            return nn.RMSNorm(dtype=self.dtype)(x)
        if not deterministic and not self.is_mutable_collection("batch_stats"):
            raise ValueError(
                "norm='batch' updates running statistics while training: apply the model with "
                "mutable=['batch_stats'] (and pass the 'batch_stats' collection back in)"
            )
        mask = None if valid is None else jnp.broadcast_to(valid[..., None], x.shape)
        return nn.BatchNorm(use_running_average=deterministic, momentum=0.9, dtype=self.dtype)(x, mask=mask)


class FeedForward(nn.Module):
    """Position-wise Dense(d_ff) -> activation -> Dense(d_model)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        h = nn.Dense(cfg.d_ff, dtype=cfg.compute_dtype, name="hidden")(x)
        return nn.Dense(cfg.d_model, dtype=cfg.compute_dtype, name="output")(ACTIVATIONS[cfg.activation](h))


def residual(
    cfg: TransformerConfig,
    x: Array,
    sublayer: Callable[[Array], Array],
    norm: Norm,
    valid: Array | None,
    deterministic: bool,
) -> Array:
    """post-LN: Norm(x + Dropout(sublayer(x))); pre-LN: x + Dropout(sublayer(Norm(x)))."""

    def drop(y):
        return nn.Dropout(cfg.dropout_rate)(y, deterministic=deterministic)

    if cfg.norm_position == "pre":
        return x + drop(sublayer(norm(x, valid, deterministic)))
    return norm(x + drop(sublayer(x)), valid, deterministic)


def _attention(cfg: TransformerConfig, name: str, rotary: bool) -> nn.Module:
    return cfg.attention_cls(
        num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads,
        dropout_rate=cfg.attention_dropout_rate,
        rotary=rotary,
        rotary_base=cfg.rotary_base,
        implementation=cfg.implementation,
        sow_weights=cfg.sow_attention_weights,
        dtype=cfg.compute_dtype,
        name=name,
    )


class EncoderBlock(nn.Module):
    """Bidirectional self-attention + feed-forward."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, lengths: Array | None, valid: Array | None, deterministic: bool) -> Array:
        cfg = self.config
        attend = _attention(cfg, "self_attention", cfg.positional == "rotary")
        x = residual(
            cfg,
            x,
            lambda h: attend(h, kv_lengths=lengths, deterministic=deterministic),
            Norm(cfg.norm, cfg.compute_dtype, name="attention_norm"),
            valid,
            deterministic,
        )
        return residual(
            cfg,
            x,
            FeedForward(cfg, name="ffn"),
            Norm(cfg.norm, cfg.compute_dtype, name="ffn_norm"),
            valid,
            deterministic,
        )


class DecoderBlock(nn.Module):
    """Causal self-attention (+ cross-attention to an encoder) + feed-forward."""

    config: TransformerConfig
    cross_attention: bool = False

    @nn.compact
    def __call__(
        self,
        x: Array,
        valid: Array | None,
        deterministic: bool,
        *,
        encoded: Any = None,
        encoded_lengths: Array | None = None,
        decode: bool = False,
        decode_lengths: Array | None = None,
        project_memory: bool = False,
    ) -> Any:
        """x [B, T, d] -> [B, T, d]. `encoded`: the encoder output [B, S, d], or
        this block's cross-attention (key, value) from project_memory=True,
        which returns them for encoded [B, S, d] (x is ignored)."""
        cfg = self.config
        if project_memory:
            return _attention(cfg, "cross_attention", rotary=False)(encoded, encoded, project_kv_only=True)
        self_attend = _attention(cfg, "self_attention", cfg.positional == "rotary")
        x = residual(
            cfg,
            x,
            lambda h: self_attend(
                h, causal=True, deterministic=deterministic, decode=decode, decode_lengths=decode_lengths
            ),
            Norm(cfg.norm, cfg.compute_dtype, name="attention_norm"),
            valid,
            deterministic,
        )
        if self.cross_attention:
            if encoded is None:
                raise ValueError("a decoder block with cross-attention needs the encoder outputs (encoded)")
            cross_attend = _attention(cfg, "cross_attention", rotary=False)
            x = residual(
                cfg,
                x,
                lambda h: cross_attend(h, encoded, kv_lengths=encoded_lengths, deterministic=deterministic),
                Norm(cfg.norm, cfg.compute_dtype, name="cross_norm"),
                valid,
                deterministic,
            )
        return residual(
            cfg,
            x,
            FeedForward(cfg, name="ffn"),
            Norm(cfg.norm, cfg.compute_dtype, name="ffn_norm"),
            valid,
            deterministic,
        )


def _valid(lengths: Array | None, time: int) -> Array | None:
    return None if lengths is None else jnp.arange(time)[None, :] < lengths[:, None]


def _check_lengths(lengths: Array | None, batch: int) -> None:
    if lengths is not None and tuple(lengths.shape) != (batch,):
        raise ValueError(f"lengths must have shape [batch]=({batch},), got {tuple(lengths.shape)}")


class Encoder(nn.Module):
    """Embedder output [B, T, d] -> num_layers encoder blocks (-> final Norm under pre-LN)."""

    config: TransformerConfig

    @nn.compact
    def __call__(self, x: Array, lengths: Array | None, deterministic: bool) -> Array:
        cfg = self.config
        valid = _valid(lengths, x.shape[1])
        for i in range(cfg.num_layers):
            x = EncoderBlock(cfg, name=f"layer_{i}")(x, lengths, valid, deterministic)
        if cfg.norm_position == "pre":
            x = Norm(cfg.norm, cfg.compute_dtype, name="final_norm")(x, valid, deterministic)
        return x


class Decoder(nn.Module):
    """Embedded targets [B, T, d] -> num_layers decoder blocks (-> final Norm under pre-LN)."""

    config: TransformerConfig
    cross_attention: bool = False

    @nn.compact
    def __call__(
        self,
        x: Array,
        lengths: Array | None,
        deterministic: bool,
        *,
        encoded: Any = None,
        project_memory: bool = False,
        **block_kwargs,
    ) -> Any:
        """`encoded`: the encoder output [B, S, d], or the per-layer list of
        cross-attention (key, value) that project_memory=True returns for it."""
        cfg = self.config
        blocks = [DecoderBlock(cfg, self.cross_attention, name=f"layer_{i}") for i in range(cfg.num_layers)]
        if project_memory:
            return [block(x, None, deterministic, encoded=encoded, project_memory=True) for block in blocks]
        valid = _valid(lengths, x.shape[1])
        for i, block in enumerate(blocks):
            layer_encoded = encoded[i] if isinstance(encoded, list) else encoded
            x = block(x, valid, deterministic, encoded=layer_encoded, **block_kwargs)
        if cfg.norm_position == "pre":
            x = Norm(cfg.norm, cfg.compute_dtype, name="final_norm")(x, valid, deterministic)
        return x


class DecodePositions(nn.Module):
    """Positions [B, T] of the tokens fed now: 0..T-1, or, when decoding,
    after those the 'cache' already holds (its counter advances by T, or by
    decode_lengths [B])."""

    @nn.compact
    def __call__(self, batch: int, time: int, decode: bool = False, decode_lengths: Array | None = None) -> Array:
        positions = jnp.broadcast_to(jnp.arange(time), (batch, time))
        if not decode:
            return positions
        counter = self.variable("cache", "position", jnp.zeros, (batch,), jnp.int32)
        if self.is_initializing():
            return positions
        start = counter.value
        counter.value = start + (time if decode_lengths is None else decode_lengths.astype(jnp.int32))
        return start[:, None] + positions


class _Output(nn.Module):
    """Final projection to `size` logits (float32), tied to `embedder` when asked."""

    config: TransformerConfig
    size: int

    @nn.compact
    def __call__(self, x: Array, embedder: Embedder) -> Array:
        if self.config.tie_embeddings:
            return embedder.attend(x)
        return nn.Dense(self.size, dtype=self.config.compute_dtype, name="logits")(x).astype(jnp.float32)


# ----------------------------------------------------------------------------- models


class TransformerClassifier(nn.Module):
    """Encoder-only sequence classifier / regressor: [B, T] tokens (or [B, T, F]
    features) -> [B, output_size].

    pooling: 'cls' prepends a learned [CLS] vector and reads the encoder's
    output there; 'mean' averages the outputs over valid positions.
    """

    batch_inputs: ClassVar[tuple[str, ...]] = ()  # batch entries beyond inputs/lengths it reads (none)

    config: TransformerConfig
    output_size: int
    pooling: str = "cls"

    @nn.compact
    def __call__(self, inputs: Array, lengths: Array | None = None, *, deterministic: bool = True) -> Array:
        cfg = self.config
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        _check_lengths(lengths, inputs.shape[0])
        embedder = Embedder(cfg, cfg.vocab_size, name="embedder")
        x = embedder.embed(inputs)
        x = checks.nan_rows(x, checks.row_lengths(lengths, inputs.shape[1]))
        if self.pooling == "cls":
            cls = self.param("cls", nn.initializers.normal(1.0), (cfg.d_model,), jnp.float32)
            x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, cfg.d_model)), x], axis=1)
            lengths = None if lengths is None else lengths + 1
        x = embedder.add_positions(x, jnp.arange(x.shape[1]), deterministic)
        x = Encoder(cfg, name="encoder")(x, lengths, deterministic)
        features = x[:, 0] if self.pooling == "cls" else heads.masked_mean(x, lengths)
        return nn.Dense(self.output_size, name="output")(features.astype(jnp.float32))


class TransformerLM(nn.Module):
    """Decoder-only (GPT-like) model: tokens [B, T] -> next-token logits [B, T, output_size].

    `lengths` only keep padding out of BatchNorm statistics: the causal mask
    already hides a row's padded tail from all of its real positions.
    decode=True runs on the KV cache (see `init_decoding_cache`).
    """

    batch_inputs: ClassVar[tuple[str, ...]] = ()  # batch entries beyond inputs/lengths it reads (none)

    config: TransformerConfig
    output_size: int

    @nn.compact
    def __call__(
        self,
        inputs: Array,
        lengths: Array | None = None,
        *,
        deterministic: bool = True,
        decode: bool = False,
        decode_lengths: Array | None = None,
    ) -> Array:
        cfg = self.config
        if cfg.tie_embeddings and self.output_size != cfg.vocab_size:
            raise ValueError(
                f"tie_embeddings needs output_size == vocab_size, got {self.output_size} and {cfg.vocab_size}"
            )
        batch, time = inputs.shape[:2]
        _check_lengths(lengths, batch)
        embedder = Embedder(cfg, cfg.vocab_size, name="embedder")
        positions = DecodePositions(name="positions")(batch, time, decode, decode_lengths)
        x = embedder(inputs, positions, deterministic)
        if not decode:  # (while decoding, T is the step's width, not the sequence's)
            x = checks.nan_rows(x, checks.row_lengths(lengths, time))
        x = Decoder(cfg, name="decoder")(x, lengths, deterministic, decode=decode, decode_lengths=decode_lengths)
        return _Output(cfg, self.output_size, name="output")(x, embedder)


class TransformerSeq2Seq(EncoderDecoder):
    """Encoder-decoder Transformer: source [B, S] and shifted targets [B, T]
    -> logits [B, T, target_vocab_size].

    The decoder's self-attention is causal; its cross-attention reads the
    encoder outputs, hiding source padding (`lengths`).
    """

    config: TransformerConfig
    target_vocab_size: int
    num_decoder_layers: int | None = None

    # Batch entries seqjax.training passes as keyword arguments.
    batch_inputs: ClassVar[tuple[str, ...]] = ("decoder_inputs",)

    def setup(self):
        cfg = self.config
        if cfg.tie_embeddings and not self.target_vocab_size:
            raise ValueError("tie_embeddings needs a target vocabulary")
        decoder_cfg = dataclasses.replace(cfg, num_layers=self.num_decoder_layers or cfg.num_layers)
        self.source_embedder = Embedder(cfg, cfg.vocab_size)
        self.target_embedder = Embedder(cfg, self.target_vocab_size)
        self.encoder = Encoder(cfg)
        self.positions = DecodePositions()
        self.decoder = Decoder(decoder_cfg, cross_attention=True)
        self.output = _Output(cfg, self.target_vocab_size)

    def encode(self, inputs: Array, lengths: Array | None = None, *, deterministic: bool = True) -> Array:
        """Source [B, S] -> encoder outputs [B, S, d]."""
        _check_lengths(lengths, inputs.shape[0])
        x = self.source_embedder(inputs, jnp.arange(inputs.shape[1]), deterministic)
        x = checks.nan_rows(x, checks.row_lengths(lengths, inputs.shape[1]))
        return self.encoder(x, lengths, deterministic)

    def cross_memory(self, encoded: Array) -> list[tuple[Array, Array]]:
        """Encoder outputs [B, S, d] -> every decoder layer's cross-attention
        (key, value) [B, S, K, D], projected once for a whole decoding run;
        `decode` takes the list in place of `encoded`."""
        return self.decoder(encoded, None, True, encoded=encoded, project_memory=True)

    def decode(
        self,
        decoder_inputs: Array,
        encoded: Any,
        lengths: Array | None = None,
        *,
        decoder_lengths: Array | None = None,
        deterministic: bool = True,
        decode: bool = False,
        decode_lengths: Array | None = None,
    ) -> Array:
        """Shifted targets [B, T] attending to encoded [B, S, d] (or its
        `cross_memory`) -> logits [B, T, V_target]."""
        batch, time = decoder_inputs.shape[:2]
        positions = self.positions(batch, time, decode, decode_lengths)
        y = self.target_embedder(decoder_inputs, positions, deterministic)
        y = self.decoder(
            y,
            decoder_lengths,
            deterministic,
            encoded=encoded,
            encoded_lengths=lengths,
            decode=decode,
            decode_lengths=decode_lengths,
        )
        return self.output(y, self.target_embedder)

    def __call__(
        self,
        inputs: Array,
        lengths: Array | None = None,
        *,
        decoder_inputs: Array | None = None,
        decoder_lengths: Array | None = None,
        deterministic: bool = True,
    ) -> Array:
        if decoder_inputs is None:
            raise ValueError(
                "TransformerSeq2Seq needs decoder_inputs: the target tokens shifted right "
                "(begin-of-sequence first), as the decoder's teacher-forced input"
            )
        encoded = self.encode(inputs, lengths, deterministic=deterministic)
        return self.decode(
            decoder_inputs, encoded, lengths, decoder_lengths=decoder_lengths, deterministic=deterministic
        )

    @nn.nowrap
    def incremental_decoder(self, variables: Variables, max_len: int) -> tuple[Callable, Callable]:
        """(start, tokens_to_logits) on a KV cache of `max_len` target
        positions (seqjax.nn.encoder_decoder; see `seq2seq_decoder`)."""
        return seq2seq_decoder(self, variables, max_len)

    @nn.nowrap
    def source_attention(
        self, variables: Variables, inputs: Array, lengths: Array | None, decoder_inputs: Array
    ) -> Array:
        """The last decoder layer's cross-attention weights [B, T, S] for
        decoder_inputs [B, T], averaged over heads (float32)."""
        sowing = self.clone(config=dataclasses.replace(self.config, sow_attention_weights=True))
        _, state = sowing.apply(variables, inputs, lengths, decoder_inputs=decoder_inputs, mutable=["intermediates"])
        decoder = state["intermediates"]["decoder"]
        last = decoder[f"layer_{len(decoder) - 1}"]["cross_attention"]["attention_weights"][0]  # [B, H, T, S]
        return jnp.mean(last.astype(jnp.float32), axis=1)


# Every model built from a TransformerConfig (`model.config`): the ones whose
# attention weights `sow_attention_weights` can record.
MODELS = (TransformerClassifier, TransformerLM, TransformerSeq2Seq)


# ----------------------------------------------------------------------------- decoding


def init_decoding_cache(
    model: nn.Module, batch_size: int, max_len: int, encoded: Array | None = None, lengths: Array | None = None
) -> Any:
    """A zero KV cache for decoding up to `max_len` tokens per row with a
    TransformerLM, or a TransformerSeq2Seq given its `encoded` source [B, S, d]."""
    tokens = jnp.zeros((batch_size, max_len), jnp.int32)
    if isinstance(model, TransformerSeq2Seq):
        if encoded is None:
            raise ValueError("a TransformerSeq2Seq cache is sized from the encoded source: pass encoded")
        return init_cache(model, tokens, encoded, lengths, method=TransformerSeq2Seq.decode)
    return init_cache(model, tokens)


def lm_decoder(model: TransformerLM, variables: dict, max_len: int) -> tuple[Callable, Callable]:
    """(prefill, tokens_to_logits) driving a TransformerLM through seqjax.decoding.

    prefill(prompt [B, P], lengths [B] or None) -> the KV cache after all
      but each prompt's last token (max_len positions: room for P - 1 + the
      new tokens); pass the last tokens as `first_tokens`. With `lengths`,
      row b's prompt is prompt[b, :lengths[b]].
    tokens_to_logits(tokens [B], cache) -> (next-token logits [B, V], cache).
    `variables`: {'params': ...} plus 'batch_stats' for norm='batch'.
    """

    def prefill(prompt: Array, lengths: Array | None = None) -> Any:
        prompt = jnp.asarray(prompt, jnp.int32)
        if prompt.ndim != 2 or prompt.shape[1] < 1:
            raise ValueError(f"prompt must be [batch, length >= 1] token ids, got shape {prompt.shape}")
        cache = init_decoding_cache(model, prompt.shape[0], max_len)
        if prompt.shape[1] == 1:
            return cache
        seen = None if lengths is None else jnp.asarray(lengths, jnp.int32) - 1
        _, state = model.apply(
            {**variables, "cache": cache}, prompt[:, :-1], decode=True, decode_lengths=seen, mutable=["cache"]
        )
        return state["cache"]

    def tokens_to_logits(tokens: Array, cache: Any) -> tuple[Array, Any]:
        logits, state = model.apply({**variables, "cache": cache}, tokens[:, None], decode=True, mutable=["cache"])
        return logits[:, 0], state["cache"]

    return prefill, tokens_to_logits


def seq2seq_decoder(model: TransformerSeq2Seq, variables: dict, max_len: int) -> tuple[Callable, Callable]:
    """(start, tokens_to_logits) driving a TransformerSeq2Seq's decoder through seqjax.decoding.

    start(inputs [B, S], lengths [B] or None) -> cache: the encoded source
      (with its lengths) and an empty KV cache for max_len target tokens;
      feed the begin-of-sequence token first.
    tokens_to_logits(tokens [B], cache) -> (logits [B, V_target], cache).
    Every cache leaf has the batch first, so beam search can tile and reorder it.
    """

    def start(inputs: Array, lengths: Array | None = None) -> dict:
        encoded = model.apply(variables, inputs, lengths, method=TransformerSeq2Seq.encode)
        if lengths is None:
            lengths = jnp.full(inputs.shape[:1], inputs.shape[1], jnp.int32)
        kv = init_decoding_cache(model, inputs.shape[0], max_len, encoded, lengths)
        # The cross-attention keys and values are projected once here, not at every step, and beams
        # share them: Static keeps beam search from reordering them.
        memory = model.apply(variables, encoded, method=TransformerSeq2Seq.cross_memory)
        return {"kv": kv, "source": decoding.Static((memory, jnp.asarray(lengths, jnp.int32)))}

    def tokens_to_logits(tokens: Array, cache: dict) -> tuple[Array, dict]:
        memory, lengths = cache["source"].value
        logits, state = model.apply(
            {**variables, "cache": cache["kv"]},
            tokens[:, None],
            memory,
            lengths,
            decode=True,
            mutable=["cache"],
            method=TransformerSeq2Seq.decode,
        )
        return logits[:, 0], {**cache, "kv": state["cache"]}

    return start, tokens_to_logits
