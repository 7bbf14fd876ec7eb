"""HyP-Adpt, the Hyper-Prompting Adapter of Med-SA (Wu et al., section 4, Fig. 2, equations 1-2), and the two simpler
ways of bringing the prompt into an adapter that Table 5 compares it with.

Every variant keeps the bottleneck of the plain adapter: a down-projection ``Linear(d, r)`` and an up-projection
back to ``d`` that is zero-initialised, so the adapter outputs exactly 0 at init. The prompt enters between them.

The prompt embedding (``PromptEmbedding``, "projected and reduced"): the prompt tokens are SAM's sparse prompt
embeddings, one d-wide token per click (the Fourier embedding of its (x, y) position plus the embedding of its
label) and two per box (its XYXY corners). Each token is projected by ``P: Linear(d, h)`` and the projections are
averaged over the prompt's tokens, giving ``e_prompt`` of width h (``hyper_dim``; r for the add / concat variants).
SAM embeds padding points (label -10) to exactly zero; those tokens are left out of the mean, so padding does not
dilute the prompt.

Variants (``MedSAConfig.prompt_conditioning``), for tokens ``x`` (..., T, d) and ``e = e_prompt`` (..., r):

- ``"hyper"`` (``HyperPromptAdapter``, the paper's HyP-Adpt): ``e_0 = down(x)``;
  ``e_{i+1} = ReLU(Norm(e_i W_i))`` for i = 0, 1, 2 with ``W_i = M_i(e)`` reshaped to (L_in, L_out), each ``M_i``
  its own MLP ``Linear(h, h) -> ReLU -> Linear(h, L_in * L_out)``, Norm a layer norm without affine parameters
  along the length (feature) dimension; output ``up(e_3)``. L_in of the first layer is the adapter's reduced length
  r; L_out of the last is the target length, r here, at which the zero-initialised up-projection takes over; the
  inner length is ``hyper_dim`` (h, by default min(r, 64)), so the weights are (r x h), (h x h), (h x r) and, past
  r = 64, the adapter grows linearly in r (the paper's Table 7a counts grow linearly too). e_prompt has width h.
  The up-projection is what makes the start exactly SAM: ending on ``ReLU(Norm(.))`` would need W_3 = 0 at init,
  where a layer norm of a zero vector has gradients of order 1/sqrt(eps).
- ``"add"`` (``PromptAdditionAdapter``): ``up(act(down(x) + e))``.
- ``"concat"`` (``PromptConcatAdapter``): ``up(act([down(x), e]))`` with ``up: Linear(2r, d)``.
- ``"none"``: the plain ``BottleneckAdapter`` (no prompt).

Each prompt weights only its own tokens: the leading dimensions of ``x`` and of the prompt tokens are (batch,
point_batch) and all products are batched over them, so no sample or point-batch entry sees another's prompt."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..adapter import ACTIVATIONS, BottleneckAdapter
from ..medsa.config import PROMPT_CONDITIONINGS

NUM_HYPER_LAYERS = 3
DEFAULT_MAX_HYPER_DIM = 64
"""``hyper_dim=None`` in the configs means ``min(r, DEFAULT_MAX_HYPER_DIM)``."""


class PromptEmbedding(nn.Module):
    """e_prompt: prompt tokens (..., n, d) -> (..., r), the mean of ``Linear(d, r)`` over the non-padding tokens.

    A prompt with no non-padding token gives the zero vector (callers reject empty prompts before, see
    ``peft_medsa.prompt_checks``).
    """

    def __init__(self, hidden_size: int, r: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, r)

    def forward(self, prompt_tokens: torch.Tensor) -> torch.Tensor:
        # the tokens arrive as a slice of the block's input: on a strided view, Linear's result would depend on
        # whether the weight requires grad (matmul folds batch dimensions only then), so make it contiguous first
        prompt_tokens = prompt_tokens.contiguous()
        present = (prompt_tokens != 0).any(dim=-1, keepdim=True).to(prompt_tokens.dtype)  # (..., n, 1)
        projected = self.proj(prompt_tokens) * present
        return projected.sum(dim=-2) / present.sum(dim=-2).clamp(min=1.0)


class _PromptConditionedAdapter(nn.Module):
    """Shared parts: ``down``, ``prompt_embedding`` and ``up`` of input width ``up_in``; subclasses add their own
    layers, then call ``reset_parameters``."""

    needs_prompt = True

    def __init__(self, hidden_size: int, r: int, up_in: int, prompt_width: int | None = None) -> None:
        super().__init__()
        self.r = r
        self.down = nn.Linear(hidden_size, r)
        self.prompt_embedding = PromptEmbedding(hidden_size, prompt_width or r)
        self.up = nn.Linear(up_in, hidden_size)

    @torch.no_grad()
    def reset_parameters(self, zero_init: bool = True) -> None:
        """Default ``nn.Linear`` init everywhere; the up-projection zero (``zero_init``) or random."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()
        if zero_init:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        else:
            nn.init.kaiming_uniform_(self.up.weight, a=math.sqrt(5))
            nn.init.uniform_(self.up.bias, -0.1, 0.1)

    def hidden(self, hidden_states: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """The bottleneck features (..., T, up_in) given tokens (..., T, d) and e_prompt (..., r)."""
        raise NotImplementedError

    def forward(self, hidden_states: torch.Tensor, prompt_tokens: torch.Tensor) -> torch.Tensor:
        """Adapter output (..., T, d) for tokens ``hidden_states`` (..., T, d) and ``prompt_tokens`` (..., n, d)."""
        if hidden_states.shape[:-2] != prompt_tokens.shape[:-2]:
            raise ValueError(
                f"prompt_tokens of shape {tuple(prompt_tokens.shape)} do not match the tokens "
                f"{tuple(hidden_states.shape)}: expected the same leading (batch, point_batch) dimensions"
            )
        return self.up(self.hidden(hidden_states, self.prompt_embedding(prompt_tokens)))


class HyperPromptAdapter(_PromptConditionedAdapter):
    """HyP-Adpt (section 4, equations 1-2): three prompt-generated weight layers inside the bottleneck.

    Args:
        hidden_size: d, the token width (SAM decoder: 256).
        r: the reduced length (bottleneck width): L_in of the first hyper layer and L_out of the last.
        zero_init: zero the up-projection so the adapter outputs 0 at init.
        hyper_dim: h, the width of e_prompt and of the inner hyper layers. The generated weights are (r x h),
            (h x h) and (h x r), each from its own MLP ``Linear(h, h) -> ReLU -> Linear(h, L_in * L_out)``, so the
            adapter's size grows linearly in r.

    Shapes:
        tokens (..., T, d) and prompt tokens (..., n, d) -> (..., T, d); ``hyper_weights``: e_prompt (..., h) ->
        weights (..., r, h), (..., h, h), (..., h, r).
    """

    def __init__(self, hidden_size: int, r: int, zero_init: bool = True, hyper_dim: int = 64) -> None:
        super().__init__(hidden_size, r, up_in=r, prompt_width=hyper_dim)
        self.hyper_dim = hyper_dim
        self.lengths = [(r, hyper_dim), (hyper_dim, hyper_dim), (hyper_dim, r)]
        # M_1..M_3: one weight generator per hyper layer
        self.hyper_mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(hyper_dim, hyper_dim), nn.ReLU(), nn.Linear(hyper_dim, l_in * l_out))
            for l_in, l_out in self.lengths
        )
        self.reset_parameters(zero_init)

    def hyper_weights(self, prompt: torch.Tensor) -> list[torch.Tensor]:
        """W_i = M_i(e_prompt) reshaped to (..., L_in, L_out), for i = 1, 2, 3."""
        return [mlp(prompt).unflatten(-1, shape) for mlp, shape in zip(self.hyper_mlps, self.lengths)]

    def hidden(self, hidden_states: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        embedding = self.down(hidden_states)  # (..., T, r)
        lead, tokens = embedding.shape[:-2], embedding.shape[-2]
        embedding = embedding.reshape(-1, tokens, self.r)  # (N, T, r), N = prod(lead) prompts
        for weight, (l_in, l_out) in zip(self.hyper_weights(prompt), self.lengths):  # one weight per prompt
            # bmm on explicit (N, ., .) shapes: matmul's handling of batch dimensions depends on requires_grad
            embedding = F.relu(F.layer_norm(torch.bmm(embedding, weight.reshape(-1, l_in, l_out)), (l_out,)))
        return embedding.reshape(*lead, tokens, self.r)


class PromptAdditionAdapter(_PromptConditionedAdapter):
    """Table 5 "by addition": ``up(act(down(x) + e_prompt))``. Shapes as ``HyperPromptAdapter``."""

    def __init__(self, hidden_size: int, r: int, activation: str = "relu", zero_init: bool = True) -> None:
        super().__init__(hidden_size, r, up_in=r)
        self.act = ACTIVATIONS[activation]()
        self.reset_parameters(zero_init)

    def hidden(self, hidden_states: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        return self.act(self.down(hidden_states) + prompt.unsqueeze(-2))


class PromptConcatAdapter(_PromptConditionedAdapter):
    """Table 5 "by concatenation": ``up(act([down(x), e_prompt]))``, up: Linear(2r, d). Shapes as above."""

    def __init__(self, hidden_size: int, r: int, activation: str = "relu", zero_init: bool = True) -> None:
        super().__init__(hidden_size, r, up_in=2 * r)
        self.act = ACTIVATIONS[activation]()
        self.reset_parameters(zero_init)

    def hidden(self, hidden_states: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        down = self.down(hidden_states)
        return self.act(torch.cat([down, prompt.unsqueeze(-2).expand_as(down)], dim=-1))


def build_slot_adapter(
    prompt_conditioning: str,
    hidden_size: int,
    r: int,
    activation: str = "relu",
    zero_init: bool = True,
    hyper_dim: int = 64,
) -> nn.Module:
    """The adapter of the decoder's first slot for ``prompt_conditioning`` in ``("hyper", "add", "concat", "none")``.

    Raises:
        ValueError: unknown ``prompt_conditioning`` or ``activation``.
    """
    if prompt_conditioning not in PROMPT_CONDITIONINGS:
        raise ValueError(
            f"prompt_conditioning={prompt_conditioning!r} is not supported; "
            f"expected one of {list(PROMPT_CONDITIONINGS)}"
        )
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    if prompt_conditioning == "hyper":
        return HyperPromptAdapter(hidden_size, r, zero_init=zero_init, hyper_dim=hyper_dim)
    if prompt_conditioning == "add":
        return PromptAdditionAdapter(hidden_size, r, activation=activation, zero_init=zero_init)
    if prompt_conditioning == "concat":
        return PromptConcatAdapter(hidden_size, r, activation=activation, zero_init=zero_init)
    return BottleneckAdapter(hidden_size, r, activation=activation, zero_init=zero_init)


def needs_prompt(adapter: nn.Module) -> bool:
    """Whether ``adapter`` is conditioned on the prompt (False for the plain bottleneck of ``"none"``)."""
    return getattr(adapter, "needs_prompt", False)
