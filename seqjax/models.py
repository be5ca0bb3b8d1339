"""Model registry: `build(config.model, task)` returns a Linen module by name.

Every model is called as `model(inputs, lengths, deterministic=...)` with
inputs [B, T, F] floats or [B, T] token ids, and returns [B, output_size]
(many-to-one heads) or [B, T, output_size] (per-step head).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import flax.linen as nn
import jax
import ml_collections

from seqjax.nn import chars, checks, heads, recurrent, seq2seq, tagger, transformer
from seqjax.tasks import Task, tag_schemes
from seqjax.tasks.tagging import TaggingTask
from seqjax.tasks.translation import GenerationObjective

# name -> (builder(model_config, task) -> module, the config.model keys it reads)
_REGISTRY: dict[str, tuple[Callable[[ml_collections.ConfigDict, Task], nn.Module], tuple[str, ...]]] = {}

HEADS = heads.POOLINGS + ("per_step",)


def register(name: str, config_keys: tuple[str, ...] = ()):
    """Decorator: `builder(model_config, task) -> nn.Module` becomes
    `config.model.name = name`; `config_keys` are the config.model keys it
    reads (the validator refuses others)."""

    def decorate(builder):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = (builder, tuple(config_keys))
        return builder

    return decorate


def names() -> list[str]:
    return sorted(_REGISTRY)


def config_keys(name: str) -> tuple[str, ...]:
    """The `config.model` keys the model `name` reads."""
    return ("name",) + _REGISTRY[name][1]


def docstring(name: str) -> str:
    """The docstring of the model `name`'s builder."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(names())}")
    return _REGISTRY[name][0].__doc__ or ""


def build(model_config: ml_collections.ConfigDict, task: Task) -> nn.Module:
    """The model named `model_config.name`, shaped for `task`."""
    name = model_config.name
    if name not in _REGISTRY:
        raise ValueError(f"unknown model config.model.name={name!r}; registered: {', '.join(names())}")
    builder, _ = _REGISTRY[name]
    return builder(model_config, task)


class RecurrentModel(nn.Module):
    """[embedding] -> recurrent stack -> head -> Dense(output_size).

    Attributes:
      stack: the recurrent layers.
      output_size: units of the final projection.
      head: 'last' / 'mean' / 'max' pool valid steps (many-to-one);
        'per_step' projects every step (many-to-many).
      vocab_size: > 0 for token-id inputs, embedded to `embed_size`.
      embed_size: embedding width (used when vocab_size > 0).
    """

    batch_inputs: ClassVar[tuple[str, ...]] = ()  # batch entries beyond inputs/lengths it reads (none)

    stack: recurrent.RecurrentStack
    output_size: int
    head: str = "last"
    vocab_size: int = 0
    embed_size: int = 64

    @nn.compact
    def __call__(
        self,
        inputs: jax.Array,
        lengths: jax.Array | None = None,
        *,
        deterministic: bool = True,
        initial_carry=None,
        return_carry: bool = False,
        resets: jax.Array | None = None,
    ):
        """Predictions; with `return_carry`, also the stack's final carries
        (one per layer), which `initial_carry` accepts back, so a long
        sequence can be run chunk by chunk (seqjax.tbptt); `resets` [B, T]
        restarts the carry where a new document starts in a stream."""
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.vocab_size:
            if inputs.ndim != 2:
                raise ValueError(f"token-id inputs must be [batch, time], got shape {tuple(inputs.shape)}")
            inputs = nn.Embed(self.vocab_size, self.embed_size, name="embed")(
                checks.token_ids(inputs, self.vocab_size, "inputs")
            )
        outputs, carries = self.stack(inputs, lengths, initial_carry, deterministic=deterministic, resets=resets)
        if self.head == "per_step":
            features = outputs
        elif self.head == "last" and self.stack.bidirectional:
            # The backward direction's summary of the sequence sits at step 0,
            # so take both directions' final hidden states instead of a step.
            features = recurrent.final_hidden(carries[-1], self.stack.merge)
        else:
            features = heads.pool(outputs, lengths, self.head)
        predictions = nn.Dense(self.output_size, name="output")(features)
        return (predictions, carries) if return_carry else predictions


RECURRENT_KEYS = (
    "cell",
    "hidden_size",
    "num_layers",
    "bidirectional",
    "merge",
    "dropout_rate",
    "learn_initial_carry",
    "implementation",
    "unroll",
    "forget_bias",
    "identity_scale",
    "head",
    "embed_size",
    "pretrained_embeddings",
    "pretrained_format",
    "word2vec",
    "freeze_embedding",
    "freeze_embedding_steps",
)


@register("recurrent", RECURRENT_KEYS)
def recurrent_model(config: ml_collections.ConfigDict, task: Task) -> RecurrentModel:
    """A recurrent model from `config.model` (see configs/default.py for every field)."""
    cell_kwargs = {}
    if config.cell == "lstm":
        cell_kwargs["forget_bias"] = config.get("forget_bias", 1.0)
    if config.cell == "irnn":
        cell_kwargs["identity_scale"] = config.get("identity_scale", 1.0)
    stack = recurrent.RecurrentStack(
        cell=config.cell,
        hidden_size=config.hidden_size,
        num_layers=config.get("num_layers", 1),
        bidirectional=config.get("bidirectional", False),
        merge=config.get("merge", "concat"),
        dropout_rate=config.get("dropout_rate", 0.0),
        learn_initial_carry=config.get("learn_initial_carry", False),
        implementation=config.get("implementation", "auto"),
        unroll=config.get("unroll", 1),
        cell_kwargs=cell_kwargs,
        parent=None,
    )
    head = config.get("head", "") or task.head
    return RecurrentModel(
        stack=stack,
        output_size=task.output_size,
        head=head,
        vocab_size=task.vocab_size,
        embed_size=config.get("embed_size", 64),
    )


# The recurrent model's keys that describe the tagger's stack and embedding,
# plus its own.
TAGGER_KEYS = tuple(k for k in RECURRENT_KEYS if k not in ("learn_initial_carry", "identity_scale", "head")) + (
    "word_dropout",
    "char_encoder",
    "char_embed_size",
    "char_hidden_size",
    "char_kernel_size",
    "input_tag_embed_size",
    "crf",
    "crf_constraints",
)
CHAR_ENCODERS = ("none",) + chars.ENCODERS


@register("tagger", TAGGER_KEYS)
def tagger_model(config: ml_collections.ConfigDict, task: Task) -> tagger.Tagger:
    """A BiLSTM(-CRF) sequence tagger with optional character features and
    word dropout (seqjax.nn.tagger; configs/conll_tagger.py sets every field)."""
    if not isinstance(task, TaggingTask):
        raise ValueError(f"config.model.name='tagger' tags tokens; task {type(task).__name__} is not a tagging task")
    char_encoder = config.get("char_encoder", "none")
    if char_encoder not in CHAR_ENCODERS:
        raise ValueError(f"config.model.char_encoder must be one of {CHAR_ENCODERS}, got {char_encoder!r}")
    if char_encoder != "none" and not task.char_vocab_size:
        raise ValueError(
            f"config.model.char_encoder={char_encoder!r} reads character ids: set config.data.max_word_len "
            "(e.g. 20) so the task makes them"
        )
    constraints = None
    if config.get("crf", False) and config.get("crf_constraints", True) and task.tag_scheme is not None:
        constraints = tag_schemes.allowed_transitions(task.tag_names, task.tag_scheme)
    cell = config.get("cell", "lstm")
    stack = recurrent.RecurrentStack(
        cell=cell,
        hidden_size=config.hidden_size,
        num_layers=config.get("num_layers", 1),
        bidirectional=config.get("bidirectional", True),
        merge=config.get("merge", "concat"),
        dropout_rate=config.get("dropout_rate", 0.0),
        implementation=config.get("implementation", "auto"),
        unroll=config.get("unroll", 1),
        cell_kwargs={"forget_bias": config.get("forget_bias", 1.0)} if cell == "lstm" else None,
        parent=None,
    )
    encoder = None
    if char_encoder != "none":
        encoder = chars.CharEncoder(
            kind=char_encoder,
            vocab_size=task.char_vocab_size,
            embed_size=config.get("char_embed_size", 25),
            hidden_size=config.get("char_hidden_size", 25),
            kernel_size=config.get("char_kernel_size", 3),
            dropout_rate=config.get("dropout_rate", 0.0),
            parent=None,
        )
    return tagger.Tagger(
        stack=stack,
        num_tags=task.output_size,
        vocab_size=task.vocab_size,
        embed_size=config.get("embed_size", 100),
        unk_id=task.tokenizer.unk_id,
        word_dropout=config.get("word_dropout", 0.0),
        dropout_rate=config.get("dropout_rate", 0.0),
        char_encoder=encoder,
        input_tag_sizes=task.input_tag_sizes,
        input_tag_embed_size=config.get("input_tag_embed_size", 25),
        use_crf=config.get("crf", False),
        crf_constraints=constraints,
    )


# Transformers: the fields of seqjax.nn.transformer.TransformerConfig that a
# config may set (attention_implementation is TransformerConfig.implementation).
TRANSFORMER_KEYS = (
    "d_model",
    "num_heads",
    "num_kv_heads",
    "num_layers",
    "d_ff",
    "dropout_rate",
    "attention_dropout_rate",
    "positional",
    "max_len",
    "rotary_base",
    "norm",
    "norm_position",
    "activation",
    "tie_embeddings",
    "attention_implementation",
    "dtype",
)


def transformer_config(config: ml_collections.ConfigDict, vocab_size: int) -> transformer.TransformerConfig:
    """TransformerConfig from `config.model`; unset keys keep TransformerConfig's defaults."""
    fields = {key: config[key] for key in TRANSFORMER_KEYS if key in config}
    if "attention_implementation" in fields:
        fields["implementation"] = fields.pop("attention_implementation")
    fields["num_kv_heads"] = fields.get("num_kv_heads") or None  # 0 = as many as query heads
    try:
        return transformer.TransformerConfig(vocab_size=vocab_size, **fields)
    except ValueError as error:
        raise ValueError(f"bad config.model for {config.name}: {error}") from error


def _require_head(config: ml_collections.ConfigDict, task: Task, per_step: bool) -> None:
    if (task.head == "per_step") != per_step:
        kind = "per-step (many-to-many)" if task.head == "per_step" else "many-to-one"
        hint = "transformer_lm" if task.head == "per_step" else "transformer_classifier"
        raise ValueError(
            f"config.model.name={config.name!r} does not fit the {kind} task {type(task).__name__}; use {hint}"
        )


@register("transformer_classifier", TRANSFORMER_KEYS + ("pooling",))
def transformer_classifier(config: ml_collections.ConfigDict, task: Task) -> transformer.TransformerClassifier:
    """Encoder-only classifier/regressor for many-to-one tasks ([CLS] or mean pooling)."""
    _require_head(config, task, per_step=False)
    return transformer.TransformerClassifier(
        transformer_config(config, task.vocab_size), task.output_size, pooling=config.get("pooling", "cls")
    )


@register("transformer_lm", TRANSFORMER_KEYS)
def transformer_lm(config: ml_collections.ConfigDict, task: Task) -> transformer.TransformerLM:
    """Decoder-only (causal) model for per-step tasks: language modelling,
    or any task whose step-t target depends on inputs up to t."""
    _require_head(config, task, per_step=True)
    return transformer.TransformerLM(transformer_config(config, task.vocab_size), task.output_size)


@register("transformer_seq2seq", TRANSFORMER_KEYS + ("num_decoder_layers",))
def transformer_seq2seq(config: ml_collections.ConfigDict, task: Task) -> transformer.TransformerSeq2Seq:
    """Encoder-decoder for sequence generation tasks (target vocabulary
    `task.target_vocab_size`)."""
    _require_generation(config, task)
    if task.tf_ratio < 1.0:
        raise ValueError(
            "transformer_seq2seq trains with full teacher forcing (all target positions at once); "
            "scheduled sampling (config.task.teacher_forcing_ratio < 1) is for RNN decoders"
        )
    return transformer.TransformerSeq2Seq(
        transformer_config(config, task.vocab_size),
        task.target_vocab_size,
        num_decoder_layers=config.get("num_decoder_layers", 0) or None,
    )


# Recurrent encoder-decoders (seqjax.nn.seq2seq) for sequence generation tasks
# (seqjax.tasks.translation); they read config.model keys with these names.
SEQ2SEQ_KEYS = ("cell", "hidden_size", "embed_size", "decoder_layers", "tie_embeddings", "dropout_rate", "forget_bias")


def _require_generation(config: ml_collections.ConfigDict, task: Task) -> None:
    if not isinstance(task, GenerationObjective):
        raise ValueError(
            f"config.model.name={config.name!r} generates target sequences; task "
            f"{type(task).__name__} has none (use a seqjax.tasks.translation task)"
        )


def _seq2seq_common(config: ml_collections.ConfigDict, task: Task) -> dict:
    _require_generation(config, task)
    cell = config.get("cell", "lstm")
    return dict(
        target_vocab_size=task.target_vocab_size,
        cell=cell,
        hidden_size=config.get("hidden_size", 128),
        embed_size=config.get("embed_size", 64),
        decoder_layers=config.get("decoder_layers", 1),
        tie_embeddings=config.get("tie_embeddings", False),
        dropout_rate=config.get("dropout_rate", 0.0),
        cell_kwargs={"forget_bias": config.get("forget_bias", 1.0)} if cell == "lstm" else None,
    )


@register(
    "seq2seq",
    SEQ2SEQ_KEYS
    + (
        "encoder_hidden_size",
        "encoder_layers",
        "attention",
        "attention_size",
        "bidirectional_encoder",
        "reverse_source",
        "input_feeding",
        "bridge",
        "implementation",
    ),
)
def seq2seq_model(config: ml_collections.ConfigDict, task: Task) -> seq2seq.Seq2Seq:
    """RNN encoder-decoder; config.model.attention in seqjax.nn.seq2seq.ATTENTIONS
    ('none', 'bahdanau', 'luong_dot', 'luong_general', 'luong_concat')."""
    common = _seq2seq_common(config, task)
    if not task.vocab_size:
        raise ValueError(
            f"config.model.name='seq2seq' reads source token ids, but {type(task).__name__} has "
            "real-valued inputs; use 'vector_to_sequence'"
        )
    return seq2seq.Seq2Seq(
        source_vocab_size=task.vocab_size,
        encoder_hidden_size=config.get("encoder_hidden_size", 0),
        encoder_layers=config.get("encoder_layers", 1),
        attention=config.get("attention", "none"),
        attention_size=config.get("attention_size", 0),
        bidirectional_encoder=config.get("bidirectional_encoder", None),
        reverse_source=config.get("reverse_source", False),
        input_feeding=config.get("input_feeding", True),
        bridge=config.get("bridge", "auto"),
        implementation=config.get("implementation", "auto"),
        **common,
    )


@register("vector_to_sequence", SEQ2SEQ_KEYS)
def vector_to_sequence_model(config: ml_collections.ConfigDict, task: Task) -> seq2seq.VectorToSequence:
    """One-to-many decoder conditioned on a feature vector (the captioning task)."""
    common = _seq2seq_common(config, task)
    if task.vocab_size:
        raise ValueError(
            f"config.model.name='vector_to_sequence' conditions on a feature vector, but "
            f"{type(task).__name__} has token inputs; use 'seq2seq'"
        )
    return seq2seq.VectorToSequence(**common)
