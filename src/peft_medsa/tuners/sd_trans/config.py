"""SDTransConfig: Med-SA with SD-Trans, registered as its own PEFT type ``SDTRANS`` (Wu et al., section 3.3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.utils import PeftType

from ..medsa.config import MedSAConfig


@dataclass
class SDTransConfig(MedSAConfig):
    """``MedSAConfig`` with ``sd_trans=True``: Med-SA's adapters plus the SD-Trans depth branch in every adapted
    encoder block, for 3D volumes fed as slices (``model(pixel_values=slices, num_slices=D, ...)``).

    Args:
        sd_trans: must stay ``True`` (use ``MedSAConfig`` for 2D adapters only).
        sd_fusion: ``"add"`` (paper), ``"concat"`` or ``"cross_attention"`` (Table 8).
        Other arguments: as in ``MedSAConfig``.
    """

    sd_trans: bool = field(default=True, metadata={"help": "Always True for SDTransConfig."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PeftType.SDTRANS
        if self.sd_trans is not True:
            raise ValueError(
                f"SDTransConfig.sd_trans must be True, got sd_trans={self.sd_trans!r}; use MedSAConfig for 2D adapters"
            )
