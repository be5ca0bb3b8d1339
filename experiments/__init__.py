"""Entry points: training, benchmarks (run as `python -m experiments.<name>`)."""
