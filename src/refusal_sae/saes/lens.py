"""Importing sae-lens without the deprecation notice it triggers on import: sae-lens 6 imports TransformerLens's
``utils`` module, which TransformerLens 3 deprecates with a warning at import time (nothing of ours is involved,
and nothing to change on our side until sae-lens moves to ``transformer_lens.utilities``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def sae_lens_imports() -> Iterator[None]:
    """Wrap ``from sae_lens… import …`` statements: that one notice is ignored while they run, nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The 'utils' module has been deprecated", category=DeprecationWarning,
                                module=r"sae_lens\.")
        yield
