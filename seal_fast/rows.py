"""Work over the rows of N x d arrays in blocks, so that the N x K (or N x d)
temporaries of a prediction stay bounded whatever N is."""
from __future__ import annotations

import torch

ROW_BLOCK = 65536


def by_row_blocks(fn, *Xs, block: int = ROW_BLOCK) -> torch.Tensor:
    """torch.cat over row blocks of fn(the block's rows of every X)."""
    return torch.cat([fn(*(X[s:s + block] for X in Xs)) for s in range(0, Xs[0].shape[0], block)])
