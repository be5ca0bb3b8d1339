"""experiments/benchmark_attention.py runs end to end and reports what it measured."""

import json

from experiments import benchmark_attention


def test_flop_counts_halve_for_causal_and_triple_and_a_half_for_backward():
    full = benchmark_attention.attention_flops(2, 4, 128, 64, causal=False, mode="fwd")
    assert full == 4 * 2 * 4 * 128 * 128 * 64
    assert benchmark_attention.attention_flops(2, 4, 128, 64, causal=True, mode="fwd") == full / 2
    assert benchmark_attention.attention_flops(2, 4, 128, 64, causal=False, mode="fwd_bwd") == 3.5 * full


def test_tiny_run_prints_one_json_line_per_baseline(capsys):
    benchmark_attention.main(
        [
            "--quick",
            "--seq-lens",
            "32",
            "--causal",
            "true",
            "--modes",
            "fwd",
            "--tokens",
            "64",
            "--hidden",
            "64",
            "--repeats",
            "1",
            "--warmup",
            "0",
        ]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 1  # CPU: the xla baseline only (cudnn needs a GPU)
    line = lines[0]
    assert line["case"] == "pallas_fwd_T32_D64_causal" and line["baseline"] == "xla"
    assert line["batch"] == 2 and line["heads"] == 1 and line["unit"] == "TFLOP/s"
    assert line["value"] > 0 and line["baseline_value"] > 0
    # Same FLOPs on both sides: the throughput ratio is the inverse time ratio.
    assert abs(line["ratio"] - line["baseline_seconds"] / line["seconds"]) < 1e-3 * line["ratio"]
