"""How SD-Trans fuses the depth branch with the space branch (Wu et al., Table 8: addition, concatenation,
cross-attention).

Every fusion is written as a residual update of the space branch, ``out = space + fusion(space, depth)``, where
``depth`` is the output of the (zero-initialised) depth adapter. Each fusion maps ``depth = 0`` to a zero update, so
the model equals SAM at init, and each passes gradients to the depth adapter from the first step.

Tensors are laid out per volume: ``(V, D, P, C)`` for V volumes of D slices with P token positions per slice and C
channels; position ``p`` is the same spatial position in every slice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConcatFusion(nn.Module):
    """Concatenation: ``fusion(space, depth) = W [space; depth] + b`` with ``W`` a ``Linear(2C, C)``.

    Initialised to ``W = [0 | I]``, ``b = 0``, so it starts as plain addition (``2 C^2 + C`` parameters).
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * hidden_size, hidden_size)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[:, hidden_size:].copy_(torch.eye(hidden_size))
            self.linear.bias.zero_()

    def forward(self, space: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([space, depth], dim=-1))


class CrossAttentionFusion(nn.Module):
    """Cross-attention across slices: at each position, the space tokens of the D slices (queries) attend over the
    depth tokens of the same D slices (keys and values), with ``num_heads`` heads.

    Four ``Linear(C, C)`` (``4 C^2 + 4 C`` parameters), Xavier-initialised; the value and output biases start at 0 so
    that a zero depth input gives a zero update.

    Shapes: ``space``, ``depth``: ``(V, D, P, C)`` -> ``(V, D, P, C)``.
    """

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size={hidden_size} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        with torch.no_grad():
            for linear in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
                nn.init.xavier_uniform_(linear.weight)
                linear.bias.zero_()

    def _heads(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # (V, D, P, C) -> (V, P, heads, D, head_dim)
        v, d, p, c = hidden_states.shape
        return hidden_states.view(v, d, p, self.num_heads, c // self.num_heads).permute(0, 2, 3, 1, 4)

    def forward(self, space: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        query = self._heads(self.q_proj(space))
        key, value = self._heads(self.k_proj(depth)), self._heads(self.v_proj(depth))
        attended = F.scaled_dot_product_attention(query, key, value)  # (V, P, heads, D, head_dim)
        return self.out_proj(attended.permute(0, 3, 1, 2, 4).flatten(3))


def build_fusion(mode: str, hidden_size: int, num_heads: int) -> nn.Module | None:
    """The fusion module of ``mode`` (``None`` for ``"add"``, which has no parameters)."""
    if mode == "add":
        return None
    if mode == "concat":
        return ConcatFusion(hidden_size)
    if mode == "cross_attention":
        return CrossAttentionFusion(hidden_size, num_heads)
    raise ValueError(f"sd_fusion={mode!r} is not supported; expected 'add', 'concat' or 'cross_attention'")


__all__ = ["ConcatFusion", "CrossAttentionFusion", "build_fusion"]
