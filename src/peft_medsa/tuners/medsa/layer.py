"""Med-SA tuner layers: wrappers that add bottleneck adapters around SAM's attention, MLP and norm modules.

Each wrapper keeps the SAM module as ``base_layer`` (frozen) and holds one ``BottleneckAdapter`` per adapter name in
``<prefix>adapter`` (``medsa_adapter`` for the MEDSA type, ``sdtrans_adapter`` / ``hypadpt_adapter`` for the
others). Its *role* fixes where the adapter acts (Wu et al., Fig. 1b and 1d):

- ``"attn"`` (main branch, after multi-head attention): ``h = attn(x); h + adapter(h)``. The attention output may
  be a tensor or a ``(hidden_states, attn_weights)`` tuple; the tuple is passed through.
- ``"mlp"`` (parallel to the MLP, same normed input): ``mlp(x) + s * adapter(x)``. If the MLP normalises its own
  input first (TinyViT's ``Mlp.norm``), the adapter sees that normed input too.
- ``"norm"`` (decoder, after the residual of the image-to-token cross-attention): ``norm(x + adapter(x))``, i.e.
  the adapter, another residual connection, then the block's layer norm.

Tokens are adapted independently along the last dimension, so any leading shape works: (B, H, W, C) or windowed
(B * n_windows, w, w, C) in the ViT encoder, (B, point_batch, tokens, C) and (B * point_batch, 1, HW, C) in the
decoder. Mixed-adapter batches (``adapter_names``, one name per sample, ``"__base__"`` for none) rely on every such
tensor being sample-major: its first dimension is a multiple of the batch size with each sample's rows contiguous.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..adapter import BottleneckAdapter

BASE_ADAPTER_NAME = "__base__"
ROLES = ("attn", "mlp", "norm")

MERGE_ERROR = (
    "Med-SA adapters cannot be merged into SAM's weights: they are nonlinear bottlenecks (down-projection, "
    "activation, up-projection), not low-rank weight updates. Keep the PeftModel for inference, or call unload() to "
    "get the base SamModel back without adapters."
)


def infer_hidden_size(base_layer: nn.Module, role: str) -> int:
    """The token width d that the adapter of ``role`` acts on, read from the wrapped module's parameters."""
    if role == "norm":
        shape = getattr(base_layer, "normalized_shape", None)
        if shape:
            return int(shape[-1])
    elif role == "attn":
        for name in ("proj", "out_proj", "o_proj"):
            proj = getattr(base_layer, name, None)
            if isinstance(proj, nn.Linear):
                return proj.out_features
    elif role == "mlp":
        for module in base_layer.modules():
            if isinstance(module, nn.Linear):
                return module.in_features
    raise TypeError(
        f"cannot place a Med-SA '{role}' adapter on {type(base_layer).__name__}: expected "
        + {
            "norm": "a LayerNorm",
            "attn": "an attention module with an output projection 'proj', 'out_proj' or 'o_proj' (nn.Linear)",
            "mlp": "an MLP module containing nn.Linear layers",
        }.get(role, f"one of the roles {ROLES}")
    )


def rows_per_sample(hidden_states: torch.Tensor, adapter_names: list[str]) -> int:
    """Number of leading rows of ``hidden_states`` that belong to each sample of a mixed-adapter batch."""
    batch = len(adapter_names)
    if batch == 0 or hidden_states.shape[0] % batch != 0:
        raise ValueError(
            f"adapter_names has {batch} entries but a tensor inside the model has leading dimension "
            f"{hidden_states.shape[0]}; pass exactly one adapter name per image of the batch"
        )
    return hidden_states.shape[0] // batch


class MedSALayer(nn.Module, BaseTunerLayer):
    """A SAM module wrapped with Med-SA bottleneck adapters (see the module docstring for the roles).

    Args:
        base_layer: the SAM module (attention, MLP or LayerNorm).
        adapter_name: name of the first adapter.
        role: ``"attn"``, ``"mlp"`` or ``"norm"``.
        r, scaling, activation, init_weights: as in ``MedSAConfig``; ``scaling`` applies to the ``"mlp"`` role only.
        prefix: the PEFT type's parameter prefix (``"medsa_"``, ``"sdtrans_"``, ``"hypadpt_"``): the adapters live
            in ``<prefix>adapter`` and their scales in ``<prefix>scaling``, so that peft's prefix-based logic
            (``inject_adapter_in_model(..., state_dict=...)``) finds them.
        layer_kwargs: further arguments of ``update_layer`` (subclasses).
    """

    adapter_layer_names: tuple[str, ...] = ("medsa_adapter",)
    other_param_names: tuple[str, ...] = ("medsa_scaling",)
    # per-call options (see MedSAModel._enable_peft_forward_hooks) that this layer's forward accepts
    call_kwargs: tuple[str, ...] = ("adapter_names",)

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        role: str,
        r: int,
        scaling: float = 1.0,
        activation: str = "relu",
        init_weights: bool = True,
        prefix: str = "medsa_",
        **layer_kwargs: Any,
    ) -> None:
        super().__init__()
        if role not in ROLES + ("hyper",):
            raise ValueError(f"unknown Med-SA adapter role {role!r}; expected one of {ROLES}")
        self.base_layer = base_layer
        self.role = role
        self.hidden_size = infer_hidden_size(base_layer, "norm" if role == "hyper" else role)
        self._active_adapter = adapter_name
        self.merged_adapters = []
        self._init_containers(prefix)
        self.update_layer(
            adapter_name, r=r, scaling=scaling, activation=activation, init_weights=init_weights, **layer_kwargs
        )

    def _init_containers(self, prefix: str) -> None:
        """Creates the per-adapter containers under ``prefix`` (instance attributes, as peft's LoRA variants do)."""
        self.prefix = prefix
        self.adapter_layer_names = (f"{prefix}adapter",)
        self.other_param_names = (f"{prefix}scaling",)
        setattr(self, f"{prefix}adapter", nn.ModuleDict())
        setattr(self, f"{prefix}scaling", {})

    @property
    def adapters(self) -> nn.ModuleDict:
        """The main adapters by adapter name (the ``<prefix>adapter`` container)."""
        return getattr(self, self.adapter_layer_names[0])

    @property
    def scalings(self) -> dict[str, float]:
        """The adapters' output scales by adapter name (the ``<prefix>scaling`` container)."""
        return getattr(self, self.other_param_names[0])

    def update_layer(
        self, adapter_name: str, r: int, scaling: float, activation: str, init_weights: bool = True, **kwargs: Any
    ) -> None:
        """Creates the adapter ``adapter_name`` on the device and floating dtype of the wrapped module.

        Under peft's ``low_cpu_mem_usage`` (``init_empty_weights``) the adapter is created on the meta device and
        stays there until its weights are loaded.
        """
        self.adapters[adapter_name] = BottleneckAdapter(
            self.hidden_size, r, activation=activation, zero_init=init_weights
        )
        self.scalings[adapter_name] = float(scaling) if self.role == "mlp" else 1.0
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    def _get_base_layer_device_and_dtype(self, base_layer: nn.Module):
        """Device and dtype of the wrapped module's first floating parameter (SAM's blocks have no ``.weight``)."""
        for param in base_layer.parameters():
            if param.dtype.is_floating_point:
                return param.device, param.dtype
        return None, None

    # -- merging is impossible for nonlinear adapters -------------------------------------------------------------
    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(MERGE_ERROR)

    def unmerge(self) -> None:
        raise ValueError(MERGE_ERROR)

    # -- forward --------------------------------------------------------------------------------------------------
    def _adapter_output(self, name: str, hidden_states: torch.Tensor) -> torch.Tensor:
        adapter = self.adapters[name]
        dtype = adapter.down.weight.dtype
        out = adapter(hidden_states.to(dtype)) * self.scalings[name]
        return out.to(hidden_states.dtype)

    def add_adapters(
        self, base: torch.Tensor, hidden_states: torch.Tensor, adapter_names: list[str] | None = None
    ) -> torch.Tensor:
        """``base + adapter_delta(hidden_states)``, both ``(..., d)``.

        Fast path (no ``adapter_names``, one active adapter, adapter and tokens of one dtype): the residual and the
        scale are folded into the up-projection's matrix product, ``addmm(base, act(down(x)), s * W_up^T)``, then
        ``s * b_up`` is added: two passes over the ``(N, d)`` tokens fewer than ``base + s * up(act(down(x)))``.
        Same numbers up to float rounding (``tests/test_medsa_fused.py`` checks it against that formula).
        """
        active = [n for n in self.active_adapters if n in self.adapters] if adapter_names is None else []
        adapter = self.adapters[active[0]] if len(active) == 1 else None
        # not HyP-Adpt's prompt-conditioned adapters, nor adapters of another dtype than the tokens
        fast = isinstance(adapter, BottleneckAdapter)
        if not (fast and adapter.up.weight.dtype == hidden_states.dtype == base.dtype):
            return base + self.adapter_delta(hidden_states, adapter_names)
        up, scale = adapter.up, self.scalings[active[0]]
        middle = adapter.act(adapter.down(hidden_states)).reshape(-1, up.in_features)
        out = torch.addmm(base.reshape(-1, up.out_features), middle, up.weight.t(), alpha=scale)
        out = out.add(up.bias, alpha=scale)
        return out.reshape(base.shape)

    token_grid: int | None = None
    """Side of the square token grid of a windowed ViT-SAM block whose attention this layer wraps (set by the tuner;
    ``None`` elsewhere): with it the ``"attn"`` adapter skips the zero-padding rows of the windows."""

    def _window_real_rows(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        """Row indices of the real tokens of a ``(B * n * n, w, w, d)`` batch of padded windows, flattened to rows.

        SAM pads the ``(G, G)`` token grid to ``(n w, n w)``, ``n = ceil(G / w)``, and orders the windows
        ``(B, n_y, n_x)``, each ``(w_y, w_x)`` (transformers' ``window_partition``); the padding rows are cropped after
        the attention, so an adapter there is wasted work (at 256 px: G = 16, w = 14, 3x the real tokens).
        ``None`` when there is no padding or the tensor is not such a batch. Built once per shape (host arithmetic,
        no device synchronisation) and cached.
        """
        grid = self.token_grid
        if grid is None or hidden_states.dim() != 4 or hidden_states.shape[1] != hidden_states.shape[2]:
            return None
        window = hidden_states.shape[1]
        per_side = -(-grid // window)
        if per_side * window == grid or hidden_states.shape[0] % (per_side * per_side):
            return None
        cache = self.__dict__.setdefault("_real_rows_cache", {})
        key = (hidden_states.shape[0], window, hidden_states.device)
        if key not in cache:
            inside = np.arange(per_side * window) < grid
            real = (inside[:, None] & inside[None, :]).reshape(per_side, window, per_side, window)
            real = real.transpose(0, 2, 1, 3).reshape(-1)  # (n_y, n_x, w_y, w_x), the windows' row order
            images = hidden_states.shape[0] // (per_side * per_side)
            rows = np.flatnonzero(real)[None, :] + real.size * np.arange(images)[:, None]
            cache[key] = torch.as_tensor(rows.reshape(-1), device=hidden_states.device)
        return cache[key]

    def adapter_delta(self, hidden_states: torch.Tensor, adapter_names: list[str] | None = None) -> torch.Tensor:
        """Sum of the active adapters' (scaled) outputs on ``hidden_states`` (..., d); zeros when none applies.

        With ``adapter_names`` (one per sample), each sample's rows go through its own adapter only.
        """
        if adapter_names is None:
            delta = None
            for name in self.active_adapters:
                if name in self.adapters:
                    out = self._adapter_output(name, hidden_states)
                    delta = out if delta is None else delta + out
            return torch.zeros_like(hidden_states) if delta is None else delta
        per = rows_per_sample(hidden_states, adapter_names)
        row_names = [name for name in adapter_names for _ in range(per)]
        delta = torch.zeros_like(hidden_states)
        for name in dict.fromkeys(adapter_names):
            if name == BASE_ADAPTER_NAME or name not in self.adapters:
                continue
            index = torch.tensor([i for i, n in enumerate(row_names) if n == name], device=hidden_states.device)
            delta = delta.index_put((index,), self._adapter_output(name, hidden_states[index]))
        return delta

    def _adapters_apply(self, adapter_names: list[str] | None) -> bool:
        if self.disable_adapters:
            return False
        if adapter_names is not None:
            return any(n in self.adapters for n in adapter_names)
        return any(a in self.adapters for a in self.active_adapters)

    def forward(self, *args: Any, adapter_names: list[str] | None = None, **kwargs: Any) -> Any:
        if not self._adapters_apply(adapter_names):
            return self.base_layer(*args, **kwargs)
        if self.role == "attn":
            output = self.base_layer(*args, **kwargs)
            hidden_states = output[0] if isinstance(output, tuple) else output
            rows = self._window_real_rows(hidden_states) if adapter_names is None else None
            if rows is None:
                hidden_states = self.add_adapters(hidden_states, hidden_states, adapter_names)
            else:  # only the real tokens of the padded windows (the padding is cropped after the attention)
                flat = hidden_states.reshape(-1, hidden_states.shape[-1])
                real = flat.index_select(0, rows)
                hidden_states = flat.index_copy(0, rows, self.add_adapters(real, real)).reshape(hidden_states.shape)
            return (hidden_states, *output[1:]) if isinstance(output, tuple) else hidden_states
        # "mlp" and "norm" wrap modules called with one positional tensor
        if args:
            hidden_states, rest = args[0], args[1:]
        else:
            key = next(iter(kwargs))
            hidden_states, rest = kwargs.pop(key), ()
        if self.role == "mlp":
            input_norm = getattr(self.base_layer, "norm", None)
            normed = input_norm(hidden_states) if isinstance(input_norm, nn.Module) else hidden_states
            return self.add_adapters(self.base_layer(hidden_states, *rest, **kwargs), normed, adapter_names)
        hidden_states = self.add_adapters(hidden_states, hidden_states, adapter_names)
        return self.base_layer(hidden_states, *rest, **kwargs)

    def __repr__(self) -> str:
        return f"medsa[{self.role}]." + super().__repr__()
