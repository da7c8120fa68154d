"""Small tensor operations shared by several stages (directions, interventions, the safety tune)."""

from __future__ import annotations

import torch

from refusal_sae.errors import NumericalError


def kl_divergence(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """``KL(p ‖ q)`` over the last axis, from logits (``[..., vocab]`` → ``[...]``)."""
    lp, lq = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
    return (lp.exp() * (lp - lq)).sum(-1)


def unit(direction: torch.Tensor) -> torch.Tensor:
    """``direction`` scaled to norm 1; a zero or non-finite vector is a :class:`NumericalError`."""
    norm = direction.norm()
    if not torch.isfinite(direction).all() or norm == 0:
        raise NumericalError("direction is zero or non-finite")
    return direction / norm


def project_out(vectors: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Remove from ``vectors [..., d]`` their components in the span of orthonormal rows ``basis [k, d]``."""
    if len(basis) == 0:
        return vectors
    b = basis.to(vectors.dtype)
    return vectors - (vectors @ b.T) @ b


def top_eigenvectors(gram: torch.Tensor, k: int) -> torch.Tensor:
    """Top-``k`` eigenvectors of a symmetric (Gram) matrix as orthonormal rows ``[k, d]``."""
    if k <= 0 or not gram.abs().sum():
        return torch.zeros(0, gram.shape[0], dtype=torch.float64)
    vals, vecs = torch.linalg.eigh(gram)
    return vecs[:, vals.argsort(descending=True)[:k]].T.contiguous()


def cosine_to_rows(matrix: torch.Tensor, vector: torch.Tensor) -> torch.Tensor:
    """Cosine of each row of ``matrix [n, d]`` with ``vector [d]`` (``[n]``), in float32."""
    m, v = matrix.float(), vector.float().to(matrix.device)
    return (m @ v) / (m.norm(dim=-1) * v.norm()).clamp_min(1e-12)
