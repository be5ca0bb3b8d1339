"""Pallas kernels, each beside a pure-JAX reference (e.g. `kernels.flash_attention`)."""
