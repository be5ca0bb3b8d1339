"""Recurrent encoder-decoders: Sutskever et al. 2014, Bahdanau et al. 2015,
Luong et al. 2015, and a decoder conditioned on a fixed vector.

    Seq2Seq            source ids [B, S] -> encoder (stacked, optionally
                       bidirectional) -> decoder -> logits [B, T, V]
      attention='none'           the encoder's final state is the decoder's
                                 initial state, the only path from source to
                                 target (the 2014 model; reverse_source=True
                                 reads the source backwards, as in the paper)
      attention='bahdanau'       bidirectional encoder; at step i the context
                                 c_i = Σ_j α_ij h_j with α from s_{i-1}
                                 (additive scores) joins the decoder input
      attention='luong_<score>'  scores from the current state s_i (dot,
                                 general, concat); h̃_i = tanh(W_c [c_i; s_i])
                                 feeds the softmax and, with input_feeding,
                                 the next step's input
    VectorToSequence   a feature vector [B, F] (an image's, say) sets the
                       decoder's initial state: one-to-many generation

Shapes: B batch, S source steps, T target steps, V target vocabulary, E
encoder output width, H decoder hidden width, L decoder layers.

One decoder step (`RNNDecoder.step`) is a pure function of the weights, the
state and the input tokens. Training scans it over the target (teacher
forcing, or scheduled sampling from the model's own predictions), and
incremental decoding calls it once per token through

    tokens_to_logits(tokens [B], cache) -> (logits [B, V], cache)

with cache = {'state': decoder state, 'memory': {'values': encoder outputs,
'keys': projected keys, 'mask': source mask}}, so both follow the same code
and any `seqjax.decoding` search (greedy, sampling, beam) drives either model.
Both models are `seqjax.nn.encoder_decoder.EncoderDecoder`s:
`model.incremental_decoder(variables, max_len)` returns (start,
tokens_to_logits) and `model.source_attention(...)` the attention α.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from seqjax import decoding
from seqjax.nn import cells as cells_lib
from seqjax.nn import checks, recurrent, rnn_attention
from seqjax.nn.encoder_decoder import EncoderDecoder, Variables

Array = jax.Array

ATTENTIONS = ("none", "bahdanau", "luong_dot", "luong_general", "luong_concat")
BRIDGES = ("auto", "dense", "none")
TEACHER_FORCING_SCHEDULES = ("constant", "linear", "exponential", "inverse_sigmoid")


def teacher_forcing_ratio(
    step: int, schedule: str = "constant", final_ratio: float = 1.0, decay_steps: int = 1000
) -> float:
    """Probability of feeding the true previous token at training step `step`
    (scheduled sampling, Bengio et al. 2015); it falls from 1 to `final_ratio`:

      constant         final_ratio throughout
      linear           1 -> final_ratio linearly over decay_steps, then flat
      exponential      final + (1 - final) * 0.5 ** (step / decay_steps)  (half-life decay_steps)
      inverse_sigmoid  final + (1 - final) * k / (k + exp(step / k)), k = decay_steps
    """
    if schedule not in TEACHER_FORCING_SCHEDULES:
        raise ValueError(
            f"unknown teacher forcing schedule {schedule!r}; choose one of {', '.join(TEACHER_FORCING_SCHEDULES)}"
        )
    if not 0.0 <= final_ratio <= 1.0:
        raise ValueError(f"teacher forcing ratio must lie in [0, 1], got {final_ratio}")
    if decay_steps <= 0:
        raise ValueError(f"decay_steps must be > 0, got {decay_steps}")
    if schedule == "constant":
        return float(final_ratio)
    if schedule == "linear":
        decay = 1.0 - min(step / decay_steps, 1.0)
    elif schedule == "exponential":
        decay = 0.5 ** (step / decay_steps)
    else:
        k = float(decay_steps)
        decay = k / (k + math.exp(min(step / k, 700.0)))
    return float(final_ratio + (1.0 - final_ratio) * decay)


def reversal_index(lengths: Array, time: int) -> Array:
    """[B, S] gather index that reverses each row's first lengths[b] steps and
    leaves its padding in place (an involution: applying it twice is identity)."""
    steps = jnp.arange(time)[None, :]
    return jnp.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)


def reverse_valid(tokens: Array, lengths: Array | None) -> Array:
    """tokens [B, S] with each row's valid prefix reversed (padding stays at the end)."""
    if lengths is None:
        return tokens[:, ::-1]
    return jnp.take_along_axis(tokens, reversal_index(lengths, tokens.shape[1]), axis=1)


def check_token_ids(ids: Array, vocab_size: int, what: str) -> Array:
    """Clear errors for ids that are not [B, T] integers; their range as
    `checks.token_ids` checks it (returns the ids to embed, with
    `jnp.take(..., mode='fill')`)."""
    if ids.ndim != 2:
        raise ValueError(f"{what} must be [batch, time] token ids, got shape {tuple(ids.shape)}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{what} must be integer token ids, got dtype {ids.dtype}")
    return checks.token_ids(ids, vocab_size, what)


def _check_ratio(ratio: Any) -> None:
    if ratio is None:
        return
    values = checks.concrete_or_none(ratio)
    if values is not None and ((values < 0).any() or (values > 1).any()):
        raise ValueError(f"teacher_forcing_ratio must lie in [0, 1], got {values.ravel()[:5].tolist()}")


class RNNDecoder(nn.Module):
    """Embedding -> stacked cells (-> attention) -> softmax projection, one step at a time.

    Attributes:
      vocab_size: V, the target vocabulary.
      cell, hidden_size, num_layers: the stacked cells (H units each).
      embed_size: width of the target embedding.
      attention: one of ATTENTIONS.
      memory_size: E, the width of the encoder outputs attended to.
      attention_size: width of the additive/concat alignment layer (0 = H).
      input_feeding: Luong: feed h̃_{i-1} into step i with the token.
      tie_embeddings: the output projection reuses the target embedding
        (features are first projected to embed_size when the widths differ).
      dropout_rate: on the input embeddings and on the features before the
        softmax projection.
      cell_kwargs: extra cell attributes, e.g. {'forget_bias': 1.0}.
    """

    vocab_size: int
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 1
    embed_size: int = 64
    attention: str = "none"
    memory_size: int = 0
    attention_size: int = 0
    input_feeding: bool = True
    tie_embeddings: bool = False
    dropout_rate: float = 0.0
    cell_kwargs: dict | None = None

    @property
    def score(self) -> str | None:
        """The rnn_attention score name, None without attention."""
        if self.attention == "none":
            return None
        return "bahdanau" if self.attention == "bahdanau" else self.attention[len("luong_") :]

    @property
    def luong(self) -> bool:
        return self.attention.startswith("luong_")

    @property
    def feeds(self) -> bool:
        return self.luong and self.input_feeding

    def setup(self):
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}; choose one of {', '.join(ATTENTIONS)}")
        if self.attention != "none" and self.memory_size <= 0:
            raise ValueError(f"attention={self.attention!r} needs the encoder output width (memory_size > 0)")
        hidden, embed = self.hidden_size, self.embed_size
        self.cells = [
            cells_lib.make_cell(self.cell, hidden, **(self.cell_kwargs or {})) for _ in range(self.num_layers)
        ]
        self.embedding = self.param("embedding", nn.linear.default_embed_init, (self.vocab_size, embed))
        self.attention_params = (
            {}
            if self.score is None
            else rnn_attention.attention_weights(
                self, self.score, hidden, self.memory_size, self.attention_size or hidden
            )
        )
        dense = nn.initializers.glorot_uniform()
        zeros = nn.initializers.zeros_init()
        if self.attention == "bahdanau":  # readout from [s_i; c_i; E y_{i-1}], a tanh layer (Bahdanau's is maxout)
            self.readout = {
                "kernel": self.param("readout_kernel", dense, (hidden + self.memory_size + embed, hidden)),
                "bias": self.param("readout_bias", zeros, (hidden,)),
            }
        elif self.luong:  # h̃_i = tanh(W_c [c_i; s_i])
            self.readout = {
                "kernel": self.param("readout_kernel", dense, (self.memory_size + hidden, hidden)),
                "bias": self.param("readout_bias", zeros, (hidden,)),
            }
        else:
            self.readout = {}
        output = {"bias": self.param("output_bias", zeros, (self.vocab_size,))}
        if not self.tie_embeddings:
            output["kernel"] = self.param("output_kernel", dense, (hidden, self.vocab_size))
        elif hidden != embed:
            output["projection"] = self.param("output_projection", dense, (hidden, embed))
        self.output = output
        self.dropout = nn.Dropout(self.dropout_rate)

    def input_size(self, layer: int) -> int:
        if layer:
            return self.hidden_size
        extra = self.memory_size if self.attention == "bahdanau" else self.hidden_size if self.feeds else 0
        return self.embed_size + extra

    def weights(self) -> dict[str, Any]:
        """Every parameter as a plain array, for the pure `step`."""
        return {
            "cells": [cell.weights(self.input_size(i)) for i, cell in enumerate(self.cells)],
            "embedding": self.embedding,
            "attention": self.attention_params,
            "readout": self.readout,
            "output": self.output,
        }

    def initial_state(self, carries: tuple) -> dict[str, Any]:
        """Decoder state from per-layer carries (adds h̃_0 = 0 when feeding)."""
        state = {"carries": tuple(carries)}
        if self.feeds:
            batch = jax.tree.leaves(carries[0])[0].shape[0]
            state["feed"] = jnp.zeros((batch, self.hidden_size), self.embedding.dtype)
        return state

    def memory(self, encoded: Array, mask: Array) -> dict[str, Array] | None:
        """What attention reads at every step: encoder outputs [B, S, E], their
        projected keys and the source mask [B, S] (None without attention)."""
        if self.score is None:
            return None
        keys = rnn_attention.project_keys(self.score, self.attention_params, encoded)
        return {"values": encoded, "keys": keys, "mask": mask}

    @nn.nowrap
    def step(
        self, w: dict, state: dict, tokens: Array, memory: dict | None, keep: dict | None = None
    ) -> tuple[dict, Array, Array | None]:
        """One decoder step on tokens [B] -> (state, logits [B, V], α [B, S] or None).

        keep: dropout keep-masks {'embed': [B, embed], 'output': [B, H]}
        (already scaled by 1 / (1 - rate)), None for no dropout.
        """
        embedded = jnp.take(w["embedding"], tokens, axis=0, mode="fill")  # an out-of-range id: NaN (seqjax.nn.checks)
        if keep is not None:
            embedded = embedded * keep["embed"]
        x, alpha, context = embedded, None, None
        if self.attention == "bahdanau":  # scores from the previous state s_{i-1}
            query = self.cells[-1].hidden_of(state["carries"][-1])
            context, alpha = self._attend(w, query, memory)
            x = jnp.concatenate([embedded, context], axis=-1)
        elif self.feeds:
            x = jnp.concatenate([embedded, state["feed"]], axis=-1)
        carries = []
        for cell, cell_weights, carry in zip(self.cells, w["cells"], state["carries"]):
            carry, x = cell.step(cell_weights, carry, cell.project_inputs(cell_weights, x))
            carries.append(carry)
        new_state = {"carries": tuple(carries)}
        if self.attention == "bahdanau":
            features = self._readout(w, [x, context, embedded])
        elif self.luong:  # scores from the current state s_i
            context, alpha = self._attend(w, x, memory)
            features = self._readout(w, [context, x])
            if self.feeds:
                new_state["feed"] = features
        else:
            features = x
        if keep is not None:
            features = features * keep["output"]
        return new_state, self._logits(w, features), alpha

    @nn.nowrap
    def _attend(self, w, query, memory):
        return rnn_attention.attend(self.score, w["attention"], query, memory["keys"], memory["values"], memory["mask"])

    @nn.nowrap
    def _readout(self, w, parts):
        return jnp.tanh(jnp.concatenate(parts, axis=-1) @ w["readout"]["kernel"] + w["readout"]["bias"])

    @nn.nowrap
    def _logits(self, w, features):
        output = w["output"]
        if "kernel" in output:
            return features @ output["kernel"] + output["bias"]
        if "projection" in output:
            features = features @ output["projection"]
        return features @ w["embedding"].T + output["bias"]

    def __call__(
        self,
        state: dict,
        decoder_inputs: Array,
        memory: dict | None,
        *,
        teacher_forcing_ratio: Array | float | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, Array | None]:
        """Runs the decoder over decoder_inputs [B, T] -> (logits [B, T, V], α [B, T, S] or None).

        Step t reads decoder_inputs[:, t] (teacher forcing). With a
        teacher_forcing_ratio (scalar or [B]) and deterministic=False, step
        t > 0 instead reads, with probability 1 - ratio per row, a token
        sampled from the model's own step t-1 prediction (scheduled sampling;
        the randomness comes from the 'dropout' rng stream).
        """
        w = self.weights()
        batch, time = decoder_inputs.shape
        inputs_tm = decoder_inputs.T
        keep = None
        if not deterministic and self.dropout_rate > 0:
            ones = jnp.ones((time, batch, self.embed_size + self.hidden_size), self.embedding.dtype)
            masks = self.dropout(ones, deterministic=False)
            keep = {"embed": masks[..., : self.embed_size], "output": masks[..., self.embed_size :]}
        use_truth = sample_keys = None
        if teacher_forcing_ratio is not None and not deterministic:
            _check_ratio(teacher_forcing_ratio)
            coin_rng, sample_rng = jax.random.split(self.make_rng("dropout"))
            ratio = jnp.broadcast_to(jnp.asarray(teacher_forcing_ratio, jnp.float32), (batch,))
            use_truth = (jax.random.uniform(coin_rng, (time, batch)) < ratio).at[0].set(True)
            sample_keys = jax.random.split(sample_rng, time)

        def body(carry, xs):
            state, sampled = carry
            true_tokens, truth, key, keep_t = xs
            tokens = true_tokens if truth is None else jnp.where(truth, true_tokens, sampled)
            state, logits, alpha = self.step(w, state, tokens, memory, keep_t)
            if key is not None:  # the prediction the next step may read instead of the truth
                sampled = jax.random.categorical(key, jax.lax.stop_gradient(logits)).astype(tokens.dtype)
            return (state, sampled), (logits, alpha)

        start = (state, jnp.zeros((batch,), inputs_tm.dtype))
        _, (logits, alpha) = jax.lax.scan(body, start, (inputs_tm, use_truth, sample_keys, keep))
        return jnp.swapaxes(logits, 0, 1), None if alpha is None else jnp.swapaxes(alpha, 0, 1)


def _decode_step(decoder: RNNDecoder, tokens: Array, cache: dict) -> tuple[Array, dict]:
    """tokens [B] -> (logits [B, V], cache with the advanced decoder state)."""
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"decode_step takes one token per row, shape [batch]; got shape {tuple(tokens.shape)}")
    state, logits, _ = decoder.step(decoder.weights(), cache["state"], tokens, cache.get("memory"))
    return logits, {**cache, "state": state}


def _num_carry_parts(cell: str) -> int:
    """How many arrays a carry of `cell` holds (LSTM: h and c; others: h)."""
    return len(jax.tree.leaves(cells_lib.make_cell(cell, 1, parent=None).initial_carry(1)))


class Seq2Seq(EncoderDecoder):
    """Recurrent encoder-decoder with optional attention (see the module docstring).

    Attributes:
      source_vocab_size, target_vocab_size: vocabularies (id 0 is padding).
      cell: cell name for encoder and decoder (seqjax.nn.cells.make_cell).
      hidden_size: H, decoder units per layer.
      encoder_hidden_size: encoder units per direction (0 = hidden_size).
      embed_size: width of both embeddings.
      encoder_layers, decoder_layers: depths of the two stacks.
      attention: one of ATTENTIONS.
      attention_size: additive/concat alignment width (0 = hidden_size).
      bidirectional_encoder: None = True for Bahdanau, False otherwise.
      reverse_source: read each source backwards (its valid tokens only).
      input_feeding: Luong input feeding.
      bridge: how the encoder's final state becomes the decoder's initial
        state: 'auto' (copied when the widths agree, else a Dense layer per
        state array), 'dense' (always a Dense layer), 'none' (zeros).
        Equal depths map layer to layer; otherwise every decoder layer starts
        from the top encoder layer. A bidirectional encoder contributes
        [forward; backward] final states.
      tie_embeddings: softmax projection = target embedding transposed.
      dropout_rate: on embeddings, between encoder layers and before the softmax.
      implementation: encoder recurrence (see seqjax.nn.recurrent.Recurrent).
      cell_kwargs: extra cell attributes, e.g. {'forget_bias': 1.0}.
    """

    source_vocab_size: int
    target_vocab_size: int
    cell: str = "lstm"
    hidden_size: int = 128
    encoder_hidden_size: int = 0
    embed_size: int = 64
    encoder_layers: int = 1
    decoder_layers: int = 1
    attention: str = "none"
    attention_size: int = 0
    bidirectional_encoder: bool | None = None
    reverse_source: bool = False
    input_feeding: bool = True
    bridge: str = "auto"
    tie_embeddings: bool = False
    dropout_rate: float = 0.0
    implementation: str = "auto"
    cell_kwargs: dict | None = None

    # Batch entries the trainer passes as keyword arguments.
    batch_inputs: ClassVar[tuple[str, ...]] = ("decoder_inputs", "teacher_forcing_ratio")

    @property
    def bidirectional(self) -> bool:
        if self.bidirectional_encoder is None:
            return self.attention == "bahdanau"
        return bool(self.bidirectional_encoder)

    @property
    def encoder_output_size(self) -> int:
        return (self.encoder_hidden_size or self.hidden_size) * (2 if self.bidirectional else 1)

    def setup(self):
        if self.attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {self.attention!r}; choose one of {', '.join(ATTENTIONS)}")
        if self.bridge not in BRIDGES:
            raise ValueError(f"unknown bridge {self.bridge!r}; choose one of {', '.join(BRIDGES)}")
        self.source_embedding = self.param(
            "source_embedding", nn.linear.default_embed_init, (self.source_vocab_size, self.embed_size)
        )
        self.embed_dropout = nn.Dropout(self.dropout_rate)
        self.encoder = recurrent.RecurrentStack(
            cell=self.cell,
            hidden_size=self.encoder_hidden_size or self.hidden_size,
            num_layers=self.encoder_layers,
            bidirectional=self.bidirectional,
            dropout_rate=self.dropout_rate,
            implementation=self.implementation,
            cell_kwargs=self.cell_kwargs,
        )
        self.decoder = RNNDecoder(
            self.target_vocab_size,
            cell=self.cell,
            hidden_size=self.hidden_size,
            num_layers=self.decoder_layers,
            embed_size=self.embed_size,
            attention=self.attention,
            memory_size=self.encoder_output_size if self.attention != "none" else 0,
            attention_size=self.attention_size,
            input_feeding=self.input_feeding,
            tie_embeddings=self.tie_embeddings,
            dropout_rate=self.dropout_rate,
            cell_kwargs=self.cell_kwargs,
        )
        width, parts = self.encoder_output_size, _num_carry_parts(self.cell)
        if self.bridge == "dense" or (self.bridge == "auto" and width != self.hidden_size):
            init = nn.initializers.glorot_uniform()
            self.bridge_weights = [
                [
                    (
                        self.param(f"bridge_{layer}_{part}_kernel", init, (width, self.hidden_size)),
                        self.param(f"bridge_{layer}_{part}_bias", nn.initializers.zeros_init(), (self.hidden_size,)),
                    )
                    for part in range(parts)
                ]
                for layer in range(self.decoder_layers)
            ]
        else:
            self.bridge_weights = None

    def _initial_carries(self, encoder_carries: tuple, batch: int) -> tuple:
        """Decoder carries (one per layer) from the encoder's final carries."""
        template = cells_lib.make_cell(self.cell, self.hidden_size, parent=None).initial_carry(batch)
        if self.bridge == "none":
            return tuple(template for _ in range(self.decoder_layers))
        flat = []
        for carry in encoder_carries:
            if self.bidirectional:  # [forward; backward], array by array
                forward, backward = carry
                carry = jax.tree.map(lambda f, b: jnp.concatenate([f, b], -1), forward, backward)
            flat.append(jax.tree.leaves(carry))
        carries = []
        for layer in range(self.decoder_layers):
            source = flat[layer] if len(flat) == self.decoder_layers else flat[-1]
            if self.bridge_weights is not None:
                source = [x @ kernel + bias for x, (kernel, bias) in zip(source, self.bridge_weights[layer])]
            carries.append(jax.tree.unflatten(jax.tree.structure(template), source))
        return tuple(carries)

    def encode(self, inputs: Array, lengths: Array | None = None, *, deterministic: bool = True) -> dict:
        """Source ids [B, S] (+ lengths [B]) -> the decoding cache at step 0."""
        inputs = jnp.asarray(inputs)
        inputs = check_token_ids(inputs, self.source_vocab_size, "source inputs")
        batch, time = inputs.shape
        if lengths is not None:
            lengths = jnp.asarray(lengths)
            recurrent.check_sequence_inputs(jnp.zeros((batch, time, 1)), lengths)
            values = checks.concrete_or_none(lengths)
            if values is not None and (values == 0).any():
                raise ValueError(f"empty source sentence (length 0) in rows {list(values.nonzero()[0][:5])}")
        if self.reverse_source:
            inputs = reverse_valid(inputs, lengths)
        x = self.embed_dropout(
            jnp.take(self.source_embedding, inputs, axis=0, mode="fill"), deterministic=deterministic
        )
        encoded, carries = self.encoder(x, lengths, deterministic=deterministic)
        cache = {"state": self.decoder.initial_state(self._initial_carries(carries, batch))}
        if self.attention != "none":
            mask = recurrent.valid_mask(lengths, time)
            mask = jnp.ones((batch, time), bool) if mask is None else mask
            cache["memory"] = self.decoder.memory(encoded, mask)
        return cache

    def decode_step(self, tokens: Array, cache: dict) -> tuple[Array, dict]:
        """tokens_to_logits: tokens [B] -> (logits [B, V], cache)."""
        return _decode_step(self.decoder, tokens, cache)

    @nn.nowrap
    def incremental_decoder(self, variables: Variables, max_len: int):
        """(start, tokens_to_logits) (seqjax.nn.encoder_decoder); the RNN state
        has a fixed size, so `max_len` does not shape the cache."""
        del max_len
        return _incremental_decoder(self, variables)

    @nn.nowrap
    def source_attention(self, variables: Variables, inputs: Array, lengths: Array | None, decoder_inputs: Array):
        """Attention α [B, T, S] (Bahdanau / Luong) over the source positions as
        given (un-reversed when reverse_source) for decoder_inputs [B, T]."""
        if self.attention == "none":
            raise ValueError("Seq2Seq with attention='none' has no attention over the source")
        _, alpha = self.apply(variables, inputs, lengths, decoder_inputs=decoder_inputs, return_attention=True)
        return alpha

    def __call__(
        self,
        inputs: Array,
        lengths: Array | None = None,
        *,
        decoder_inputs: Array | None = None,
        teacher_forcing_ratio: Array | float | None = None,
        deterministic: bool = True,
        return_attention: bool = False,
    ):
        """Logits [B, T, V] for decoder_inputs [B, T] (<sos> + target[:-1]);
        with return_attention also α [B, T, S] over the source positions as
        given (un-reversed when reverse_source)."""
        if decoder_inputs is None:
            raise ValueError(
                "Seq2Seq needs decoder_inputs: the target shifted right (<sos> first), "
                "the decoder's teacher-forced input"
            )
        decoder_inputs = jnp.asarray(decoder_inputs)
        decoder_inputs = check_token_ids(decoder_inputs, self.target_vocab_size, "decoder_inputs")
        _check_ratio(teacher_forcing_ratio)
        cache = self.encode(inputs, lengths, deterministic=deterministic)
        logits, alpha = self.decoder(
            cache["state"],
            decoder_inputs,
            cache.get("memory"),
            teacher_forcing_ratio=teacher_forcing_ratio,
            deterministic=deterministic,
        )
        if not return_attention:
            return logits
        if alpha is None:
            raise ValueError("attention='none' has no attention weights to return")
        if self.reverse_source:
            source_len = alpha.shape[-1]
            lengths = jnp.full(alpha.shape[:1], source_len) if lengths is None else jnp.asarray(lengths)
            alpha = jnp.take_along_axis(alpha, reversal_index(lengths, source_len)[:, None, :], axis=2)
        return logits, alpha


class VectorToSequence(EncoderDecoder):
    """One-to-many generation: features [B, F] -> tokens, the image-captioning
    shape (Vinyals et al. 2015, with the image setting the initial state).

    Every decoder layer's initial state is tanh(W f + b), one Dense layer per
    layer and state array; the decoder is `RNNDecoder` without attention.
    """

    target_vocab_size: int
    cell: str = "lstm"
    hidden_size: int = 128
    embed_size: int = 64
    decoder_layers: int = 1
    tie_embeddings: bool = False
    dropout_rate: float = 0.0
    cell_kwargs: dict | None = None

    batch_inputs: ClassVar[tuple[str, ...]] = ("decoder_inputs", "teacher_forcing_ratio")

    def setup(self):
        self.decoder = RNNDecoder(
            self.target_vocab_size,
            cell=self.cell,
            hidden_size=self.hidden_size,
            num_layers=self.decoder_layers,
            embed_size=self.embed_size,
            tie_embeddings=self.tie_embeddings,
            dropout_rate=self.dropout_rate,
            cell_kwargs=self.cell_kwargs,
        )
        parts = _num_carry_parts(self.cell)
        self.bridge = [[nn.Dense(self.hidden_size) for _ in range(parts)] for _ in range(self.decoder_layers)]

    def encode(self, inputs: Array, lengths: Array | None = None, *, deterministic: bool = True) -> dict:
        """features [B, F] -> the decoding cache at step 0 (lengths is unused)."""
        del lengths, deterministic
        inputs = jnp.asarray(inputs)
        if inputs.ndim != 2 or not jnp.issubdtype(inputs.dtype, jnp.floating):
            raise ValueError(
                f"VectorToSequence conditions on float features [batch, features]; got "
                f"shape {tuple(inputs.shape)} dtype {inputs.dtype}"
            )
        structure = jax.tree.structure(cells_lib.make_cell(self.cell, 1, parent=None).initial_carry(1))
        carries = tuple(
            jax.tree.unflatten(structure, [jnp.tanh(dense(inputs)) for dense in layer]) for layer in self.bridge
        )
        return {"state": self.decoder.initial_state(carries)}

    def decode_step(self, tokens: Array, cache: dict) -> tuple[Array, dict]:
        """tokens_to_logits: tokens [B] -> (logits [B, V], cache)."""
        return _decode_step(self.decoder, tokens, cache)

    @nn.nowrap
    def incremental_decoder(self, variables: Variables, max_len: int):
        """(start, tokens_to_logits) (seqjax.nn.encoder_decoder); `max_len`
        does not shape the fixed-size RNN state."""
        del max_len
        return _incremental_decoder(self, variables)

    @nn.nowrap
    def source_attention(self, variables: Variables, inputs: Array, lengths: Array | None, decoder_inputs: Array):
        """Always raises: the decoder reads one feature vector, not source positions."""
        raise ValueError("VectorToSequence conditions on one feature vector and has no attention over source positions")

    def __call__(
        self,
        inputs: Array,
        lengths: Array | None = None,
        *,
        decoder_inputs: Array | None = None,
        teacher_forcing_ratio: Array | float | None = None,
        deterministic: bool = True,
    ) -> Array:
        """Logits [B, T, V] for features [B, F] and decoder_inputs [B, T]."""
        if decoder_inputs is None:
            raise ValueError("VectorToSequence needs decoder_inputs (<sos> + target[:-1])")
        decoder_inputs = jnp.asarray(decoder_inputs)
        decoder_inputs = check_token_ids(decoder_inputs, self.target_vocab_size, "decoder_inputs")
        _check_ratio(teacher_forcing_ratio)
        cache = self.encode(inputs, lengths)
        logits, _ = self.decoder(
            cache["state"],
            decoder_inputs,
            None,
            teacher_forcing_ratio=teacher_forcing_ratio,
            deterministic=deterministic,
        )
        return logits


def incremental_decoder(model: Seq2Seq | VectorToSequence, params: Any):
    """(start, tokens_to_logits) for a Seq2Seq or VectorToSequence with these
    params: start(inputs, lengths=None) -> cache; feed <sos> as the first
    token. The same as `model.incremental_decoder({'params': params}, max_len)`."""
    return _incremental_decoder(model, {"params": params})


def _incremental_decoder(model: Seq2Seq | VectorToSequence, variables: Variables):
    """(start, tokens_to_logits) running `model.encode` once and `model.decode_step` per token."""

    def start(inputs: Array, lengths: Array | None = None) -> dict:
        cache = model.apply(variables, inputs, lengths, method="encode")
        if "memory" in cache:  # the attention memory is fixed and shared by beams: never reordered
            cache["memory"] = decoding.Static(cache["memory"])
        return cache

    def tokens_to_logits(tokens: Array, cache: dict) -> tuple[Array, dict]:
        memory = cache.get("memory")
        inner = cache if memory is None else {**cache, "memory": memory.value}
        logits, inner = model.apply(variables, tokens, inner, method="decode_step")
        return logits, inner if memory is None else {**inner, "memory": memory}

    return start, tokens_to_logits
