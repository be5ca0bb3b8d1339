"""Test set-up: 8 simulated CPU devices, so data-parallel code runs for real.

XLA reads the flag once, at backend start, so it is set before jax is imported.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
