"""The Med-SA training loop on accelerate: AdamW, LR schedule, accumulation, iterative clicks, validation, resume.

One optimizer step = ``gradient_accumulation_steps`` micro-batches of ``batch_size`` samples per process. Per
micro-batch (paper section 3.5): a random start prompt (clicks, or a jittered box), then 0 to
``max_corrective_clicks`` corrective clicks, each placed in the largest error region of the current prediction (run
without gradients), then the gradient pass with the final prompt and Dice + BCE on the upsampled mask logits.

Data order: epoch ``e`` visits the samples (those with a non-empty mask) in the permutation seeded by
``(seed, e)``; global micro-batch ``m`` takes positions ``[m * B * W, (m + 1) * B * W)`` of it and process ``r`` the
slice ``[r * B, (r + 1) * B)`` of those (``B`` = batch size, ``W`` = processes; a trailing partial batch is
dropped). The prompts of micro-batch ``m`` on process ``r`` come from ``numpy.random.default_rng([seed, m, r])``.
The order is thus a function of the step, and a resumed run sees the same batches and prompts as an uninterrupted
one; torch / numpy / python RNG states are restored from the checkpoint as well.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..evaluation import evaluate_model, sam_predict_fn
from ..prompts import add_corrective_click, collate_prompts
from .checkpoint_integrity import resume_checkpoint
from .checkpoints import (
    check_compatible,
    peft_config_dict,
    read_trainer_state,
    save_checkpoint,
)
from .config import TrainingConfig
from .frozen_prefix import FrozenPrefixCache
from .inputs import model_input_size, prepare_sample, start_prompts
from .logs import MetricsLog
from .losses import dice_bce_loss

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


def _mask_of(sample: Mapping) -> np.ndarray:
    return np.asarray(sample["mask"])


def _valid_indices(data: Sequence[Mapping]) -> list[int]:
    """Indices of the samples whose mask has foreground (a prompt needs one)."""
    masks = data.select_columns(["mask"]) if hasattr(data, "select_columns") else data
    return [i for i in range(len(masks)) if _mask_of(masks[i]).any()]


class MedSATrainer:
    """Trains the Med-SA adapters of a ``PeftModel(SamModel)`` with accelerate (single process, DDP, mixed precision).

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
        self.case_ids_seen: list[list[str]] = []
        """Case ids of each micro-batch this process trained on, in order."""
        self.valid_indices = _valid_indices(train_data)
        if not self.valid_indices:
            raise ValueError("train_data has no sample with a non-empty mask; nothing to train on")

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

    def _build(self):
        from accelerate import Accelerator
        from accelerate.utils import set_seed
        from transformers import get_scheduler

        cfg = self.config
        mixed = resolve_mixed_precision(cfg.mixed_precision, cfg.cpu)
        kwargs = {"cpu": True} if cfg.cpu else {}
        accelerator = Accelerator(
            mixed_precision=mixed, gradient_accumulation_steps=cfg.gradient_accumulation_steps, **kwargs
        )
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1 and accelerator.num_processes != launched:
            raise RuntimeError(
                f"launched as {launched} processes (WORLD_SIZE) but accelerate runs {accelerator.num_processes}: "
                "each would train alone on all the data. On CPU pass cpu=True (--cpu) or set ACCELERATE_USE_CPU=true"
            )
        set_seed(cfg.seed)
        self.model.eval()  # frozen SAM: no dropout to enable, and BatchNorm statistics (TinyViT) must not drift
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the model has no trainable parameters (adapters frozen or inference_mode=True?)")
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        scheduler = get_scheduler(
            cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps, num_training_steps=cfg.max_steps
        )
        model, optimizer = accelerator.prepare(self.model, optimizer)
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
        accelerator.load_state(str(checkpoint), strict=False)
        if accelerator.is_main_process:
            MetricsLog(self.output_dir).truncate_after(int(stored["step"]))
        best = stored.get("best_dice")
        return int(stored["step"]), (-math.inf if best is None else float(best))

    # -- data ------------------------------------------------------------------------------------------------------
    def _micro_batch_indices(self, micro: int, rank: int, world: int) -> list[int]:
        per_global = self.config.batch_size * world
        per_epoch = len(self.valid_indices) // per_global
        if per_epoch == 0:
            raise ValueError(
                f"{len(self.valid_indices)} usable training samples cannot fill one global batch of "
                f"batch_size={self.config.batch_size} x {world} processes"
            )
        epoch, position = divmod(micro, per_epoch)
        if getattr(self, "_epoch", None) != epoch:
            order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.valid_indices))
            self._epoch, self._order = epoch, [self.valid_indices[i] for i in order]
        start = position * per_global + rank * self.config.batch_size
        return self._order[start : start + self.config.batch_size]

    def _inputs(self, indices: list[int], device: torch.device):
        samples = [self.train_data[int(i)] for i in indices]
        prepared = [prepare_sample(s, self.input_size, self.config.normalize) for s in samples]
        pixels = torch.stack([p[0] for p in prepared]).to(device)
        masks = [p[1] for p in prepared]
        sizes = [p[2] for p in prepared]
        case_ids = [str(s.get("case_id", f"index_{i}")) for s, i in zip(samples, indices)]
        return pixels, masks, sizes, case_ids

    def _logits(self, outputs) -> torch.Tensor:
        """``pred_masks`` ``(B, 1, 1, h, w)`` -> ``(B, S, S)`` logits in model input pixels."""
        low = outputs.pred_masks[:, 0, :1].float()
        return F.interpolate(low, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)[:, 0]

    def _embeddings(self, unwrapped, indices: list[int], pixels: torch.Tensor) -> torch.Tensor:
        """Image embeddings of the batch, through the frozen-prefix cache when there is one."""
        if self.prefix_cache is not None:
            return self.prefix_cache.image_embeddings(indices, pixels)
        return unwrapped.get_image_embeddings(pixels)

    @torch.no_grad()
    def _simulate_clicks(self, accelerator, embeddings, unwrapped, masks, sizes, prompts, n_clicks: int):
        """Adds ``n_clicks`` corrective clicks, one per round, in the error region of the current prediction."""
        with accelerator.autocast():
            for _ in range(n_clicks):
                inputs = collate_prompts(prompts, device=embeddings.device)
                preds = (self._logits(unwrapped(image_embeddings=embeddings, **inputs, multimask_output=False)) > 0)
                preds = preds.cpu().numpy()
                prompts = [
                    add_corrective_click(p, pred[:h, :w], gt[:h, :w])
                    for p, pred, gt, (h, w) in zip(prompts, preds, masks, sizes)
                ]
        return prompts

    # -- saving ----------------------------------------------------------------------------------------------------
    def _save_adapter(self, accelerator, name: str, metrics_markdown: str | None, step: int) -> Path:
        """``save_pretrained`` + model card into ``output_dir/name`` via a temporary folder (main process only)."""
        from ..hub.cards import write_model_card

        dest = self.output_dir / name
        tmp, old = self.output_dir / f".tmp-{name}", self.output_dir / f".old-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped = accelerator.unwrap_model(self.model_prepared)
        unwrapped.save_pretrained(str(tmp))
        info = {"training_steps": step, "normalize": self.config.normalize, **self.card_info}
        write_model_card(tmp, peft_model=unwrapped, metrics_markdown=metrics_markdown, **info)
        if dest.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
        return dest

    def _validate(self, accelerator, step: int, log: MetricsLog, best: float) -> float:
        cfg = self.config
        unwrapped = accelerator.unwrap_model(self.model_prepared)
        predict = sam_predict_fn(unwrapped, device=accelerator.device, normalization=cfg.normalize)
        result = evaluate_model(
            predict, self.eval_data, cfg.eval_setting, repeats=cfg.eval_repeats, seed=cfg.seed, show_progress=False
        )
        average = result.summary()[-1] if result.records else {}
        dice = float(average.get("dice_mean", math.nan))
        self.last_val_dice = dice
        log.append({"step": step, "val_dice": dice, "val_iou": float(average.get("iou_mean", math.nan)),
                    "val_hd95": float(average.get("hd95_mean", math.nan)), "val_setting": cfg.eval_setting})
        if math.isfinite(dice) and dice > best:
            self._save_adapter(accelerator, "best", result.to_markdown(), step)
            (self.output_dir / "best" / "val_metrics.json").write_text(json.dumps({"step": step, "dice": dice}))
            return dice
        return best

    # -- the loop --------------------------------------------------------------------------------------------------
    def train(self) -> TrainingResult:
        """Runs (or resumes) the training; see the module docstring.

        Raises:
            FileExistsError: ``output_dir`` is not empty and neither ``resume`` nor ``overwrite`` is set.
            CheckpointMismatchError: ``resume`` from a checkpoint of another config (fields named).
            NonFiniteLossError: The loss became NaN / inf (step and case ids named; no checkpoint written).
        """
        cfg = self.config
        self._check_output_dir()
        accelerator, model, optimizer, scheduler, trainable = self._build()
        self.model_prepared = model
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
        unwrapped = accelerator.unwrap_model(model)
        # The frozen front of the encoder, once per case; DDP / FSDP need the whole forward inside the wrapped model.
        self.prefix_cache = (FrozenPrefixCache.build(unwrapped, cfg.cache_megabytes)
                             if cfg.cache_frozen_encoder and world == 1 else None)
        bar = tqdm(total=cfg.max_steps, initial=step, desc="train Med-SA",
                   disable=not (cfg.show_progress and accelerator.is_main_process))
        while step < cfg.max_steps:
            lr = scheduler.get_last_lr()[0]
            losses = []
            for k in range(accum):
                micro = step * accum + k
                indices = self._micro_batch_indices(micro, rank, world)
                pixels, masks, sizes, case_ids = self._inputs(indices, accelerator.device)
                self.case_ids_seen.append(case_ids)
                rng = np.random.default_rng([cfg.seed, micro, rank])
                prompts = start_prompts(masks, rng, cfg.initial_clicks, cfg.box_probability, cfg.box_iou)
                n_clicks = int(rng.integers(0, cfg.max_corrective_clicks + 1))
                frozen_embeddings = None
                if n_clicks:
                    with torch.no_grad(), accelerator.autocast():
                        frozen_embeddings = self._embeddings(unwrapped, indices, pixels)
                    prompts = self._simulate_clicks(accelerator, frozen_embeddings, unwrapped, masks, sizes, prompts,
                                                    n_clicks)
                target = torch.from_numpy(np.stack(masks)).to(accelerator.device)
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        prompt_inputs = collate_prompts(prompts, accelerator.device)
                        if self.prefix_cache is None:
                            outputs = model(pixel_values=pixels, **prompt_inputs, multimask_output=False)
                        else:
                            cached = self.prefix_cache.caches_embeddings and frozen_embeddings is not None
                            embeddings = frozen_embeddings if cached else self._embeddings(unwrapped, indices, pixels)
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
                    if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
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
            if step == cfg.max_steps and accelerator.is_main_process:  # first: nothing after it can lose the adapter
                self._save_adapter(accelerator, "final", None, step)
            if self.eval_data is not None and ((cfg.eval_every and step % cfg.eval_every == 0)
                                               or step == cfg.max_steps):
                if accelerator.is_main_process:
                    best = self._validate(accelerator, step, log, best)
                accelerator.wait_for_everyone()
            if cfg.save_every and step % cfg.save_every == 0:
                save_checkpoint(accelerator, self.output_dir, step, self._state(accelerator, trainable, best),
                                cfg.keep_checkpoints)
            for callback in self.callbacks:
                callback(self, step)
        bar.close()
        final = self.output_dir / "final"
        if accelerator.is_main_process:
            if not final.is_dir():  # resumed at max_steps: no step ran
                self._save_adapter(accelerator, "final", None, step)
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
