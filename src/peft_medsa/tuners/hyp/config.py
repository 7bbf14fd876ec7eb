"""HyPAdptConfig: HyP-Adpt alone as its own PEFT type (Wu et al., section 4): the decoder's prompt-conditioned slot."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.config import PeftConfig
from peft.utils import PeftType

from ..adapter import ACTIVATIONS
from ..medsa.config import PROMPT_CONDITIONINGS
from ..medsa.config_checks import check_bool_fields
from ..medsa.load_checks import check_weights_file

HYPER_CONDITIONINGS = tuple(c for c in PROMPT_CONDITIONINGS if c != "none")


@dataclass
class HyPAdptConfig(PeftConfig):
    """Configuration of HyP-Adpt only: one prompt-conditioned adapter in every two-way block of SAM's mask decoder
    (the first of Med-SA's three decoder adapters, on the tokens after the token-to-image cross-attention). The image
    encoder is left as SAM's; for the full method use ``MedSAConfig``.

    Args:
        r: the reduced length (bottleneck width). Default 64.
        hyper_dim: width h of the prompt embedding and inner hyper layers (r -> h -> h -> r); None: min(r, 64).
        prompt_conditioning: ``"hyper"`` (HyP-Adpt, default), ``"add"`` or ``"concat"`` (Table 5 ablations).
        activation: activation of the ``"add"`` / ``"concat"`` variants (HyP-Adpt uses ReLU after its norms).
        init_weights: zero-initialise the up-projections so that the model equals SAM at init.
        target_modules: names (or a full-match regex) of the norms to wrap; ``None`` means ``layer_norm2`` of every
            block of ``mask_decoder.transformer.layers``.
        modules_to_save: other modules to train and save fully.
    """

    r: int = field(default=64, metadata={"help": "Reduced length of HyP-Adpt (bottleneck width)."})
    prompt_conditioning: str = field(
        default="hyper", metadata={"help": "How the prompt enters: 'hyper' (HyP-Adpt), 'add' or 'concat'."}
    )
    activation: str = field(default="relu", metadata={"help": "Activation of the 'add'/'concat' variants."})
    hyper_dim: int | None = field(
        default=None,
        metadata={"help": "HyP-Adpt prompt embedding and inner layer width (r -> h -> h -> r); None: min(r, 64)."},
    )
    init_weights: bool = field(
        default=True, metadata={"help": "Zero-init the up-projections so that the model equals SAM at init."}
    )
    target_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Norms to wrap; None = layer_norm2 of every two-way decoder block."}
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Other modules to train and save fully."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PeftType.HYPADPT
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"HyPAdptConfig.r must be a positive integer, got r={self.r!r}")
        if self.prompt_conditioning not in HYPER_CONDITIONINGS:
            raise ValueError(
                f"HyPAdptConfig.prompt_conditioning={self.prompt_conditioning!r} is not supported; allowed: "
                f"{list(HYPER_CONDITIONINGS)}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"HyPAdptConfig.activation={self.activation!r} is not supported; allowed: {sorted(ACTIVATIONS)}"
            )
        if self.hyper_dim is not None and (
            isinstance(self.hyper_dim, bool) or not isinstance(self.hyper_dim, int) or self.hyper_dim <= 0
        ):
            raise ValueError(
                f"HyPAdptConfig.hyper_dim must be a positive integer or None, got hyper_dim={self.hyper_dim!r}"
            )
        check_bool_fields(self, ("init_weights",))
        if isinstance(self.target_modules, (list, tuple, set)):
            self.target_modules = sorted(set(self.target_modules))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs):
        """PEFT's loader, after refusing a truncated local weights file before any adapter layer is created."""
        check_weights_file(pretrained_model_name_or_path, subfolder)
        return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
