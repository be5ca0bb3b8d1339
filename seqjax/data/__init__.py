"""Data: synthetic tasks (no files needed); tokenizers and dataset sources come later."""
