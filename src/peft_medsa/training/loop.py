"""The Med-SA training loop on accelerate: AdamW, LR schedule, accumulation, iterative clicks, validation, resume.

One optimizer step = ``gradient_accumulation_steps`` micro-batches of ``batch_size`` samples per process. Per
micro-batch (paper section 3.5): a random start prompt (clicks, or a jittered box), then 0 to
``max_corrective_clicks`` corrective clicks, each placed in the largest error region of the current prediction (run
without gradients), then the gradient pass with the final prompt and Dice + BCE on the upsampled mask logits.

Data order (:mod:`.sampling`): a function of the step alone, so that a resumed run sees the same batches and prompts
as an uninterrupted one, and ``W`` processes of batch ``B`` those of one process of batch ``B * W``; each process
reads only its own samples, one micro-batch ahead in a background thread (:mod:`.prefetch`). torch / numpy / python
RNG states are restored from the checkpoint as well.

Distributed runs (DDP or FSDP, one or several machines): every collective (gradient reduction, the gathering of a
sharded model's tensors for checkpoints and adapters, the validation forwards of a sharded model) runs on every
process in the same order; only the main process writes files. FSDP is applied with torch's FSDP2 by the trainer
itself (:mod:`.sharding` says why). The processes check at start that they share one configuration
(:mod:`.ranks`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..box_prior import ellipse_prior_logits
from ..evaluation import evaluate_model, sam_predict_fn
from ..model_input import base_sam_model, resolve_normalization
from ..prompts import add_corrective_click, collate_prompts
from .checkpoint_integrity import resume_checkpoint
from .checkpoints import (
    CheckpointMismatchError,
    check_compatible,
    latest_checkpoint,
    peft_config_dict,
    read_trainer_state,
    save_checkpoint,
)
from .config import BOOKKEEPING_FIELDS, TrainingConfig
from .frozen_prefix import FrozenPrefixCache
from .inputs import mirror_sample, model_input_size, prepare_sample, start_prompts
from .logs import MetricsLog
from .losses import dice_bce_loss
from .prefetch import Prefetcher
from .ranks import PeerFailureError, check_same_on_all_ranks, run_fingerprint
from .sampling import DataOrder, mirror_choices, prompt_rngs, usable_indices
from .sharding import fsdp_settings, full_trainable_state, load_sharded_parts, save_sharded_parts, shard_model

Callback = Callable[["MedSATrainer", int], None]
"""``callback(trainer, step)``, called on every process after each optimizer step (and checkpoint)."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step and the case ids of the batch."""


@dataclass
class TrainingResult:
    """What :meth:`MedSATrainer.train` produced.

    Args:
        final_dir: Adapter folder (``save_pretrained`` + README.md model card) after the last step.
        best_dir: Adapter folder of the best validation Dice, or ``None`` without validation data.
        best_dice: That Dice (mean over classes), or NaN.
        steps: Optimizer steps done in total.
        metrics: The rows of ``metrics.jsonl``.
    """

    final_dir: Path
    best_dir: Path | None
    best_dice: float
    steps: int
    metrics: list[dict[str, Any]] = field(default_factory=list)


def resolve_mixed_precision(requested: str, cpu: bool) -> str:
    """``"auto"`` -> ``"bf16"`` on a CUDA device that supports it, else ``"no"``; other values unchanged."""
    if requested != "auto":
        return requested
    cuda = not cpu and torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() != "true"
    return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"


def _launched_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_peer_failure(error: BaseException) -> bool:
    """Whether an exception comes from a failed collective (a dead or unreachable peer, a timeout)."""
    import torch.distributed as dist

    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(
        k in text for k in ("gloo", "connection closed", "connection reset", "timed out", "broken pipe", "nccl")
    )


class MedSATrainer:
    """Trains the Med-SA adapters of a ``PeftModel(SamModel)`` with accelerate (one process, DDP, FSDP2, bf16).

    Args:
        model: The PEFT model; only its trainable parameters (adapters, ``modules_to_save``) are optimised.
        train_data: 2D samples (``image`` ``(H, W, 3)`` uint8, ``mask`` ``(H, W)`` 0/1, ``case_id``): a sequence of
            dicts or a ``datasets.Dataset``. Samples with an empty mask are skipped.
        config: The :class:`TrainingConfig`.
        eval_data: Validation samples for :func:`peft_medsa.evaluation.evaluate_model`; ``None``: no validation.
        card_info: Keyword arguments of :func:`peft_medsa.hub.cards.render_model_card` (task, datasets, ...) for the
            README.md written into every saved adapter folder.
        callbacks: ``callback(trainer, step)`` after each optimizer step.

    Example:
        >>> config = TrainingConfig(output_dir="run", max_steps=100)
        >>> trainer = MedSATrainer(peft_model, samples, config)  # doctest: +SKIP
        >>> result = trainer.train()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_data: Sequence[Mapping],
        config: TrainingConfig,
        eval_data: Sequence[Mapping] | None = None,
        card_info: Mapping[str, Any] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if not hasattr(model, "peft_config"):
            raise TypeError(f"MedSATrainer needs a PeftModel with Med-SA adapters, got {type(model).__name__}")
        self.model = model
        self.train_data = train_data
        self.eval_data = eval_data
        self.config = config
        self.card_info = dict(card_info or {})
        self.callbacks = list(callbacks)
        self.output_dir = Path(config.output_dir)
        self.input_size = model_input_size(model)
        prompt_config = getattr(base_sam_model(model).config, "prompt_encoder_config", None)
        embedding = getattr(prompt_config, "image_embedding_size", None)
        self.low_res_size = 4 * int(embedding) if embedding else None
        """Side of SAM's low-resolution masks (the box prior's grid); ``None`` for a model that does not say."""
        self.normalization = resolve_normalization(model, config.normalization)
        """``config.normalization`` with ``"auto"`` resolved from the model."""
        self.case_ids_seen: list[list[str]] = []
        """Case ids of each micro-batch this process trained on, in order."""
        self.valid_indices: list[int] | None = None
        """Usable sample indices; in a distributed run found by all processes together at the start of train()."""
        if _launched_world_size() == 1:
            self.valid_indices = usable_indices(train_data)
        self.sharded = False
        """Whether the model is sharded with FSDP2 (set by train())."""
        self.one_encoder_forward = True
        """In a single-process run, each micro-batch runs the image encoder once, with gradients, and its corrective
        clicks are simulated on those embeddings (detached): the same numbers, up to float rounding, as a separate
        gradient-free encoder forward for the clicks (tested), without its cost (``benchmarks/bench_train_step.py``:
        a fifth of a Med-SA step, an eighth of a full fine-tuning step, on LiteMedSAM). ``False`` restores the
        separate forward, the reference path; distributed runs always take it (DDP and FSDP need the whole forward
        inside the wrapped model)."""

    # -- set-up ----------------------------------------------------------------------------------------------------
    def _check_output_dir(self) -> None:
        out, cfg = self.output_dir, self.config
        if out.exists() and not out.is_dir():
            raise NotADirectoryError(f"output_dir {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()) and not (cfg.resume or cfg.overwrite):
            raise FileExistsError(
                f"output_dir {out} exists and is not empty; pass resume=True (--resume) to continue its run or "
                "overwrite=True (--overwrite) to replace it"
            )
        if cfg.resume:
            resume_checkpoint(out)  # before anything is created: no checkpoint -> refused, naming the folder

    def _recording_configs(self, name: str, asked: bool) -> list:
        """The adapter configs that record field ``name`` (Med-SA's); an explicit value (``asked``) for a model that
        has none is refused, since nothing would carry it to the predictor."""
        configs = [c for c in self.model.peft_config.values() if hasattr(c, name)]
        if asked and not configs:
            kinds = sorted({type(c).__name__ for c in self.model.peft_config.values()})
            raise ValueError(f"TrainingConfig.{name}={getattr(self.config, name)!r} is recorded in a Med-SA adapter's "
                             f"config, but this model's adapters are {kinds}; leave {name} at its default")
        return configs

    def _record_mask_shape(self) -> str | None:
        """Sets ``mask_shape`` of the model's Med-SA adapters from ``config.mask_shape`` (``"auto"``: from the first
        usable training masks, :func:`peft_medsa.mask_shape.mask_shape_of_data`, the same on every process); returns
        it. Needs :attr:`valid_indices`."""
        from ..mask_shape import mask_shape_of_data

        choice = self.config.mask_shape
        configs = self._recording_configs("mask_shape", asked=choice not in ("auto", None))
        if not configs:
            return None
        if choice == "auto":
            choice = mask_shape_of_data(self.train_data, indices=self.valid_indices)
        for config in configs:
            config.mask_shape = choice
        return choice

    def _record_box_prior(self) -> str | None:
        """Sets ``box_prior`` of the model's Med-SA adapters from ``config.box_prior`` and returns it."""
        choice = self.config.box_prior
        configs = self._recording_configs("box_prior", asked=choice is not None)
        if choice is not None and self.low_res_size is None:
            raise ValueError(f"TrainingConfig.box_prior={choice!r} needs the model's prompt_encoder_config."
                             "image_embedding_size (the mask prompt's grid), which this model's config lacks")
        for config in configs:
            config.box_prior = choice
        return choice

    def _prompt_inputs(self, prompts: list, device) -> dict[str, torch.Tensor]:
        """``collate_prompts`` of a micro-batch, with the box prior's mask prompt (``input_masks`` ``(B, 1, s, s)``)
        when the prompts have boxes and ``config.box_prior`` is set."""
        inputs = collate_prompts(prompts, device=device)
        if self.config.box_prior is not None and "input_boxes" in inputs:
            inputs["input_masks"] = ellipse_prior_logits(inputs["input_boxes"], self.low_res_size, self.input_size)
        return inputs

    def _build(self):
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs, set_seed
        from transformers import get_scheduler

        cfg = self.config
        mixed = resolve_mixed_precision(cfg.mixed_precision, cfg.cpu)
        kwargs = {"cpu": True} if cfg.cpu else {}
        timeout = InitProcessGroupKwargs(timeout=timedelta(seconds=cfg.collective_timeout))
        accelerator = Accelerator(
            mixed_precision=mixed, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            kwargs_handlers=[timeout], **kwargs
        )
        launched = _launched_world_size()
        if launched > 1 and accelerator.num_processes != launched:
            raise RuntimeError(
                f"launched as {launched} processes (WORLD_SIZE) but accelerate runs {accelerator.num_processes}: "
                "each would train alone on all the data. On CPU pass cpu=True (--cpu) or set ACCELERATE_USE_CPU=true"
            )
        set_seed(cfg.seed)
        self.model.eval()  # frozen SAM: no dropout to enable, and BatchNorm statistics (TinyViT) must not drift
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(eval_mode=True)
        shapes = {n: list(p.shape) for n, p in self.model.named_parameters() if p.requires_grad}
        if self.valid_indices is None:
            self.valid_indices = usable_indices(self.train_data, accelerator.process_index, accelerator.num_processes)
        self.mask_shape = self._record_mask_shape()
        self.box_prior = self._record_box_prior()
        fsdp = fsdp_settings(accelerator)
        fingerprint = run_fingerprint(
            {k: v for k, v in cfg.to_dict().items() if k not in BOOKKEEPING_FIELDS},
            {n: peft_config_dict(c) for n, c in self.model.peft_config.items()}, shapes, len(self.train_data),
        )
        check_same_on_all_ranks({**fingerprint, "fsdp": repr(fsdp)}, accelerator.num_processes)
        if not shapes:
            raise ValueError("the model has no trainable parameters (adapters frozen or inference_mode=True?)")
        self.sharded = fsdp is not None
        if self.sharded:  # FSDP2 by hand (accelerate does not shard on CPU); the optimizer sees the DTensor shards
            model = shard_model(self.model, accelerator.device, fsdp)
        else:
            model = self.model
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scheduler = get_scheduler(
            cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps
        )
        if not self.sharded:
            model, optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(scheduler)  # stepped by us once per optimizer step
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}

        def keep_trainable(models, weights, output_dir):  # adapter-only checkpoints, not the frozen SAM
            for i, state in enumerate(weights):
                weights[i] = {k: v for k, v in state.items() if k in trainable}

        accelerator.register_save_state_pre_hook(keep_trainable)
        return accelerator, model, optimizer, scheduler, sorted(trainable)

    def _state(self, accelerator, trainable: list[str], best_dice: float) -> dict[str, Any]:
        return {
            "training_config": self.config.to_dict(),
            "peft_config": {n: peft_config_dict(c) for n, c in self.model.peft_config.items()},
            "world_size": accelerator.num_processes,
            "sharding": "fsdp2" if self.sharded else "none",
            "trainable_keys": trainable,
            "best_dice": best_dice,
        }

    def _resume(self, accelerator, trainable: list[str]) -> tuple[int, float]:
        checkpoint = resume_checkpoint(self.output_dir)  # refuses a missing or incomplete checkpoint
        stored = read_trainer_state(checkpoint)
        current = {n: peft_config_dict(c) for n, c in self.model.peft_config.items()}
        diffs = self.config.differences(stored.get("training_config", {}))
        check_compatible(checkpoint, {"peft_config": stored.get("peft_config", {}), "world_size":
                                      stored.get("world_size")}, current, diffs, accelerator.num_processes)
        if stored.get("trainable_keys") != trainable:
            raise ValueError(f"cannot resume from {checkpoint}: its trainable tensors differ from this model's")
        sharding = "fsdp2" if self.sharded else "none"
        if stored.get("sharding", "none") != sharding:
            raise CheckpointMismatchError(
                f"cannot resume from {checkpoint}: it was written with sharding {stored.get('sharding', 'none')!r}, "
                f"this run uses {sharding!r} (launch it the same way: FSDP or not)"
            )
        accelerator.load_state(str(checkpoint), strict=False)
        if self.sharded:
            load_sharded_parts(checkpoint, self.model_prepared, self.optimizer, trainable)
        if accelerator.is_main_process:
            MetricsLog(self.output_dir).truncate_after(int(stored["step"]))
        best = stored.get("best_dice")
        return int(stored["step"]), (-math.inf if best is None else float(best))

    # -- data ------------------------------------------------------------------------------------------------------
    def _load_micro_batch(self, order: DataOrder, micro: int, rank: int):
        """Reads and prepares this process's samples of micro-batch ``micro`` (runs in the prefetch thread)."""
        indices, slots = order.micro_batch(micro, rank)
        samples = [self.train_data[int(i)] for i in indices]
        case_ids = [str(s.get("case_id", f"index_{i}")) for s, i in zip(samples, indices)]
        flips = mirror_choices(self.config.seed, micro, slots, self.config.hflip_probability)
        samples = [mirror_sample(s) if flip else s for s, flip in zip(samples, flips)]
        prepared = [prepare_sample(s, self.input_size, self.normalization) for s in samples]
        pixels = torch.stack([p[0] for p in prepared])
        masks = [p[1] for p in prepared]
        sizes = [p[2] for p in prepared]
        keys = [(int(i), "mirrored") if flip else int(i) for i, flip in zip(indices, flips)]  # frozen-prefix cache
        return keys, pixels, masks, sizes, case_ids, slots

    def _logits(self, outputs) -> torch.Tensor:
        """``pred_masks`` ``(B, 1, 1, h, w)`` -> ``(B, S, S)`` logits in model input pixels."""
        low = outputs.pred_masks[:, 0, :1].float()
        return F.interpolate(low, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)[:, 0]

    def _embeddings(self, unwrapped, keys: list, pixels: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``(B, C, h, w)`` of the batch, through the frozen-prefix cache (one entry per case and
        mirroring) when there is one; gradients reach the trainable encoder parameters when grad mode is on."""
        if self.prefix_cache is not None:
            return self.prefix_cache.image_embeddings(keys, pixels)
        encoder = base_sam_model(unwrapped).vision_encoder
        return encoder(pixel_values=pixels).last_hidden_state  # get_image_embeddings is gradient-free

    @torch.no_grad()
    def _simulate_clicks(self, accelerator, embeddings, unwrapped, masks, sizes, prompts, n_clicks: int):
        """Adds ``n_clicks`` corrective clicks, one per round, in the error region of the current prediction."""
        with accelerator.autocast():
            for _ in range(n_clicks):
                inputs = self._prompt_inputs(prompts, embeddings.device)
                preds = (self._logits(unwrapped(image_embeddings=embeddings, **inputs, multimask_output=False)) > 0)
                preds = preds.cpu().numpy()
                prompts = [
                    add_corrective_click(p, pred[:h, :w], gt[:h, :w])
                    for p, pred, gt, (h, w) in zip(prompts, preds, masks, sizes)
                ]
        return prompts

    def _reference_inputs(self, accelerator, unwrapped, keys, pixels, masks, sizes, prompts, n_clicks: int):
        """``(embeddings, prompts)`` of a micro-batch by the reference path: a separate gradient-free encoder forward
        for the corrective clicks, then the training forward's own; ``embeddings`` is ``None`` when the whole model
        must run on ``pixel_values`` (no frozen-prefix cache)."""
        frozen = None
        if n_clicks:
            with torch.no_grad(), accelerator.autocast():
                frozen = self._embeddings(unwrapped, keys, pixels)
            prompts = self._simulate_clicks(accelerator, frozen, unwrapped, masks, sizes, prompts, n_clicks)
        if self.prefix_cache is None:
            return None, prompts
        if self.prefix_cache.caches_embeddings and frozen is not None:
            return frozen, prompts
        with accelerator.autocast():
            return self._embeddings(unwrapped, keys, pixels), prompts

    # -- saving ----------------------------------------------------------------------------------------------------
    def _save_adapter(self, accelerator, name: str, metrics_markdown: str | None, step: int) -> Path:
        """``save_pretrained`` + model card into ``output_dir/name`` via a temporary folder.

        Every process must call it (a sharded model's tensors are gathered first); only the main one writes.
        """
        from ..hub.cards import write_model_card

        dest = self.output_dir / name
        unwrapped = accelerator.unwrap_model(self.model_prepared)
        state = full_trainable_state(unwrapped, accelerator.is_main_process) if self.sharded else None
        if not accelerator.is_main_process:
            return dest
        tmp, old = self.output_dir / f".tmp-{name}", self.output_dir / f".old-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped.save_pretrained(str(tmp), **({"state_dict": state} if state is not None else {}))
        info = {"training_steps": step, "normalization": self.normalization, **self.card_info}
        write_model_card(tmp, peft_model=unwrapped, metrics_markdown=metrics_markdown, **info)
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
        return dest

    def _validate(self, accelerator, step: int, log: MetricsLog, best: float) -> float:
        """Validation on the main process; on every process when the model is sharded (its forwards are collectives:
        each process runs the same prompts on the same data, and only the main one writes)."""
        cfg = self.config
        unwrapped = accelerator.unwrap_model(self.model_prepared)
        predict = sam_predict_fn(unwrapped, device=accelerator.device, normalization=self.normalization)
        result = evaluate_model(
            predict, self.eval_data, cfg.eval_setting, repeats=cfg.eval_repeats, seed=cfg.seed, show_progress=False
        )
        average = result.summary()[-1] if result.records else {}
        dice = float(average.get("dice_mean", math.nan))
        self.last_val_dice = dice
        if accelerator.is_main_process:
            log.append({"step": step, "val_dice": dice, "val_iou": float(average.get("iou_mean", math.nan)),
                        "val_hd95": float(average.get("hd95_mean", math.nan)), "val_setting": cfg.eval_setting})
        if math.isfinite(dice) and dice > best:
            self._save_adapter(accelerator, "best", result.to_markdown(), step)
            if accelerator.is_main_process:
                (self.output_dir / "best" / "val_metrics.json").write_text(json.dumps({"step": step, "dice": dice}))
            return dice
        return best

    def _optimizer_step(self, accelerator, model, optimizer) -> None:
        """Clip and step at the last micro-batch of an optimizer step (accelerate's optimizer wrapper does the
        skipping itself; a sharded model's plain optimizer is stepped here only when gradients are synced)."""
        cfg = self.config
        if not self.sharded:
            if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
            return
        if accelerator.sync_gradients:
            if cfg.max_grad_norm > 0:  # DTensor gradients: the norm is global across the shards
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()

    # -- the loop --------------------------------------------------------------------------------------------------
    def train(self) -> TrainingResult:
        """Runs (or resumes) the training; see the module docstring.

        Raises:
            FileExistsError: ``output_dir`` is not empty and neither ``resume`` nor ``overwrite`` is set.
            CheckpointMismatchError: ``resume`` from a checkpoint of another config (fields named).
            NonFiniteLossError: The loss became NaN / inf (step and case ids named; no checkpoint written).
        """
        self._check_output_dir()
        accelerator, model, optimizer, scheduler, trainable = self._build()
        self.model_prepared, self.optimizer = model, optimizer
        try:
            return self._train(accelerator, model, optimizer, scheduler, trainable)
        except Exception as error:
            if accelerator.num_processes > 1 and _is_peer_failure(error):
                latest = latest_checkpoint(self.output_dir)
                raise PeerFailureError(
                    f"process {accelerator.process_index} of {accelerator.num_processes}: a collective operation "
                    f"failed ({type(error).__name__}: {str(error)[:300]}); another process of the run most likely "
                    f"died, hung or was stopped. Last complete checkpoint: {latest or 'none'}; restart all processes "
                    "with resume=True (--resume) to continue from it"
                ) from error
            raise

    def _train(self, accelerator, model, optimizer, scheduler, trainable: list[str]) -> TrainingResult:
        cfg = self.config
        accelerator.wait_for_everyone()  # every process checked output_dir before the main one changes it
        if accelerator.is_main_process:
            if cfg.overwrite and self.output_dir.exists():
                shutil.rmtree(self.output_dir)
            self.output_dir.mkdir(parents=True, exist_ok=True)
        accelerator.wait_for_everyone()
        step, best = self._resume(accelerator, trainable) if cfg.resume else (0, -math.inf)
        if accelerator.is_main_process and step == 0:
            cfg.to_json_file(self.output_dir / "training_config.json")
        log = MetricsLog(self.output_dir)
        rank, world, accum = accelerator.process_index, accelerator.num_processes, cfg.gradient_accumulation_steps
        order = DataOrder(self.valid_indices, cfg.batch_size, world, cfg.seed)
        unwrapped = accelerator.unwrap_model(model)
        # The frozen front of the encoder, once per case; DDP / FSDP need the whole forward inside the wrapped model.
        self.prefix_cache = (FrozenPrefixCache.build(unwrapped, cfg.cache_megabytes)
                             if cfg.cache_frozen_encoder and world == 1 else None)
        final_saved = False
        write_parts = (lambda folder: save_sharded_parts(folder, model, optimizer, accelerator.is_main_process)) \
            if self.sharded else None
        bar = tqdm(total=cfg.max_steps, initial=step, desc="train Med-SA",
                   disable=not (cfg.show_progress and accelerator.is_main_process))
        loader = Prefetcher(lambda m: self._load_micro_batch(order, m, rank), step * accum, cfg.max_steps * accum,
                            depth=cfg.prefetch)
        with loader:
            batches = iter(loader)
            while step < cfg.max_steps:
                lr = scheduler.get_last_lr()[0]
                losses = []
                for k in range(accum):
                    micro = step * accum + k
                    keys, pixels, masks, sizes, case_ids, slots = next(batches)
                    pixels = pixels.to(accelerator.device)
                    self.case_ids_seen.append(case_ids)
                    rng, sample_rngs = prompt_rngs(cfg.seed, micro, slots)
                    prompts = start_prompts(masks, rng, cfg.initial_clicks, cfg.box_probability, cfg.box_iou,
                                            sample_rngs=sample_rngs, box_iou_max=cfg.box_iou_max)
                    n_clicks = int(rng.integers(0, cfg.max_corrective_clicks + 1))
                    target = torch.from_numpy(np.stack(masks)).to(accelerator.device)
                    with accelerator.accumulate(model):
                        if self.one_encoder_forward and world == 1:
                            with accelerator.autocast():
                                embeddings = self._embeddings(unwrapped, keys, pixels)
                            if n_clicks:
                                prompts = self._simulate_clicks(accelerator, embeddings.detach(), unwrapped, masks,
                                                                sizes, prompts, n_clicks)
                        else:
                            embeddings, prompts = self._reference_inputs(accelerator, unwrapped, keys, pixels, masks,
                                                                         sizes, prompts, n_clicks)
                        with accelerator.autocast():
                            prompt_inputs = self._prompt_inputs(prompts, accelerator.device)
                            if embeddings is None:
                                outputs = model(pixel_values=pixels, **prompt_inputs, multimask_output=False)
                            else:
                                outputs = model(image_embeddings=embeddings, **prompt_inputs, multimask_output=False)
                        loss = dice_bce_loss(self._logits(outputs), target)
                        everywhere = accelerator.gather(loss.detach().reshape(1))
                        if not torch.isfinite(everywhere).all():
                            raise NonFiniteLossError(
                                f"non-finite training loss (per process: {everywhere.tolist()}) at step {step + 1} "
                                f"(micro-batch {k + 1} of {accum}); case ids of this process's batch: {case_ids}. "
                                "No checkpoint was written for this step; the last good one is left unchanged."
                            )
                        losses.append(float(everywhere.mean()))
                        accelerator.backward(loss)
                        self._optimizer_step(accelerator, model, optimizer)
                scheduler.step()
                step += 1
                bar.update(1)
                postfix = {"loss": f"{np.mean(losses):.4f}", "lr": f"{lr:.2e}"}
                if getattr(self, "last_val_dice", None) is not None:
                    postfix[f"val_dice_{cfg.eval_setting}"] = f"{self.last_val_dice:.3f}"
                bar.set_postfix(postfix)
                if accelerator.is_main_process and step % cfg.log_every == 0:
                    log.append({"step": step, "loss": float(np.mean(losses)), "lr": lr,
                                "epoch": step * accum * cfg.batch_size * world / len(self.valid_indices)})
                if step == cfg.max_steps:  # first: nothing after it can lose the adapter (all ranks: may gather)
                    self._save_adapter(accelerator, "final", None, step)
                    final_saved = True
                if self.eval_data is not None and ((cfg.eval_every and step % cfg.eval_every == 0)
                                                   or step == cfg.max_steps):
                    if self.sharded or accelerator.is_main_process:
                        best = self._validate(accelerator, step, log, best)
                    accelerator.wait_for_everyone()
                if cfg.save_every and step % cfg.save_every == 0:
                    save_checkpoint(accelerator, self.output_dir, step, self._state(accelerator, trainable, best),
                                    cfg.keep_checkpoints, write_parts=write_parts)
                for callback in self.callbacks:
                    callback(self, step)
        bar.close()
        final = self.output_dir / "final"
        if not final_saved:  # resumed at max_steps: no step ran
            self._save_adapter(accelerator, "final", None, step)
        if accelerator.is_main_process:
            log.write_csv()
            log.plot()
        accelerator.wait_for_everyone()
        best_dir = self.output_dir / "best"
        return TrainingResult(
            final_dir=final,
            best_dir=best_dir if best_dir.is_dir() else None,
            best_dice=best if math.isfinite(best) else math.nan,
            steps=step,
            metrics=log.rows(),
        )


def train(
    model: torch.nn.Module,
    train_data: Sequence[Mapping],
    config: TrainingConfig | None = None,
    eval_data: Sequence[Mapping] | None = None,
    card_info: Mapping[str, Any] | None = None,
    **config_kwargs: Any,
) -> TrainingResult:
    """Functional entry point: ``MedSATrainer(model, train_data, config or TrainingConfig(**kwargs)).train()``."""
    if config is not None and config_kwargs:
        raise ValueError(f"pass either config or keyword options, not both (got {sorted(config_kwargs)})")
    config = config or TrainingConfig(**config_kwargs)
    return MedSATrainer(model, train_data, config, eval_data=eval_data, card_info=card_info).train()


__all__ = ["MedSATrainer", "NonFiniteLossError", "TrainingResult", "resolve_mixed_precision", "train"]
