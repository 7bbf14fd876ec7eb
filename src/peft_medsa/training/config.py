"""TrainingConfig: every option of a Med-SA training run, stored with each checkpoint to refuse foreign resumes."""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..box_prior import check_box_prior
from .config_checks import check_training_config

NORMALIZATIONS = ("auto", "imagenet", "minmax")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
BOOKKEEPING_FIELDS = ("output_dir", "resume", "overwrite", "show_progress", "cache_frozen_encoder", "cache_megabytes",
                      "prefetch", "collective_timeout", "mask_shape")
"""Fields that may differ between a run and its resume (they change no number of the training)."""

NEW_FIELDS = ("hflip_probability", "box_prior")
"""Fields added after the first release: a stored config without them was written with their default."""

MASK_SHAPE_CHOICES = ("auto", None, "ellipse")
"""``TrainingConfig.mask_shape``: from the training masks, none, or ellipses (:mod:`peft_medsa.mask_shape`)."""


@dataclass
class TrainingConfig:
    """Options of :class:`peft_medsa.training.MedSATrainer`.

    Args:
        output_dir: Folder of the run: ``checkpoints/``, ``best/`` and ``final/`` adapters, ``metrics.jsonl``,
            ``metrics.csv``, ``training_curve.png``.
        max_steps: Number of optimizer steps (each of ``gradient_accumulation_steps`` micro-batches).
        batch_size: Images per micro-batch and process.
        gradient_accumulation_steps: Micro-batches per optimizer step.
        learning_rate: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        lr_scheduler: ``"linear"``, ``"cosine"``, ``"constant"`` or ``"constant_with_warmup"`` (transformers'
            ``get_scheduler``), stepped once per optimizer step.
        warmup_steps: Linear warm-up steps of the schedule.
        max_grad_norm: Gradient clipping norm; ``0`` disables clipping.
        mixed_precision: ``"auto"`` (bf16 on a CUDA device that supports it, else ``"no"``), ``"no"``, ``"bf16"``
            or ``"fp16"``.
        normalization: ``"auto"`` (from the model: ``"minmax"`` for LiteMedSAM, ``"imagenet"`` for ViT SAM),
            ``"imagenet"`` (mean/std on [0, 1] pixels) or ``"minmax"`` (MedSAM / LiteMedSAM); the same name and
            choices as the predictors' (:mod:`peft_medsa.model_input`).
        normalize: Deprecated spelling of ``normalization`` (accepted with a ``FutureWarning``).
        initial_clicks: The first prompt of a sample has between 1 and ``initial_clicks`` random positive clicks.
        max_corrective_clicks: Then 0 to ``max_corrective_clicks`` clicks (drawn per micro-batch) are added one by
            one in the largest error region of the current prediction (paper section 3.5).
        box_probability: Probability that a micro-batch starts from a jittered box (IoU ``box_iou``) instead of
            clicks (useful for box-trained models such as LiteMedSAM).
        box_iou: IoU of the jittered training boxes with the tight box.
        box_iou_max: With a value, each box micro-batch draws its IoU uniformly from ``[box_iou, box_iou_max]``
            (1.0 includes the tight box); ``None``: always ``box_iou``.
        hflip_probability: Probability that a training sample is mirrored left-right (image and mask together, before
            the prompts are drawn on it), drawn per sample from the seed, micro-batch and slot; ``0``: never.
        eval_every: Validate every this many steps (and at the end); ``0``: only at the end.
        eval_setting: Prompt setting of the validation (:func:`peft_medsa.evaluation.evaluate_model`).
        eval_repeats: Repeats of the validation prompts.
        save_every: ``accelerator.save_state`` every this many steps; ``0``: never.
        keep_checkpoints: How many of the newest step checkpoints to keep (at least 1).
        log_every: Write a training row to the metrics log every this many steps.
        cache_frozen_encoder: Compute the frozen front of the image encoder (everything before the first block with
            trainable parameters; the whole encoder when only the decoder trains) once per training case and reuse it
            (:class:`peft_medsa.training.frozen_prefix.FrozenPrefixCache`); same numbers, cheaper steps. Single
            process only (ignored under DDP / FSDP).
        cache_megabytes: Memory budget of that cache; cases beyond it are recomputed at each step.
        seed: Seed of the data order, the prompts and torch / numpy / python RNGs.
        gradient_checkpointing: Recompute the frozen image encoder's activations during backward instead of
            keeping them (``model.gradient_checkpointing_enable(eval_mode=True)``): less memory, about one more
            encoder forward per step. Adapter gradients are unchanged.
        cpu: Force CPU even where CUDA is available.
        prefetch: Micro-batches read and prepared ahead in a background thread; ``0``: read in the training thread.
        collective_timeout: Seconds a distributed collective may wait for the other processes before failing.
        resume: Continue from the latest checkpoint of ``output_dir`` (which must be a run of the same config).
        overwrite: Delete an existing ``output_dir`` first.
        show_progress: tqdm progress bar on the main process.
        mask_shape: The annotation shape recorded in the adapter (``MedSAConfig.mask_shape``; the predictor returns
            masks of that shape): ``"auto"`` decides from the training masks before the first step (``"ellipse"``
            when the median Dice of the first 32 non-empty masks with their fitted ellipses is at least 0.98, as
            ORIGA's drawn disc and cup ellipses; :func:`peft_medsa.mask_shape.infer_mask_shape`), ``None`` keeps
            the masks as predicted, ``"ellipse"`` fits ellipses whatever the data. Training itself is the same.
        box_prior: ``None``, or ``"ellipse"``: every box prompt (training batches started from a box, their
            corrective rounds, validation) comes with the ellipse inscribed in the box as SAM's mask prompt, and the
            Med-SA adapters record it (``MedSAConfig.box_prior``) so that the predictor does the same
            (:mod:`peft_medsa.box_prior`).
    """

    output_dir: str = field(default="medsa-run", metadata={"help": "Folder of the run."})
    max_steps: int = field(default=100, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=2, metadata={"help": "Images per micro-batch and process."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler: str = field(default="cosine", metadata={"help": f"One of {SCHEDULERS}."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm; 0 disables."})
    mixed_precision: str = field(default="auto", metadata={"help": f"One of {MIXED_PRECISION}."})
    normalization: str = field(default="auto", metadata={"help": f"One of {NORMALIZATIONS}."})
    initial_clicks: int = field(default=1, metadata={"help": "Up to this many random positive start clicks."})
    max_corrective_clicks: int = field(default=3, metadata={"help": "Up to this many error-region clicks."})
    box_probability: float = field(default=0.0, metadata={"help": "Probability of a box start prompt."})
    box_iou: float = field(default=0.75, metadata={"help": "IoU of jittered training boxes with the tight box."})
    box_iou_max: float | None = field(default=None, metadata={"help": "Upper end of a uniform box IoU range."})
    hflip_probability: float = field(default=0.0, metadata={"help": "Probability of a left-right mirrored sample."})
    eval_every: int = field(default=0, metadata={"help": "Validate every N steps; 0: at the end only."})
    eval_setting: str = field(default="1pt", metadata={"help": "Validation prompt setting."})
    eval_repeats: int = field(default=1, metadata={"help": "Validation prompt repeats."})
    save_every: int = field(default=0, metadata={"help": "Checkpoint every N steps; 0: never."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Newest step checkpoints kept."})
    log_every: int = field(default=1, metadata={"help": "Metrics-log row every N steps."})
    cache_frozen_encoder: bool = field(default=True, metadata={"help": "Cache the frozen front of the encoder."})
    cache_megabytes: float = field(default=2048.0, metadata={"help": "Memory budget of the frozen-prefix cache."})
    seed: int = field(default=0, metadata={"help": "Seed of data order, prompts and RNGs."})
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Recompute the frozen image encoder's activations in backward."}
    )
    cpu: bool = field(default=False, metadata={"help": "Force CPU."})
    prefetch: int = field(default=2, metadata={"help": "Micro-batches loaded ahead in a thread; 0: none."})
    collective_timeout: int = field(default=600, metadata={"help": "Seconds before a stuck collective fails."})
    resume: bool = field(default=False, metadata={"help": "Continue from the latest checkpoint."})
    overwrite: bool = field(default=False, metadata={"help": "Delete an existing output_dir first."})
    show_progress: bool = field(default=True, metadata={"help": "tqdm progress bar."})
    normalize: str | None = field(default=None, metadata={"help": "Deprecated: use normalization."})
    mask_shape: str | None = field(
        default="auto", metadata={"help": "Adapter's mask shape: 'auto' (from the training masks), None, 'ellipse'."}
    )
    box_prior: str | None = field(
        default=None, metadata={"help": "Mask prompt with every box: None or 'ellipse' (the box's inscribed ellipse)."}
    )

    def __post_init__(self) -> None:
        if self.normalize is not None:
            warnings.warn("TrainingConfig(normalize=...) is deprecated; use normalization=... (the predictors' name)",
                          FutureWarning, stacklevel=3)
            self.normalization, self.normalize = self.normalize, None
        positive = ("max_steps", "batch_size", "gradient_accumulation_steps", "initial_clicks", "keep_checkpoints",
                    "log_every", "eval_repeats", "collective_timeout")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainingConfig.{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "max_corrective_clicks", "eval_every", "save_every", "seed", "prefetch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainingConfig.{name} must be an integer >= 0, got {value!r}")
        choices = {"normalization": NORMALIZATIONS, "mixed_precision": MIXED_PRECISION, "lr_scheduler": SCHEDULERS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainingConfig.{name}={getattr(self, name)!r}; expected one of {allowed}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainingConfig.learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0.0 <= self.box_probability <= 1.0:
            raise ValueError(f"TrainingConfig.box_probability must be in [0, 1], got {self.box_probability!r}")
        if isinstance(self.hflip_probability, bool) or not 0.0 <= self.hflip_probability <= 1.0:
            raise ValueError(f"TrainingConfig.hflip_probability must be in [0, 1], got {self.hflip_probability!r}")
        if not 0.0 < self.box_iou <= 1.0:
            raise ValueError(f"TrainingConfig.box_iou must be in (0, 1], got {self.box_iou!r}")
        maximum = self.box_iou_max
        if maximum is not None and not (isinstance(maximum, (int, float)) and self.box_iou <= maximum <= 1.0):
            raise ValueError(
                f"TrainingConfig.box_iou_max must be None or in [box_iou={self.box_iou}, 1], got {maximum!r}"
            )
        if self.mask_shape not in MASK_SHAPE_CHOICES:
            raise ValueError(f"TrainingConfig.mask_shape={self.mask_shape!r}; expected one of {MASK_SHAPE_CHOICES}")
        check_box_prior(self.box_prior, "TrainingConfig.box_prior")
        if self.resume and self.overwrite:
            raise ValueError("TrainingConfig: resume=True and overwrite=True contradict each other; choose one")
        check_training_config(self)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    def to_json_file(self, path: str | Path) -> None:
        """Writes :meth:`to_dict` as indented JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    def differences(self, other: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """``{field: (stored, this)}`` of fields that differ from a stored config dict, bookkeeping fields aside."""
        mine = self.to_dict()
        if "normalize" in other and "normalization" not in other:  # written before the field was renamed
            other = {**other, "normalization": other["normalize"], "normalize": None}
        # a field added after the stored run was written had its default there (the option did not exist yet)
        added = {f.name: f.default for f in dataclasses.fields(self) if f.name not in other and f.name in NEW_FIELDS}
        other = {**added, **other}
        keys = (set(mine) | set(other)) - set(BOOKKEEPING_FIELDS)
        return {k: (other.get(k), mine.get(k)) for k in sorted(keys) if other.get(k) != mine.get(k)}
