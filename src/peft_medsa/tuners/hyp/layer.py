"""HyperPromptLayer: the first decoder adapter slot of Med-SA (Wu et al., Fig. 1d), holding HyP-Adpt.

Placement. A SAM two-way block runs self-attention -> token-to-image cross-attention (+ residual, ``layer_norm2``)
-> MLP (+ residual, ``layer_norm3``) -> image-to-token cross-attention (+ residual, ``layer_norm4``). Med-SA's three
decoder adapters are, in that order, HyP-Adpt, the MLP-branch adapter and the adapter after the image-to-token
cross-attention. HyP-Adpt therefore sits before the MLP, and it acts on the token stream, where the prompt tokens
live. This layer wraps ``layer_norm2``: ``layer_norm2(x + adapter(x, prompt))``, i.e. after the residual of the
token-to-image cross-attention, the adapter, another residual connection, then the block's layer norm: the same
form as the third slot (``layer_norm4``), so the tokens it modulates already carry what they gathered from the image.

Prompt. The prompt tokens are read from the two-way block's own input: SAM calls each block with
``query_point_embedding`` = [iou token, mask tokens, sparse prompt tokens] of shape (B, point_batch, T, d); the last
``T - num_output_tokens`` entries are the prompt encoder's embeddings of the clicks and box corners given to this
call. A forward pre-hook on the block hands them to this layer for the duration of the block's forward (a forward
hook clears them). This needs no change to SAM's signatures, works for full forwards and for decoding against cached
``image_embeddings`` alike, and conditions each image and each point-batch entry on its own prompt.

Tokens (B, point_batch, T, d) and prompt tokens (B, point_batch, n, d) are sample-major, so mixed-adapter batches
(``adapter_names``) select rows along the first dimension of both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...prompt_checks import EMPTY_PROMPT_ERROR
from ..medsa.layer import BASE_ADAPTER_NAME, MedSALayer, rows_per_sample
from .hyper_prompt_adapter import DEFAULT_MAX_HYPER_DIM, build_slot_adapter, needs_prompt


class HyperPromptLayer(MedSALayer):
    """The block's ``layer_norm2`` wrapped with a prompt-conditioned adapter per adapter name.

    Args:
        base_layer: the block's ``layer_norm2``.
        adapter_name: name of the first adapter.
        block: the two-way block that owns ``base_layer`` (its input carries the prompt tokens).
        num_output_tokens: 1 + number of mask tokens, the tokens before the prompt tokens in ``query_point_embedding``.
        r, activation, init_weights: as in ``MedSAConfig``.
        prefix: the PEFT type's parameter prefix (see ``MedSALayer``).
        prompt_conditioning: ``"hyper"`` (HyP-Adpt), ``"add"``, ``"concat"`` or ``"none"`` (plain adapter).
    """

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        block: nn.Module,
        num_output_tokens: int,
        r: int,
        activation: str = "relu",
        init_weights: bool = True,
        prompt_conditioning: str = "hyper",
        hyper_dim: int = 64,
        prefix: str = "medsa_",
    ) -> None:
        super().__init__(
            base_layer,
            adapter_name,
            role="hyper",
            r=r,
            activation=activation,
            init_weights=init_weights,
            prefix=prefix,
            prompt_conditioning=prompt_conditioning,
            hyper_dim=hyper_dim,
        )
        self.num_output_tokens = num_output_tokens
        self._prompt_tokens: torch.Tensor | None = None
        self._hook_handles: list = []
        self.attach_prompt_hooks(block)

    def update_layer(
        self,
        adapter_name: str,
        r: int,
        activation: str = "relu",
        init_weights: bool = True,
        prompt_conditioning: str = "none",
        hyper_dim: int = 64,
        **kwargs: Any,
    ) -> None:
        """Creates adapter ``adapter_name`` (``prompt_conditioning`` picks its kind) on the norm's device and dtype."""
        self.adapters[adapter_name] = build_slot_adapter(
            prompt_conditioning, self.hidden_size, r, activation, zero_init=init_weights, hyper_dim=hyper_dim
        )
        self.scalings[adapter_name] = 1.0
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    # -- the prompt, from the block's input -------------------------------------------------------------------------
    def attach_prompt_hooks(self, block: nn.Module) -> None:
        self._hook_handles = [
            block.register_forward_pre_hook(self._capture_prompt, with_kwargs=True),
            block.register_forward_hook(self._release_prompt, with_kwargs=True, always_call=True),
        ]

    def detach_prompt_hooks(self) -> None:
        """Removes the hooks from the block (called when this layer is unloaded or removed)."""
        for handle in self._hook_handles:
            handle.remove()
        self._hook_handles = []
        self._prompt_tokens = None

    def _capture_prompt(self, block: nn.Module, args: tuple, kwargs: dict) -> None:
        embedding = kwargs.get("query_point_embedding", args[2] if len(args) > 2 else None)
        self._prompt_tokens = None if embedding is None else embedding[..., self.num_output_tokens :, :]

    def _release_prompt(self, block: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self._prompt_tokens = None

    def prompt_tokens(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """The prompt tokens (B, point_batch, n, d) of the running block call, checked against the tokens."""
        tokens = self._prompt_tokens
        if tokens is None:
            raise RuntimeError(
                "HyP-Adpt reads the prompt from its two-way block's query_point_embedding; call the model or its mask "
                "decoder, not this layer on its own"
            )
        if tokens.shape[-2] == 0:
            raise ValueError(EMPTY_PROMPT_ERROR)
        if tokens.shape[:-2] != hidden_states.shape[:-2]:
            raise ValueError(
                f"prompt tokens {tuple(tokens.shape)} do not match the decoder tokens {tuple(hidden_states.shape)}"
            )
        return tokens

    # -- forward ------------------------------------------------------------------------------------------------------
    def _slot_output(self, name: str, hidden_states: torch.Tensor, prompt_tokens: torch.Tensor | None) -> torch.Tensor:
        adapter = self.adapters[name]
        dtype = adapter.down.weight.dtype
        if needs_prompt(adapter):
            out = adapter(hidden_states.to(dtype), prompt_tokens.to(dtype))
        else:
            out = adapter(hidden_states.to(dtype))
        return out.to(hidden_states.dtype)

    def adapter_delta(self, hidden_states: torch.Tensor, adapter_names: list[str] | None = None) -> torch.Tensor:
        """Sum of the active adapters' outputs on tokens (B, point_batch, T, d), each conditioned on its own prompt."""
        if adapter_names is None:
            names = [a for a in self.active_adapters if a in self.adapters]
            rows = {name: None for name in names}
        else:
            per = rows_per_sample(hidden_states, adapter_names)
            rows = {}
            for name in dict.fromkeys(adapter_names):
                if name != BASE_ADAPTER_NAME and name in self.adapters:
                    rows[name] = torch.tensor(
                        [i * per + k for i, n in enumerate(adapter_names) if n == name for k in range(per)],
                        device=hidden_states.device,
                    )
        wanted = any(needs_prompt(self.adapters[name]) for name in rows)
        prompt = self.prompt_tokens(hidden_states) if wanted else None
        delta = torch.zeros_like(hidden_states)
        for name, index in rows.items():
            if index is None:
                delta = delta + self._slot_output(name, hidden_states, prompt)
            else:
                part = self._slot_output(name, hidden_states[index], None if prompt is None else prompt[index])
                delta = delta.index_put((index,), part)
        return delta

    def forward(self, hidden_states: torch.Tensor, *args: Any, adapter_names: list[str] | None = None, **kwargs: Any):
        if not self._adapters_apply(adapter_names):
            return self.base_layer(hidden_states, *args, **kwargs)
        return self.base_layer(hidden_states + self.adapter_delta(hidden_states, adapter_names), *args, **kwargs)

    def requires_prompt(self) -> bool:
        """Whether any active adapter of this layer is conditioned on the prompt (adapters enabled)."""
        if self.disable_adapters:
            return False
        return any(needs_prompt(self.adapters[a]) for a in self.active_adapters if a in self.adapters)


def create_or_update_hyper_layer(
    model: nn.Module,
    config: Any,
    adapter_name: str,
    target: nn.Module,
    parent: nn.Module,
    key: str,
    prefix: str = "medsa_",
) -> HyperPromptLayer | None:
    """Adds ``adapter_name`` to the first decoder slot ``key`` (a block's ``layer_norm2``).

    Returns the new wrapper when ``target`` is still SAM's norm, ``None`` when it already was a ``HyperPromptLayer``
    (the adapter is added in place). ``config`` provides ``r``, ``activation``, ``init_weights`` and
    ``prompt_conditioning`` and ``hyper_dim``.

    Raises:
        TypeError: ``target`` already holds plain Med-SA adapters of another role.
    """
    kwargs = {
        "r": config.r,
        "activation": config.activation,
        "init_weights": config.init_weights,
        "prompt_conditioning": config.prompt_conditioning,
        "hyper_dim": config.hyper_dim or min(config.r, DEFAULT_MAX_HYPER_DIM),
    }
    if isinstance(target, HyperPromptLayer):
        target.update_layer(adapter_name, **kwargs)
        return None
    if isinstance(target, MedSALayer):
        raise TypeError(
            f"{key} already holds Med-SA '{target.role}' adapters; the HyP-Adpt slot cannot be added to it. Use the "
            "same placement (target_modules) for every adapter of this model"
        )
    decoder_name = key.split(".transformer.layers.")[0]
    decoder = model.get_submodule(decoder_name)
    num_output_tokens = 1 + decoder.mask_tokens.num_embeddings
    return HyperPromptLayer(target, adapter_name, parent, num_output_tokens, prefix=prefix, **kwargs)


def hyper_prompt_layers(model: nn.Module) -> list[HyperPromptLayer]:
    """All HyP-Adpt slot layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, HyperPromptLayer)]
