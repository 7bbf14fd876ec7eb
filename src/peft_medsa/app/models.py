"""Loading the app's models: the base model (zero-shot) and a second copy carrying the named adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .backend import Segmenter, UserError, load_model

__all__ = ["load_adapter", "load_segmenter", "parse_adapter_spec"]


def parse_adapter_spec(spec: str) -> tuple[str, str]:
    """``"NAME=DIR_OR_HUB_ID"`` -> ``(name, source)``; a bare ``DIR`` is named after its last path component.

    Raises:
        UserError: an empty name or source.
    """
    name, sep, source = spec.partition("=")
    if not sep:
        name, source = Path(spec.rstrip("/")).name, spec
    name, source = name.strip(), source.strip()
    if not name or not source:
        raise UserError(f"--adapter {spec!r}: expected NAME=DIR_OR_HUB_ID (e.g. thyroid=demo_output/adapter)")
    return name, source


def load_adapter(model: Any, name: str, source: str) -> Any:
    """Loads adapter ``source`` as ``name`` onto ``model`` (a ``PeftModel``, or a plain model for the first one).

    Returns:
        The ``PeftModel`` (eval mode) with ``name`` active.

    Raises:
        UserError: the folder or Hub id is missing, or its adapter does not fit the model (the message says why).
    """
    from peft import PeftModel

    try:
        if hasattr(model, "peft_config"):
            model.load_adapter(source, adapter_name=name)
        else:
            model = PeftModel.from_pretrained(model, source, adapter_name=name)
    except Exception as err:  # peft raises ValueError / OSError / KeyError / RuntimeError for bad adapters
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise UserError(
            f"adapter {name!r} from {source}: cannot load ({type(err).__name__}: {first_line[:300]}); expected a "
            "Med-SA adapter folder (adapter_config.json + weights) or Hub id saved for this model"
        ) from None
    model.set_adapter(name)
    return model.eval()


def load_segmenter(model_spec: str, adapters: list[str], device: str = "cpu") -> Segmenter:
    """The app's `Segmenter` for ``--model`` and its ``--adapter NAME=DIR_OR_HUB_ID`` list.

    The adapters live on their own copy of the base model, so that zero-shot prediction never depends on how peft
    disables adapters; further adapters loaded from the page go onto that copy (a first one makes it).

    Raises:
        UserError: the model or an adapter cannot be loaded, or two adapters share a name.
    """
    pairs = [parse_adapter_spec(spec) for spec in adapters]
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise UserError(f"--adapter: names {names} repeat; give each NAME=DIR a distinct NAME")

    def loader(model: Any, name: str, source: str) -> Any:
        if model is None:
            model = load_model(model_spec, device=device)
        return load_adapter(model, name, source).to(device)

    adapted = None
    for name, source in pairs:
        adapted = loader(adapted, name, source)
    if adapted is not None:
        adapted.set_adapter(names[0])
    return Segmenter(load_model(model_spec, device=device), adapted, adapter_loader=loader)
