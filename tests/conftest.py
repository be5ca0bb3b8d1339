"""Test set-up: 8 simulated CPU devices, so data-parallel code runs for real.

XLA reads the flag once, at backend start, so it is set before jax is imported.
"""

import os

import pytest

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def import_experiment(name):
    """experiments.<name>, imported afresh with the absl flags of previously
    imported experiment scripts removed: each script defines flags such as
    --workdir at import, and absl refuses a second definition in one process."""
    import importlib
    import sys

    from absl import flags

    for flag_name in list(flags.FLAGS):
        module = flags.FLAGS.find_module_defining_flag(flag_name)
        if module and module.startswith("experiments."):
            delattr(flags.FLAGS, flag_name)
    for module_name in [m for m in sys.modules if m.startswith("experiments.")]:
        del sys.modules[module_name]
    return importlib.import_module(f"experiments.{name}")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A TFDS data_dir shared by the tests of one worker: the smoke configs'
    datasets are prepared into it once."""
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A Slurm cluster that accepts jobs (`scripts/slurm_cluster.sh` starts one
    on this machine). Tests that need it skip where there is none, except
    where SEQJAX_REQUIRE_SLURM=1 (set by .ci/run): there they fail."""
    import shutil
    import subprocess

    reason = None
    if not shutil.which("sbatch"):
        reason = "no Slurm on this machine (sbatch not found); start one with scripts/slurm_cluster.sh"
    else:
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
        if nodes.returncode != 0 or not any(s.startswith(("idle", "mixed", "alloc")) for s in nodes.stdout.split()):
            reason = f"Slurm has no usable node (sinfo: {(nodes.stdout + nodes.stderr).strip()!r})"
    if reason and os.environ.get("SEQJAX_REQUIRE_SLURM") == "1":
        pytest.fail(f"SEQJAX_REQUIRE_SLURM=1 but {reason}")
    if reason:
        pytest.skip(reason)
