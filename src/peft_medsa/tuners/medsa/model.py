"""MedSAModel: the PEFT tuner that places Med-SA adapters in a SAM-like model.

Paper: Wu et al., "Medical SAM Adapter: Adapting Segment Anything Model for Medical Image Segmentation", Medical
Image Analysis (https://arxiv.org/abs/2304.12620).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

from .call_checks import check_call_options
from .config import MedSAConfig
from .config_checks import check_modules_to_save
from .layer import BASE_ADAPTER_NAME, MERGE_ERROR, MedSALayer
from .load_checks import check_adapter_load, discard_failed_adapter
from .targets import resolve_targets

# Options a caller may pass to ``PeftModel.forward`` for one call; the tuner hands each to the layers that ask for it
# (``call_kwargs``) and strips them from the call to the SAM model itself.
PER_CALL_KWARGS: tuple[str, ...] = ("adapter_names", "num_slices")


def _inject_kwargs_hook(module: nn.Module, args: tuple, kwargs: dict, extra: dict[str, Any]):
    kwargs.update(extra)
    return args, kwargs


def _strip_kwargs_hook(module: nn.Module, args: tuple, kwargs: dict):
    return args, {k: v for k, v in kwargs.items() if k not in PER_CALL_KWARGS}


def _training_follows_grad_mode(module: nn.Module, args: tuple) -> None:
    module.training = torch.is_grad_enabled()  # this module's flag only, not its children's


def install_call_options(model: nn.Module, options: dict[str, Any]) -> list:
    """Forward pre-hooks giving each module of ``model`` the ``options`` its ``call_kwargs`` lists; returns handles."""
    handles = []
    for module in model.modules():
        wanted = {k: v for k, v in options.items() if k in getattr(module, "call_kwargs", ())}
        if wanted:
            hook = partial(_inject_kwargs_hook, extra=wanted)
            handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    return handles


@contextmanager
def _call_options_context(model: nn.Module, options: dict[str, Any]):
    handles = install_call_options(model, options) if options else []
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class MedSAModel(BaseTuner):
    """Places Med-SA bottleneck adapters in a SAM-like model's image encoder and mask decoder; SAM stays frozen.

    Example:

        ```py
        >>> import peft_medsa
        >>> from peft import get_peft_model
        >>> from transformers import SamModel

        >>> sam = SamModel.from_pretrained("facebook/sam-vit-base")
        >>> model = get_peft_model(sam, peft_medsa.MedSAConfig(r=64))
        >>> model.print_trainable_parameters()
        >>> outputs = model(pixel_values=pixel_values, input_boxes=boxes, multimask_output=False)
        ```

    Mixed-adapter batches: ``model(..., adapter_names=["liver", "spleen", "__base__"])`` runs each image through its
    own adapter (``"__base__"``: no adapter).
    """

    prefix: str = "medsa_"
    tuner_layer_cls = MedSALayer
    target_module_mapping: dict[str, list[str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._resolved_targets: dict[int, dict[str, str]] = {}
        self._fresh_adapters: set[str] = set()  # created, weights not loaded yet (see load_checks)
        base = kwargs.get("model", args[0] if args else None)
        self._base_requires_grad = {n: p.requires_grad for n, p in base.named_parameters()} if base else {}
        self._call_options: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    def inject_adapter(self, model: nn.Module, adapter_name: str, *args: Any, **kwargs: Any) -> None:
        self._fresh_adapters.add(adapter_name)
        super().inject_adapter(model, adapter_name, *args, **kwargs)

    # -- where adapters go ----------------------------------------------------------------------------------------
    def _prepare_adapter_config(self, peft_config: MedSAConfig, model_config: dict) -> MedSAConfig:
        return peft_config

    def _prepare_model(self, peft_config: MedSAConfig, model: nn.Module) -> None:
        self._resolved_targets[id(peft_config)] = resolve_targets(model, peft_config)
        check_modules_to_save(model, peft_config)

    def _check_target_module_exists(self, peft_config: MedSAConfig, key: str) -> bool:
        return key in self._resolved_targets.get(id(peft_config), {})

    def _create_and_replace(
        self,
        peft_config: MedSAConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **optional_kwargs: Any,
    ) -> None:
        role = self._resolved_targets[id(peft_config)][current_key]
        if role == "hyper":  # HyP-Adpt slot (first decoder adapter)
            from ..hyp.layer import create_or_update_hyper_layer  # lazy: tuners/hyp imports this module

            new_module = create_or_update_hyper_layer(
                self.model, peft_config, adapter_name, target, parent, current_key, prefix=self.prefix
            )
            if new_module is not None:
                if adapter_name not in self.active_adapters:
                    new_module.requires_grad_(False)
                self._replace_module(parent, target_name, new_module, target)
            return
        kwargs = {
            "r": peft_config.r,
            "scaling": peft_config.scaling,
            "activation": peft_config.activation,
            "init_weights": peft_config.init_weights,
        }
        layer_cls = MedSALayer
        if getattr(peft_config, "sd_trans", False) and role == "attn" and "vision_encoder" in current_key.split("."):
            from ..sd_trans.space_depth_attention import SpaceDepthAttention  # lazy: sd_trans imports this module

            layer_cls, kwargs["sd_fusion"] = SpaceDepthAttention, peft_config.sd_fusion
            if isinstance(target, MedSALayer) and not isinstance(target, SpaceDepthAttention):
                raise ValueError(
                    f"{current_key} already holds 2D Med-SA adapters; add the SD-Trans (sd_trans=True) adapter first"
                )
        if isinstance(target, MedSALayer):
            target.update_layer(adapter_name, **kwargs)
            return
        new_module = layer_cls(target, adapter_name, role=role, prefix=self.prefix, **kwargs)
        if role == "attn" and getattr(parent, "window_size", 0) > 0 and hasattr(parent, "window_partition"):
            vision = getattr(getattr(self.model, "config", None), "vision_config", None)
            if vision is not None and getattr(vision, "patch_size", None):
                new_module.token_grid = int(vision.image_size) // int(vision.patch_size)  # ViT-SAM's fixed grid
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _replace_module(self, parent: nn.Module, child_name: str, new_module: nn.Module, child: nn.Module) -> None:
        """Puts ``new_module`` in place of ``child``.

        Wrapping (``new_module`` is a tuner layer) goes through ``BaseTuner._replace_module``, which moves the new
        adapter parts (named with ``self.prefix``) to the wrapped module's device, leaving meta tensors alone.
        Unloading (``new_module`` is the SAM module that ``child`` wrapped) only sets it back: SAM's attention and MLP
        blocks have no ``.weight`` for BaseTuner's weight copy, and the very module is restored anyway.
        """
        if new_module is not child and hasattr(child, "detach_prompt_hooks"):  # HyP-Adpt hooks on the decoder block
            child.detach_prompt_hooks()
        if isinstance(new_module, BaseTunerLayer):
            super()._replace_module(parent, child_name, new_module, child)
        else:
            setattr(parent, child_name, new_module)

    # -- merging is impossible --------------------------------------------------------------------------------------
    def _check_merge_allowed(self) -> None:
        raise ValueError(MERGE_ERROR)

    def merge_adapter(self, *args: Any, **kwargs: Any) -> None:
        raise ValueError(MERGE_ERROR)

    # -- per-call options -------------------------------------------------------------------------------------------
    def _check_adapter_names(self, adapter_names: Any) -> list[str]:
        if isinstance(adapter_names, str) or not all(isinstance(n, str) for n in adapter_names):
            raise ValueError(f"adapter_names must be a list of adapter names, one per image; got {adapter_names!r}")
        known = set(self.peft_config)
        unknown = sorted({n for n in adapter_names if n != BASE_ADAPTER_NAME and n not in known})
        if unknown:
            raise ValueError(
                f"adapter_names has unknown adapter(s) {unknown}; loaded adapters: {sorted(known)} "
                f"(or '{BASE_ADAPTER_NAME}' for the base model)"
            )
        return list(adapter_names)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args: Any, **kwargs: Any):
        """Routes per-call options to the tuner layers for the duration of one forward.

        ``adapter_names`` (one per image) and the other names in ``PER_CALL_KWARGS`` are taken out of the call to the
        SAM model and given to every tuner layer whose ``call_kwargs`` lists them. Only shapes and Python values are
        checked here (no host-device synchronisation); the prompts' values are checked once at the API boundaries
        (``peft_medsa.prompt_checks.check_model_call``).
        """
        check_call_options(self.model, args, kwargs)  # shapes and Python values only
        options = {k: kwargs[k] for k in PER_CALL_KWARGS if kwargs.get(k) is not None}
        if not options:
            yield
            return
        if "adapter_names" in options:
            options["adapter_names"] = self._check_adapter_names(options["adapter_names"])
        if "num_slices" in options:  # SD-Trans: slices per volume -> VolumeLayout, after checking the call
            from ..sd_trans.layout import volume_layout

            call = {"pixel_values": args[0], **kwargs} if args else kwargs
            options["num_slices"] = volume_layout(options["num_slices"], call)
        handles = [self.model.register_forward_pre_hook(_strip_kwargs_hook, with_kwargs=True)]
        handles += install_call_options(self.model, options)
        self._call_options = options
        try:
            yield
        finally:
            self._call_options = {}
            for handle in handles:
                handle.remove()

    # -- activation checkpointing of the frozen image encoder -------------------------------------------------------
    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict | None = None, eval_mode: bool = False, **kwargs: Any
    ) -> None:
        """Checkpoints the image encoder's blocks (transformers' activation checkpointing of ``SamVisionLayer``).

        transformers checkpoints a block only in training mode. With ``eval_mode=True`` the blocks are checkpointed
        in eval mode too, whenever gradients are enabled (the trainer keeps the frozen SAM in eval mode): each
        checkpointed block's own ``training`` flag then follows ``torch.is_grad_enabled()``; its children, and with
        them any dropout or BatchNorm, stay as they are.

        Non-reentrant checkpointing only (the reentrant kind drops the adapters' gradients when the block inputs come
        from frozen layers). The blocks are recomputed during backward, after the forward's per-call options
        (``adapter_names``, ``num_slices``) are gone, so a ``context_fn`` hands each recomputation the options of its
        own forward: gradients equal those without checkpointing (tested).

        Raises:
            ValueError: ``use_reentrant=True``, or a base model without activation checkpointing support.
        """
        options = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        if options["use_reentrant"]:
            raise ValueError(
                "Med-SA supports non-reentrant activation checkpointing only (use_reentrant=False): the reentrant "
                "kind loses the gradients of adapters inside a block whose input does not require grad"
            )
        options.setdefault("context_fn", self._checkpoint_contexts)
        enable = getattr(self.model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs=options, **kwargs)
        else:  # transformers before activation_checkpointing_enable
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options, **kwargs)
        self._remove_eval_mode_hooks()
        if eval_mode:
            from transformers.modeling_layers import GradientCheckpointingLayer

            self._eval_mode_hooks = [
                module.register_forward_pre_hook(_training_follows_grad_mode)
                for module in self.model.modules()
                if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing
            ]

    def gradient_checkpointing_disable(self) -> None:
        self._remove_eval_mode_hooks()
        disable = getattr(self.model, "activation_checkpointing_disable", None)
        (disable or self.model.gradient_checkpointing_disable)()

    def _remove_eval_mode_hooks(self) -> None:
        for handle in getattr(self, "_eval_mode_hooks", []):
            handle.remove()
        self._eval_mode_hooks = []

    def _checkpoint_contexts(self):
        """``context_fn`` of ``torch.utils.checkpoint``: nothing around the forward; the forward's per-call options
        re-installed around its recomputation."""
        return nullcontext(), _call_options_context(self.model, dict(getattr(self, "_call_options", {})))

    # -- saving and loading -------------------------------------------------------------------------------------------
    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """``...attn.medsa_adapter.<name>.down.weight`` -> ``...attn.medsa_adapter.down.weight`` (checkpoint key)."""
        for container in ("adapter", "depth_adapter", "depth_fusion"):
            marker = f".{cls.prefix}{container}.{adapter_name}."
            if marker in key:
                head, _, tail = key.rpartition(marker)
                return f"{head}.{cls.prefix}{container}.{tail}"
        return super()._remove_adapter_name_from_key(key, adapter_name)

    @classmethod
    def _upgrade_legacy_keys(cls, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Renames ``.medsa_<container>.`` to ``.<prefix><container>.`` in checkpoint keys.

        Adapter files of the HYPADPT and SDTRANS types written before their parameters took their own prefix used
        ``medsa_`` for every type; they load unchanged this way.
        """
        if cls.prefix == "medsa_":
            return state_dict
        legacy = {f".medsa_{c}.": f".{cls.prefix}{c}." for c in ("adapter", "depth_adapter", "depth_fusion")}
        upgraded = {}
        for key, value in state_dict.items():
            for old, new in legacy.items():
                key = key.replace(old, new)
            upgraded[key] = value
        return upgraded

    @classmethod
    def _remap_adapter_state_dict_for_load(
        cls, model: nn.Module, config: MedSAConfig, adapter_name: str, state_dict: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Maps checkpoint keys to the model and refuses a checkpoint whose shapes differ, leaving the model as before.

        Raises:
            ValueError: a tensor of the checkpoint has another shape than the adapter created for it (an adapter
                saved for another SAM size or rank); the message names the key and both shapes.
        """
        state_dict = cls._upgrade_legacy_keys(state_dict)
        check_adapter_load(model, adapter_name, state_dict)
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        own = model.state_dict()
        mismatched = [
            f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}"
            for key, value in remapped.items()
            if key in own and tuple(own[key].shape) != tuple(value.shape)
        ]
        if mismatched:
            tuner = model.base_model if hasattr(model, "base_model") else model
            if isinstance(tuner, MedSAModel):
                discard_failed_adapter(tuner, adapter_name)
            more = f" (and {len(mismatched) - 3} more)" if len(mismatched) > 3 else ""
            raise ValueError(
                f"adapter '{adapter_name}' does not fit this model (saved for another SAM size or rank?): "
                + "; ".join(mismatched[:3])
                + more
            )
        return remapped

    def remove_adapter_completely(self, adapter_name: str) -> None:
        """Removes ``adapter_name`` from every layer; layers left without adapters are replaced by their SAM module.

        Unlike ``delete_adapter`` this also works on the last adapter, restoring the model's original modules.
        """
        for name, module in list(self.model.named_modules()):
            if not isinstance(module, BaseTunerLayer):
                continue
            for attribute in (*module.adapter_layer_names, *module.other_param_names):
                per_adapter = getattr(module, attribute, None)
                if isinstance(per_adapter, (dict, nn.ModuleDict)) and adapter_name in per_adapter:
                    del per_adapter[adapter_name]
            left = {a for attribute in module.adapter_layer_names for a in getattr(module, attribute, {})}
            if not left:
                parent_name, _, child_name = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                self._replace_module(parent, child_name, module.get_base_layer(), module)
            else:
                remaining = [a for a in module.active_adapters if a in left]
                module.set_adapter(remaining or sorted(left)[:1])
        self.peft_config.pop(adapter_name, None)
        if not self.peft_config and hasattr(self.model, "peft_config"):
            del self.model.peft_config
        if self.active_adapter == adapter_name or (
            isinstance(self.active_adapter, list) and adapter_name in self.active_adapter
        ):
            self.active_adapter = next(iter(self.peft_config), adapter_name)


def medsa_layers(model: nn.Module) -> list[BaseTunerLayer]:
    """All Med-SA layers of ``model`` (a PeftModel, a tuner or a SamModel with injected adapters)."""
    return [m for m in model.modules() if isinstance(m, MedSALayer)]


__all__ = ["MedSAModel", "medsa_layers"]
