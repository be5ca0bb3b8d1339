"""Fused recurrences with a hand-written backward pass (custom VJP).

`fused_scan_for(cell)` returns a drop-in replacement for
`seqjax.nn.recurrent.scan_cell` for the cells that have one, else None.
"""

from __future__ import annotations


def fused_scan_for(cell):
    """The fused recurrence for `cell`, or None when the cell has none."""
    del cell
    return None
