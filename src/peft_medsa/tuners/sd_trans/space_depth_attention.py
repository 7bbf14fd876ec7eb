"""SpaceDepthAttention: SD-Trans, the depth branch of Med-SA's 3D image encoder (Wu et al., section 3.3, Fig. 1c).

A volume of D slices goes through the 2D encoder as D images. In every adapted encoder block the attention runs in two
branches that share the block's attention weights (``qkv`` and ``proj``):

- space branch: SAM's own attention within each slice (relative position terms included), then the Med-SA adapter
  of the main branch: ``s = h + adapter(h)``, ``h = attn(x)``;
- depth branch: at each spatial position, attention across the D slices with the same ``q``, ``k``, ``v`` (no relative
  position term: the depth axis has none), projected by ``proj``, then a zero-initialised depth adapter:
  ``t = depth_adapter(proj(softmax(q k^T / sqrt(d_head)) v))``;
- fusion (``sd_fusion``, Table 8): ``out = s + t`` (add, the paper's choice), or a concatenation or cross-attention
  fusion (see ``fusion.py``). The depth adapter starts at zero, so the model equals SAM at init.

The space branch's ``q``, ``k``, ``v`` are reused (captured from the wrapped module's ``qkv`` for the duration of the
call), and ``proj`` is folded into the depth adapter's down-projection (both are linear: ``down(proj(a)) =
(W_down W_proj) a + W_down b_proj + b_down``), so the depth branch adds only the attention over D and a ``C x r``
product per token, not another ``C x C`` projection.

Layout: the wrapped attention receives ``R = V * D * n_windows`` rows, volume-major then slice-major then window-major
(transformers' ``SamVisionLayer``: windows ``(R, w, w, C)``; global blocks ``n_windows = 1``, ``(R, H, W, C)``;
TinyViT: ``(R, w*w, C)``). The window partition is the same in every slice, so row ``(v * D + d) * n_windows + i``,
token ``t`` is the same spatial position for every ``d``: reshaping to ``(V, D, n_windows * T, C)`` puts the depth axis
where attention needs it, in windowed blocks too (the official code transposed the wrong axes there). Positions added
by window padding attend only to the padding of the other slices and are cropped by the block afterwards, so they
cannot reach real positions through the depth branch.

Without ``num_slices`` every image is a volume of one slice: the depth branch then reduces to ``proj(v)`` per token,
exactly what a call with ``num_slices=1`` computes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..adapter import BottleneckAdapter
from ..medsa.layer import BASE_ADAPTER_NAME, MedSALayer, rows_per_sample
from .fusion import build_fusion
from .layout import VolumeLayout

# How the ``qkv`` output of each supported attention module is laid out along its last dimension:
# "qkv-major": [q | k | v], each split into heads (transformers' SamVisionAttention);
# "head-major": per head [q | k | v] (TinyViT's attention in LiteMedSAM / MobileSAM).
QKV_LAYOUTS = {"SamVisionAttention": "qkv-major", "TinyViTAttention": "head-major"}


def qkv_layout(attention: nn.Module) -> str:
    """The ``qkv`` layout of ``attention`` (see ``QKV_LAYOUTS``).

    Raises:
        NotImplementedError: ``attention`` is not a supported attention module (its name and the supported ones are
            given), or lacks ``qkv`` / ``proj`` linears.
    """
    for cls in type(attention).__mro__:
        if cls.__name__ in QKV_LAYOUTS:
            if isinstance(getattr(attention, "qkv", None), nn.Linear) and isinstance(
                getattr(attention, "proj", None), nn.Linear
            ):
                return QKV_LAYOUTS[cls.__name__]
            break
    raise NotImplementedError(
        f"SD-Trans cannot place a depth branch on {type(attention).__name__}: it reuses the q, k, v of the module's "
        f"fused 'qkv' linear and its 'proj', and knows the qkv layout of {sorted(QKV_LAYOUTS)} only"
    )


def num_heads_of(attention: nn.Module) -> int:
    for name in ("num_attention_heads", "num_heads"):
        if isinstance(getattr(attention, name, None), int):
            return getattr(attention, name)
    raise NotImplementedError(f"SD-Trans cannot find the number of heads of {type(attention).__name__}")


class SpaceDepthAttention(MedSALayer):
    """An encoder attention module with the Med-SA main-branch adapter and the SD-Trans depth branch.

    Args:
        base_layer: the block's attention (``SamVisionAttention`` / ``SamVisionSdpaAttention`` or
            ``TinyViTAttention``).
        adapter_name: name of the first adapter.
        role: must be ``"attn"``.
        r, scaling, activation, init_weights: as in ``MedSAConfig``; the depth adapter has the same width ``r``.
        sd_fusion: ``"add"``, ``"concat"`` or ``"cross_attention"`` (Table 8).
        prefix: the PEFT type's parameter prefix: containers ``<prefix>adapter``, ``<prefix>depth_adapter``,
            ``<prefix>depth_fusion`` (see ``MedSALayer``).

    Forward: as the wrapped module, plus ``num_slices`` (a ``VolumeLayout``, which the tuner builds from the call's
    ``num_slices`` and batch) and ``adapter_names`` (one per slice, equal within each volume).
    """

    adapter_layer_names = ("medsa_adapter", "medsa_depth_adapter", "medsa_depth_fusion")
    other_param_names = ("medsa_scaling", "sd_fusion")
    call_kwargs: tuple[str, ...] = ("adapter_names", "num_slices")

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        role: str = "attn",
        r: int = 64,
        scaling: float = 0.05,
        activation: str = "relu",
        init_weights: bool = True,
        sd_fusion: str = "add",
        prefix: str = "medsa_",
    ) -> None:
        if role != "attn":
            raise ValueError(f"SpaceDepthAttention wraps encoder attention modules (role 'attn'), got role={role!r}")
        qkv_layout(base_layer)  # fail early on unsupported modules
        super().__init__(
            base_layer, adapter_name, role, r, scaling, activation, init_weights, prefix=prefix, sd_fusion=sd_fusion
        )

    def _init_containers(self, prefix: str) -> None:
        super()._init_containers(prefix)
        self.adapter_layer_names = (f"{prefix}adapter", f"{prefix}depth_adapter", f"{prefix}depth_fusion")
        self.other_param_names = (f"{prefix}scaling", "sd_fusion")
        setattr(self, f"{prefix}depth_adapter", nn.ModuleDict())
        setattr(self, f"{prefix}depth_fusion", nn.ModuleDict())
        self.sd_fusion: dict[str, str] = {}

    @property
    def depth_adapters(self) -> nn.ModuleDict:
        """The SD-Trans depth adapters by adapter name (``<prefix>depth_adapter``)."""
        return getattr(self, self.adapter_layer_names[1])

    @property
    def depth_fusions(self) -> nn.ModuleDict:
        """The fusion modules by adapter name (``<prefix>depth_fusion``; none for ``"add"``)."""
        return getattr(self, self.adapter_layer_names[2])

    def update_layer(
        self,
        adapter_name: str,
        r: int,
        scaling: float,
        activation: str,
        init_weights: bool = True,
        sd_fusion: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Creates the main-branch adapter and, unless ``sd_fusion`` is ``None`` (a 2D Med-SA adapter beside SD-Trans
        ones), the depth adapter and fusion of ``adapter_name``, on the wrapped module's device and dtype (or on the
        meta device under peft's ``low_cpu_mem_usage``)."""
        if sd_fusion is not None:
            self.depth_adapters[adapter_name] = BottleneckAdapter(
                self.hidden_size, r, activation=activation, zero_init=init_weights
            )
            fusion = build_fusion(sd_fusion, self.hidden_size, num_heads_of(self.base_layer))
            if fusion is not None:
                self.depth_fusions[adapter_name] = fusion
            self.sd_fusion[adapter_name] = sd_fusion
        super().update_layer(adapter_name, r=r, scaling=scaling, activation=activation, init_weights=init_weights)

    # -- the depth branch -------------------------------------------------------------------------------------------
    def split_qkv(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``qkv`` output ``(R, ..., 3C)`` -> q, k, v, each ``(R, T, heads, head_dim)`` (T tokens per row)."""
        heads = num_heads_of(self.base_layer)
        rows, width = qkv.shape[0], qkv.shape[-1] // 3
        if qkv_layout(self.base_layer) == "qkv-major":
            query, key, value = qkv.reshape(rows, -1, 3, heads, width // heads).unbind(2)
        else:
            query, key, value = qkv.reshape(rows, -1, heads, 3, width // heads).unbind(3)
        return query, key, value

    def depth_branch(self, qkv: torch.Tensor, num_volumes: int, num_slices: int, project: bool = True) -> torch.Tensor:
        """Attention across slices at each position, with the space branch's q, k, v, then ``proj``.

        Args:
            qkv: the wrapped module's ``qkv`` output, ``(R, ..., 3C)``, ``R = num_volumes * num_slices * n_windows``.
            project: apply ``proj``; ``False`` returns the heads' outputs concatenated (the forward folds ``proj``
                into the depth adapter).

        Returns:
            ``(V, D, P, C)``: ``P = n_windows * T`` positions per slice, in the row order of the input.
        """
        query, key, value = self.split_qkv(qkv)
        rows, tokens, heads, head_dim = query.shape
        positions = rows // (num_volumes * num_slices) * tokens
        if num_slices == 1:  # softmax over a single key: the output is v
            attended = value.reshape(num_volumes, 1, positions, heads * head_dim)
        else:
            # (R, T, heads, hd) -> (V, D, P, heads, hd) -> (V, P, heads, D, hd)
            def per_position(t: torch.Tensor) -> torch.Tensor:
                return t.reshape(num_volumes, num_slices, positions, heads, head_dim).permute(0, 2, 3, 1, 4)

            dropout = getattr(self.base_layer, "dropout", 0.0) if self.training else 0.0
            attended = F.scaled_dot_product_attention(
                per_position(query), per_position(key), per_position(value), dropout_p=float(dropout or 0.0)
            )
            attended = attended.permute(0, 3, 1, 2, 4).reshape(num_volumes, num_slices, positions, heads * head_dim)
        return self.base_layer.proj(attended) if project else attended

    def depth_adapter_output(self, name: str, attended: torch.Tensor) -> torch.Tensor:
        """``depth_adapter(proj(attended))`` with ``proj`` folded into the adapter's down-projection."""
        adapter, proj = self.depth_adapters[name], self.base_layer.proj
        down = adapter.down
        weight = down.weight @ proj.weight.to(down.weight.dtype)
        bias = down.bias if proj.bias is None else down.bias + down.weight @ proj.bias.to(down.weight.dtype)
        return adapter.up(adapter.act(F.linear(attended.to(down.weight.dtype), weight, bias)))

    # -- forward ------------------------------------------------------------------------------------------------------
    def _volumes(self, rows: int, num_slices: VolumeLayout | int | None) -> tuple[int, int]:
        """(V, D) of a call whose attention input has ``rows`` rows."""
        if num_slices is None or (type(num_slices) is int and num_slices == 1):
            return rows, 1
        if not isinstance(num_slices, VolumeLayout):
            raise ValueError(
                f"SpaceDepthAttention needs num_slices as a VolumeLayout(batch_size, num_slices) (the tuner builds it "
                f"from model(..., num_slices=D)); got num_slices={num_slices!r}"
            )
        if rows % num_slices.batch_size != 0:
            raise ValueError(
                f"the attention input has {rows} rows, not a multiple of the batch of {num_slices.batch_size} slices"
            )
        return num_slices.num_volumes, num_slices.num_slices

    def _volume_groups(
        self, rows: int, num_volumes: int, adapter_names: list[str] | None
    ) -> list[tuple[str, slice | torch.Tensor]]:
        """(adapter name, volumes it applies to) for each depth adapter that runs in this call."""
        if adapter_names is None:
            return [(n, slice(None)) for n in self.active_adapters if n in self.depth_adapters]
        per_row = rows_per_sample(torch.empty(rows, 0), adapter_names)
        row_names = [name for name in adapter_names for _ in range(per_row)]
        per_volume = rows // num_volumes
        volume_names = []
        for v in range(num_volumes):
            names = set(row_names[v * per_volume : (v + 1) * per_volume])
            if len(names) != 1:
                raise ValueError(
                    f"adapter_names gives slices of one volume different adapters {sorted(names)}; the depth branch "
                    "mixes the slices of a volume, so all of them need the same adapter"
                )
            volume_names.append(names.pop())
        groups = []
        for name in dict.fromkeys(volume_names):
            if name != BASE_ADAPTER_NAME and name in self.depth_adapters:
                index = torch.tensor([v for v, n in enumerate(volume_names) if n == name])
                groups.append((name, index))
        return groups

    def _fused_update(self, name: str, space: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """The fusion's update of the space branch for adapter ``name``; ``space``: ``(v, D, P, C)``, ``depth``: the
        depth attention before ``proj``, ``(v, D, P, C)``."""
        dtype = self.depth_adapters[name].down.weight.dtype
        depth = self.depth_adapter_output(name, depth)
        if self.sd_fusion[name] == "add":
            return depth.to(space.dtype)
        if name in self.adapters:
            space = space + self._adapter_output(name, space)
        return self.depth_fusions[name](space.to(dtype), depth).to(space.dtype)

    def forward(
        self,
        *args: Any,
        adapter_names: list[str] | None = None,
        num_slices: VolumeLayout | int | None = None,
        **kwargs: Any,
    ) -> Any:
        if not self._adapters_apply(adapter_names) or not self.depth_adapters:
            return super().forward(*args, adapter_names=adapter_names, **kwargs)
        captured: list[torch.Tensor] = []
        handle = self.base_layer.qkv.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            output = self.base_layer(*args, **kwargs)
        finally:
            handle.remove()
        hidden_states = output[0] if isinstance(output, tuple) else output
        rows, width = hidden_states.shape[0], hidden_states.shape[-1]
        num_volumes, depth_size = self._volumes(rows, num_slices)
        groups = self._volume_groups(rows, num_volumes, adapter_names)
        update = self.adapter_delta(hidden_states, adapter_names)  # the main-branch (space) adapter
        if groups:
            depth = self.depth_branch(captured[-1], num_volumes, depth_size, project=False)
            space = hidden_states.reshape(num_volumes, depth_size, -1, width)
            update = update.reshape(space.shape)
            for name, volumes in groups:
                if isinstance(volumes, slice):  # every volume
                    update = update + self._fused_update(name, space, depth)
                else:
                    update = update.index_add(0, volumes, self._fused_update(name, space[volumes], depth[volumes]))
            update = update.reshape(hidden_states.shape)
        hidden_states = hidden_states + update
        return (hidden_states, *output[1:]) if isinstance(output, tuple) else hidden_states

    def __repr__(self) -> str:
        return "sd_trans." + super().__repr__()


__all__ = ["QKV_LAYOUTS", "SpaceDepthAttention", "qkv_layout"]
