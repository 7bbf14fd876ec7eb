"""MedSAConfig: the configuration of the Med-SA tuner (Wu et al., Medical Image Analysis; sections 3.2-3.4)."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft.config import PeftConfig
from peft.utils import PeftType

from ...box_prior import check_box_prior
from ...mask_shape import check_mask_shape
from ..adapter import ACTIVATIONS
from .config_checks import check_bool_fields, check_scaling
from .load_checks import check_weights_file

ENCODER_POSITIONS = ("attn", "mlp")
SD_FUSIONS = ("add", "concat", "cross_attention")  # SD-Trans fusion of depth and space branches (Table 8)
PROMPT_CONDITIONINGS = ("hyper", "add", "concat", "none")  # first decoder adapter: how the prompt enters (Table 5)


@dataclass
class MedSAConfig(PeftConfig):
    """Configuration of Med-SA adapters on a SAM-like model (transformers ``SamModel`` or LiteMedSAM).

    Encoder: in every block (or those in ``encoder_layers``) an adapter after multi-head attention in the main branch
    (``"attn"``) and one parallel to the MLP, scaled by ``scaling`` (``"mlp"``). Decoder (``decoder_adapters``): in
    every two-way block, a prompt-conditioned adapter (HyP-Adpt, ``prompt_conditioning``) after the token-to-image
    cross-attention, an adapter parallel to the MLP (scaled by ``scaling``) and one after the residual connection
    of the image-to-token cross-attention, followed by another residual connection and the block's layer norm.

    Args:
        r: bottleneck width of every adapter (the paper's middle dimension; Table 7a). Default 64.
        scaling: s, the scale of the MLP-branch adapters: ``x + mlp(n) + s * adapter(n)``. Default 0.05 (Table 7c).
        activation: activation inside the adapters, ``"relu"`` (paper) or ``"gelu"``.
        encoder_layers: indices of the image-encoder blocks that get adapters; ``None`` means all (Table 7b).
        encoder_positions: which encoder adapters to place, a subset of ``("attn", "mlp")`` (Table 6).
        decoder_adapters: place the three decoder adapters (HyP-Adpt slot, MLP branch, post-cross-attention).
        prompt_conditioning: how the first decoder adapter uses the prompt (section 4, Table 5): ``"hyper"``
            (HyP-Adpt, default), ``"add"``, ``"concat"``, or ``"none"`` (a plain adapter there). With a prompt-
            conditioned adapter every call needs a point or box prompt.
        hyper_dim: width h of HyP-Adpt's prompt embedding and inner hyper layers: the three generated weights are
            (r x h), (h x h) and (h x r). ``None`` means min(r, 64): h = r up to r = 64, then fixed, so that the size
            grows linearly in r for large r.
        init_weights: ``True`` zero-initialises the up-projections so that the model equals SAM at init; ``False``
            initialises them randomly (for tests).
        target_modules: override of the modules to adapt, for SAM-like models with other module names: a regex
            (full match on module names) or a list of names/suffixes. The role of each matched module follows
            from its type: attention modules (``qkv``/``proj`` or ``q_proj``) get a main-branch adapter on their
            output, ``LayerNorm`` modules a residual adapter before the norm, anything else (MLPs) a parallel
            adapter scaled by ``scaling``.
        modules_to_save: other modules to train and save fully (e.g. ``["iou_prediction_head"]``).
        sd_trans: SD-Trans (section 3.3, Fig. 1c): in every adapted encoder block, a depth branch that attends across
            the slices of a volume with the block's attention weights, through a zero-initialised depth adapter. Call
            the model with ``num_slices=D`` on volume-major slices. Needs ``"attn"`` in ``encoder_positions``.
        sd_fusion: how the depth branch joins the space branch: ``"add"`` (paper), ``"concat"`` or
            ``"cross_attention"`` (Table 8).
        mask_shape: how the target is annotated, recorded with the adapter: ``None`` (traced boundaries; the masks are
            returned as predicted) or ``"ellipse"`` (annotators draw ellipses, as ORIGA's optic disc and cup:
            :class:`~peft_medsa.inference.MedSAPredictor` returns the ellipse fitted to each predicted mask,
            :mod:`peft_medsa.mask_shape`). Set by the trainer from the training masks (``TrainingConfig.mask_shape``).
        box_prior: ``None`` (box prompts alone) or ``"ellipse"``: the adapter was trained with the ellipse inscribed
            in each box prompt as SAM's mask prompt, and the predictor gives it the same (:mod:`peft_medsa.box_prior`).
            Set by the trainer (``TrainingConfig.box_prior``).
    """

    r: int = field(default=64, metadata={"help": "Bottleneck width of every adapter (Table 7a: 64)."})
    scaling: float = field(
        default=0.05, metadata={"help": "s, the scale of the MLP-branch adapters (Table 7c: 0.05)."}
    )
    activation: str = field(default="relu", metadata={"help": "Adapter activation: 'relu' (paper) or 'gelu'."})
    encoder_layers: list[int] | None = field(
        default=None, metadata={"help": "Image-encoder block indices to adapt; None = all (Table 7b)."}
    )
    encoder_positions: list[str] = field(
        default_factory=lambda: list(ENCODER_POSITIONS),
        metadata={"help": "Encoder adapter positions, subset of ['attn', 'mlp'] (Table 6)."},
    )
    decoder_adapters: bool = field(
        default=True,
        metadata={"help": "Adapters in the mask decoder: MLP branch and after the image-to-token cross-attention."},
    )
    prompt_conditioning: str = field(
        default="hyper",
        metadata={"help": "First decoder adapter: 'hyper' (HyP-Adpt), 'add', 'concat' or 'none' (Table 5)."},
    )
    hyper_dim: int | None = field(
        default=None,
        metadata={"help": "HyP-Adpt prompt embedding and inner layer width (r -> h -> h -> r); None: min(r, 64)."},
    )
    init_weights: bool = field(
        default=True, metadata={"help": "Zero-init the up-projections so that the model equals SAM at init."}
    )
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "Override of the modules to adapt (regex or names) for other SAM-like models."},
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Other modules to train and save fully."}
    )
    sd_trans: bool = field(
        default=False,
        metadata={"help": "SD-Trans: depth attention across slices sharing the encoder's attention weights (3D)."},
    )
    sd_fusion: str = field(
        default="add", metadata={"help": "SD-Trans fusion: 'add' (paper), 'concat' or 'cross_attention' (Table 8)."}
    )
    mask_shape: str | None = field(
        default=None,
        metadata={"help": "Annotation shape of the target: None (as predicted) or 'ellipse' (fitted ellipses)."},
    )
    box_prior: str | None = field(
        default=None,
        metadata={"help": "Mask prompt given with every box: None, or 'ellipse' (the ellipse inscribed in the box)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = PeftType.MEDSA
        check_mask_shape(self.mask_shape, f"{type(self).__name__}.mask_shape")
        check_box_prior(self.box_prior, f"{type(self).__name__}.box_prior")
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"MedSAConfig.r must be a positive integer, got r={self.r!r}")
        check_scaling(self)
        check_bool_fields(self, ("decoder_adapters", "init_weights"))
        if self.scaling < 0:
            raise ValueError(f"MedSAConfig.scaling must be a number >= 0, got scaling={self.scaling!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"MedSAConfig.activation={self.activation!r} is not supported; allowed: {sorted(ACTIVATIONS)}"
            )
        if isinstance(self.encoder_positions, str):
            self.encoder_positions = [self.encoder_positions]
        self.encoder_positions = list(self.encoder_positions)
        bad = [p for p in self.encoder_positions if p not in ENCODER_POSITIONS]
        if bad:
            raise ValueError(
                f"MedSAConfig.encoder_positions has unknown value(s) {bad}; allowed: {list(ENCODER_POSITIONS)}"
            )
        if self.encoder_layers is not None:
            layers = list(self.encoder_layers)
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
                raise ValueError(f"MedSAConfig.encoder_layers must be a list of ints, got {self.encoder_layers!r}")
            if any(i < 0 for i in layers):
                raise ValueError(f"MedSAConfig.encoder_layers must be >= 0, got {self.encoder_layers!r}")
            self.encoder_layers = sorted(set(layers))
        if self.hyper_dim is not None and (
            isinstance(self.hyper_dim, bool) or not isinstance(self.hyper_dim, int) or self.hyper_dim <= 0
        ):
            raise ValueError(
                f"MedSAConfig.hyper_dim must be a positive integer or None, got hyper_dim={self.hyper_dim!r}"
            )
        if isinstance(self.target_modules, (list, tuple, set)):
            self.target_modules = sorted(set(self.target_modules))
        if self.prompt_conditioning not in PROMPT_CONDITIONINGS:
            raise ValueError(
                f"MedSAConfig.prompt_conditioning={self.prompt_conditioning!r} is not supported; allowed: "
                f"{list(PROMPT_CONDITIONINGS)}"
            )
        if not isinstance(self.sd_trans, bool):
            raise ValueError(f"{type(self).__name__}.sd_trans must be True or False, got sd_trans={self.sd_trans!r}")
        if self.sd_fusion not in SD_FUSIONS:
            raise ValueError(
                f"{type(self).__name__}.sd_fusion={self.sd_fusion!r} is not supported; allowed: {list(SD_FUSIONS)}"
            )
        if self.sd_trans and "attn" not in self.encoder_positions and self.target_modules is None:
            raise ValueError(
                f"{type(self).__name__}.sd_trans=True puts the depth branch on the encoder attention: "
                f"encoder_positions must include 'attn', got {self.encoder_positions}"
            )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs):
        """PEFT's loader, after refusing a truncated local weights file before any adapter layer is created."""
        check_weights_file(pretrained_model_name_or_path, subfolder)
        return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
