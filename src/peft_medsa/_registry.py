"""The one place that touches peft's private registry.

peft's ``register_peft_method`` only accepts names that already exist in its ``PeftType`` enum, so an out-of-tree
method first adds its member to that enum, then registers its config and tuner classes. Both steps are idempotent:
importing ``peft_medsa`` twice (or reloading it) does not raise.

peft is imported last, after every definition: importing it runs ``peft_medsa``'s post-import registration
(``peft_medsa._lazy``), which imports the tuners, which import this module's functions.
"""

from __future__ import annotations

import enum
from typing import Any

# The tested range; pyproject.toml declares the same. The enum extension below relies on peft internals.
SUPPORTED_PEFT = ">=0.21,<0.22"


def _registry_api() -> tuple[Any, Any, dict]:
    """peft's ``PeftType``, ``register_peft_method`` and config mapping, or an ImportError naming the peft version."""
    import peft

    try:
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
        from peft.utils import PeftType, register_peft_method
    except ImportError as error:
        raise ImportError(
            f"peft-medsa registers its PEFT methods through peft's registry API (peft.utils.register_peft_method, "
            f"peft.utils.PeftType, peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING), which this peft "
            f"{getattr(peft, '__version__', '?')} lacks ({error}); install peft{SUPPORTED_PEFT}"
        ) from error
    if not hasattr(PeftType, "_member_map_") or not hasattr(PeftType, "_value2member_map_"):
        raise ImportError(
            f"peft {peft.__version__}: PeftType is not a standard Enum, so peft-medsa cannot add its methods to it; "
            f"install peft{SUPPORTED_PEFT}"
        )
    return PeftType, register_peft_method, PEFT_TYPE_TO_CONFIG_MAPPING



def _add_peft_type(name: str) -> Any:
    """Adds ``name`` (upper case) to ``peft.utils.PeftType``; returns the new or already existing member."""
    PeftType = _registry_api()[0]
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member.__init__(name)
    # EnumType.__setattr__ refuses to rebind members; bypass it for the new name only.
    type.__setattr__(PeftType, name, member)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    assert isinstance(member, enum.Enum)
    return member


def register(name: str, config_cls: type, model_cls: type) -> Any:
    """Registers a PEFT method so that ``get_peft_model`` and ``PeftModel.from_pretrained`` find it.

    Args:
        name: the method's name in lower case (``"medsa"``); its prefix is ``name + "_"`` and must equal
            ``model_cls.prefix``.
        config_cls: the ``PeftConfig`` subclass whose ``peft_type`` is ``PeftType[name.upper()]``.
        model_cls: the ``BaseTuner`` subclass.

    Returns:
        The ``PeftType`` member.
    """
    _, register_peft_method, PEFT_TYPE_TO_CONFIG_MAPPING = _registry_api()
    peft_type = _add_peft_type(name.upper())
    if PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type) is None:
        register_peft_method(name=name, config_cls=config_cls, model_cls=model_cls, prefix=name + "_")
    return peft_type


_registry_api()  # fails at import, naming the peft version, when the registry API is missing
