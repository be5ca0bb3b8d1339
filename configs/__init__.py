"""The shipped experiment configs, loaded by path (`--config=configs/default.py`)
or, from any directory, by name (`--config=default`); see seqjax.config."""
