"""The bottleneck adapter of Med-SA (Wu et al., section 3.2, Fig. 1b).

``Adapter(x) = up(act(down(x)))`` with ``down: Linear(d, r)`` and ``up: Linear(r, d)``. With ``zero_init=True`` the
up-projection starts at zero, so an adapted model equals the frozen SAM at step 0 (the official code starts from a
random up-projection, so its step-0 model is not SAM).
"""

from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


class BottleneckAdapter(nn.Module):
    """Down-projection, activation, up-projection, applied to the last dimension.

    Args:
        hidden_size: d, the width of the tokens it adapts.
        r: the bottleneck width ("rank", the paper's middle dimension).
        activation: ``"relu"`` (paper) or ``"gelu"`` (official code).
        zero_init: zero the up-projection so that the adapter outputs exactly 0 at init.

    Shapes:
        ``(..., d) -> (..., d)``.
    """

    def __init__(self, hidden_size: int, r: int, activation: str = "relu", zero_init: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
        self.down = nn.Linear(hidden_size, r)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(r, hidden_size)
        self.reset_parameters(zero_init)

    @torch.no_grad()
    def reset_parameters(self, zero_init: bool = True) -> None:
        """Kaiming-uniform down-projection; up-projection zero (``zero_init``) or of the same random law."""
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        if zero_init:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        else:
            nn.init.kaiming_uniform_(self.up.weight, a=math.sqrt(5))
            nn.init.uniform_(self.up.bias, -0.1, 0.1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.up(self.act(self.down(hidden_states)))
