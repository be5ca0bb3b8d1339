"""The task interface is explicit: every hook is declared on `Task` (or the
GeneratedTask / DatasetTask / GenerationObjective bases), every registered
task implements the abstract ones, and the library never probes a task or a
model for optional attributes."""

import ast
import inspect
import os

import ml_collections
import numpy as np
import pytest

from seqjax import tasks
from seqjax.tasks.translation import GenerationObjective

SEQJAX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "seqjax")


@pytest.mark.parametrize("name", tasks.names())
def test_every_registered_task_implements_every_abstract_hook(name):
    cls = tasks.task_class(name)
    assert not inspect.isabstract(cls), f"{cls.__name__} leaves {sorted(cls.__abstractmethods__)} unimplemented"
    assert issubclass(cls, (tasks.GeneratedTask, tasks.DatasetTask))


def test_a_task_missing_an_abstract_hook_cannot_be_built():
    class NoMetrics(tasks.GeneratedTask):
        output_size = 1

        def make_batch(self, rng, batch_size):
            return {"inputs": np.zeros((batch_size, 3, 1), np.float32)}

    with pytest.raises(TypeError, match="abstract method 'metric_sums'|abstract method metric_sums"):
        NoMetrics(ml_collections.ConfigDict())


def test_only_generated_or_dataset_tasks_register():
    with pytest.raises(TypeError, match="task 'odd': .* is not a subclass of GeneratedTask or DatasetTask"):
        tasks.register("odd", dict)


def test_the_default_hooks_do_nothing_or_refuse_clearly():
    class Minimal(tasks.GeneratedTask):
        output_size = 1

        def make_batch(self, rng, batch_size):
            return {"inputs": rng.normal(size=(batch_size, 3, 1)).astype(np.float32), "targets": np.zeros(batch_size)}

        def metric_sums(self, predictions, batch):
            error = ((predictions[:, 0] - batch["targets"]) ** 2).sum()
            return {"loss": (error, float(len(predictions)))}

    task = Minimal(ml_collections.ConfigDict())
    assert task.word_index() is None and task.collect(None, None) is None and task.corpus_metrics([]) == {}
    assert task.finalize_metrics({"loss": 1.0}) == {"loss": 1.0}
    assert task.final_metrics(None, None, batch_size=2, num_batches=1, seed=0) == {}
    loss, metrics = task.loss_and_metrics(np.full((4, 1), 2.0), {"targets": np.zeros(4)})
    assert float(loss) == float(metrics["loss"]) == 4.0
    assert len(list(task.eval_batches("eval", 2, seed=0))) == 8  # the default generated pass
    assert len(list(task.eval_batches("eval", 2, seed=0, num_batches=3))) == 3
    with pytest.raises(ValueError, match="Minimal has no per-step loss \\(head 'last'\\)"):
        task.step_sums(None, None)


def test_generation_tasks_declare_what_decoders_and_models_read():
    for name in ("translation", "captioning", "parallel_translation"):
        cls = tasks.task_class(name)
        assert issubclass(cls, GenerationObjective)
        assert {"detokenize", "reference_batches"} <= set(GenerationObjective.__abstractmethods__)


def probes(path):
    """(line, call) of every getattr/hasattr whose object is named like a task or a model."""
    tree = ast.parse(open(path).read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr"):
            target = ast.unparse(node.args[0]) if node.args else ""
            if "task" in target or "model" in target or "apply_fn" in target:
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_library_never_probes_tasks_or_models():
    found = {}
    for folder, _, files in os.walk(SEQJAX):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                if probes(path):
                    found[os.path.relpath(path, SEQJAX)] = probes(path)
    assert found == {}


def test_the_probe_finder_finds_a_probe(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def f(task, model):\n    return getattr(task, 'tokenizer', None), hasattr(model, 'stack')\n")
    assert [line for line, _ in probes(source)] == [2, 2]


def test_every_encoder_decoder_implements_the_decoding_interface():
    # EncoderDecoder declares incremental_decoder and source_attention (a flax
    # Module cannot be an abc.ABC, so its defaults raise NotImplementedError).
    from seqjax.nn import seq2seq, transformer  # noqa: F401 (defines the subclasses)
    from seqjax.nn.encoder_decoder import EncoderDecoder

    subclasses = EncoderDecoder.__subclasses__()
    assert {c.__name__ for c in subclasses} >= {"Seq2Seq", "VectorToSequence", "TransformerSeq2Seq"}
    for cls in subclasses:
        for method in ("incremental_decoder", "source_attention"):
            assert getattr(cls, method) is not getattr(EncoderDecoder, method), (cls.__name__, method)
