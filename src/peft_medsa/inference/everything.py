""" "Segment everything" (the paper's automatic setting, section 4.2): a grid of clicks, filtering, box NMS.

As SAM's automatic mask generator, on one crop (the whole image):

1. an ``n x n`` grid of positive clicks (:func:`peft_medsa.prompts.grid_points`) is decoded in batches of
   ``points_per_batch`` on the cached image embedding, three candidate masks per click (``multimask_output``);
2. candidates are dropped when their predicted IoU is below ``pred_iou_thresh`` or their stability score (IoU of
   the masks thresholded at ``+offset`` and ``-offset`` on the logits) below ``stability_score_thresh``, or when
   smaller than ``min_area`` pixels;
3. greedy box non-maximum suppression on the masks' tight XYXY boxes (IoU > ``box_nms_thresh`` suppressed, the
   higher predicted IoU kept; written here, torchvision is not a dependency);
4. the kept instances, sorted by predicted IoU, and a label map painting larger instances first so that smaller
   ones stay visible on top (label ``i + 1`` = instance ``i``; 0 = background).

Scoring against a ground truth (:func:`evaluate_everything`): for each class of each case, the instance with the
best Dice to the ground-truth mask is taken as the prediction (an oracle choice, as SAM-based papers report the
"everything" setting); an empty instance set predicts an empty mask. The grid is deterministic, so one repeat is run.
On a volume every slice is segmented, not only those holding the class: on a slice without the class, the oracle
follows the object from the nearest slice that holds it (the instance of best Dice with that slice's ground truth,
if it overlaps it at all), so what the automatic mode predicts beyond the object's extent counts as false positive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..prompts import grid_points

__all__ = [
    "DecodeFn",
    "Instance",
    "batched_mask_to_box",
    "best_instance",
    "box_nms",
    "evaluate_everything",
    "label_map",
    "predictor_decode_fn",
    "segment_everything",
    "stability_score",
]

DecodeFn = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]
"""``decode(points (P, 2) (x, y) original pixels) -> (logits (P, K, H, W) at original size, iou (P, K))``."""


@dataclass
class Instance:
    """One automatically found object.

    Attributes:
        mask: ``(H, W)`` bool.
        box: ``(4,)`` XYXY tight box, inclusive pixel indices.
        area: foreground pixel count.
        predicted_iou: the decoder's IoU estimate.
        stability_score: IoU of the masks at logit thresholds ``+offset`` / ``-offset``.
        point: the ``(x, y)`` grid click that produced it.
    """

    mask: np.ndarray
    box: np.ndarray
    area: int
    predicted_iou: float
    stability_score: float
    point: np.ndarray


def stability_score(logits: torch.Tensor, threshold: float = 0.0, offset: float = 1.0) -> torch.Tensor:
    """``|logits > t + o| / |logits > t - o|`` per mask: ``(..., H, W)`` -> ``(...)`` (1 for empty masks)."""
    high = (logits > threshold + offset).flatten(-2).sum(-1).float()
    low = (logits > threshold - offset).flatten(-2).sum(-1).float()
    return torch.where(low > 0, high / low.clamp_min(1), torch.ones_like(low))


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (inclusive pixel indices) of ``(N, H, W)`` bool masks -> ``(N, 4)``; empty masks give 0s."""
    if masks.numel() == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    rows, cols = masks.any(-1), masks.any(-2)
    height, width = masks.shape[-2:]
    ys, xs = torch.arange(height, device=masks.device), torch.arange(width, device=masks.device)
    x0 = torch.where(cols, xs, width).min(-1).values
    x1 = torch.where(cols, xs, -1).max(-1).values
    y0 = torch.where(rows, ys, height).min(-1).values
    y1 = torch.where(rows, ys, -1).max(-1).values
    boxes = torch.stack([x0, y0, x1, y1], dim=-1).float()
    return torch.where(masks.flatten(-2).any(-1)[:, None], boxes, torch.zeros_like(boxes))


def box_iou_matrix(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """IoU of XYXY boxes with inclusive pixel corners (area ``(x1 - x0 + 1)(y1 - y0 + 1)``): ``(N, 4), (M, 4)``
    -> ``(N, M)``."""
    area_a = (boxes_a[:, 2] - boxes_a[:, 0] + 1) * (boxes_a[:, 3] - boxes_a[:, 1] + 1)
    area_b = (boxes_b[:, 2] - boxes_b[:, 0] + 1) * (boxes_b[:, 3] - boxes_b[:, 1] + 1)
    top_left = torch.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    overlap = (bottom_right - top_left + 1).clamp_min(0).prod(-1)
    return overlap / (area_a[:, None] + area_b[None, :] - overlap)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of kept boxes, by decreasing score.

    A box is suppressed when its IoU with an already kept, higher-scoring box exceeds ``iou_threshold``
    (the behaviour of ``torchvision.ops.nms``; ties in score keep the earlier box).

    Args:
        boxes: ``(N, 4)`` XYXY.
        scores: ``(N,)``.
        iou_threshold: suppression threshold in [0, 1].

    Returns:
        ``(K,)`` int64 indices into ``boxes``.
    """
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou_matrix(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(int(order[i]))
        suppressed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.int64)


def predictor_decode_fn(predictor) -> DecodeFn:
    """The `DecodeFn` of a :class:`~peft_medsa.inference.predictor.MedSAPredictor` with an image set.

    Grid clicks (original pixels) are mapped to model input space and decoded as one point batch
    (``input_points`` ``(1, P, 1, 2)``) on the cached embedding; logits are mapped back to the original size.
    """

    def decode(points: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.as_tensor(predictor._to_input(np.asarray(points, dtype=np.float64)), dtype=torch.float32)
        labels = torch.ones((1, len(points), 1), dtype=torch.int64)
        low_res, iou = predictor.decode(inputs[None, :, None, :], labels, None, multimask_output=True)
        return predictor.postprocess(low_res), iou

    return decode


@torch.no_grad()
def segment_everything(
    decode: DecodeFn,
    image_shape: tuple[int, int],
    *,
    points_per_side: int = 16,
    points_per_batch: int = 64,
    pred_iou_thresh: float = 0.88,
    stability_score_thresh: float = 0.95,
    stability_score_offset: float = 1.0,
    box_nms_thresh: float = 0.7,
    min_area: int = 0,
    show_progress: bool = False,
) -> list[Instance]:
    """All objects of an image from a grid of clicks (module docstring), sorted by decreasing predicted IoU.

    Args:
        decode: clicks -> logits at the original size and predicted IoUs (`predictor_decode_fn`, or a stub).
        image_shape: ``(H, W)`` of the original image.
        points_per_side: the grid is ``points_per_side ** 2`` clicks (SAM: 32).
        points_per_batch: clicks decoded together.
        pred_iou_thresh, stability_score_thresh, stability_score_offset, box_nms_thresh, min_area: the filters.
        show_progress: tqdm bar over batches.

    Returns:
        The kept `Instance` list.
    """
    if points_per_batch < 1:
        raise ValueError(f"points_per_batch must be >= 1, got {points_per_batch}")
    grid = grid_points(points_per_side, image_shape)
    masks, boxes, scores, stability, areas, points = [], [], [], [], [], []
    starts = range(0, len(grid), points_per_batch)
    for start in tqdm(starts, desc="segment everything", disable=not show_progress):
        batch = grid[start : start + points_per_batch]
        logits, iou = decode(batch)
        if tuple(logits.shape[-2:]) != tuple(image_shape):
            raise ValueError(f"decode returned masks of size {tuple(logits.shape[-2:])}; expected {image_shape}")
        logits, iou = logits.flatten(0, 1).float(), iou.flatten().float()
        stable = stability_score(logits, 0.0, stability_score_offset)
        binary = logits > 0
        area = binary.flatten(-2).sum(-1)
        keep = (iou >= pred_iou_thresh) & (stable >= stability_score_thresh) & (area > max(min_area, 0))
        per_click = len(iou) // len(batch)
        masks.append(binary[keep])
        boxes.append(batched_mask_to_box(binary[keep]))
        scores.append(iou[keep])
        stability.append(stable[keep])
        areas.append(area[keep])
        points.append(torch.as_tensor(batch).repeat_interleave(per_click, 0)[keep])
    if not masks or sum(len(s) for s in scores) == 0:
        return []
    masks, boxes, scores = torch.cat(masks), torch.cat(boxes), torch.cat(scores)
    stability, areas, points = torch.cat(stability), torch.cat(areas), torch.cat(points)
    kept = box_nms(boxes, scores, box_nms_thresh)
    return [
        Instance(
            mask=masks[i].cpu().numpy(),
            box=boxes[i].cpu().numpy(),
            area=int(areas[i]),
            predicted_iou=float(scores[i]),
            stability_score=float(stability[i]),
            point=points[i].cpu().numpy(),
        )
        for i in kept.tolist()
    ]


def label_map(instances: Sequence[Instance], image_shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` int32 map: 0 background, ``i + 1`` where instance ``i`` is (larger instances painted first)."""
    labels = np.zeros(image_shape, dtype=np.int32)
    for i in sorted(range(len(instances)), key=lambda k: -instances[k].area):
        labels[instances[i].mask] = i + 1
    return labels


def _dice(mask: np.ndarray, target: np.ndarray) -> float:
    """Dice of two ``(H, W)`` masks, ``target`` non-empty (so the denominator is positive)."""
    return 2.0 * int(np.logical_and(mask, target).sum()) / (int(mask.sum()) + int(target.sum()))


def best_instance(instances: Sequence[Instance], target: np.ndarray, *, require_overlap: bool = False) -> np.ndarray:
    """The instance mask with the best Dice to ``target`` ``(H, W)`` (oracle choice); empty if there is none (or, with
    ``require_overlap``, if none overlaps the target).

    Raises:
        ValueError: ``target`` is empty (no object to choose for).
    """
    target = np.asarray(target, dtype=bool)
    if not target.any():
        raise ValueError("best_instance needs a non-empty target mask")
    empty = np.zeros(target.shape, dtype=bool)
    if not instances:
        return empty
    best = max(instances, key=lambda inst: _dice(inst.mask, target))
    return empty if require_overlap and _dice(best.mask, target) == 0.0 else best.mask


def evaluate_everything(
    everything: Callable[[np.ndarray], list[Instance]],
    samples: Iterable[Mapping],
    label_names: Mapping[int, str] | Sequence[str] | None = None,
    seed: int = 0,
    show_progress: bool = True,
):
    """The "everything" setting scored like :func:`peft_medsa.evaluation.evaluate_model` (same records and CSV).

    Each 2D image (each slice of a 3D sample) is segmented once by ``everything(image)``; per class the best-Dice
    instance is the prediction (module docstring), on a volume's slices without the class the instance that
    continues the object from the nearest slice holding it, so false positives there are counted.

    Args:
        everything: ``image (H, W[, 3]) -> instances``, e.g. ``lambda im: (predictor.set_image(im),
            segment_everything(predictor_decode_fn(predictor), im.shape[:2]))[1]``.
        samples: sample dicts as for ``evaluate_model`` (``image``, ``mask`` or ``label``, ``case_id``, ``spacing``).
        label_names: class names as for ``evaluate_model``.
        seed: recorded as the seed of the single repeat.
        show_progress: tqdm bar over samples.

    Returns:
        An ``EvaluationResult`` with ``setting="everything"`` and one repeat.
    """
    from ..evaluation import EvaluationResult, _targets, volume_slice
    from ..metrics import compute_dice, compute_hd95, compute_iou

    result = EvaluationResult(setting="everything", seeds=[seed])
    for index, sample in enumerate(tqdm(samples, desc="evaluate everything", disable=not show_progress)):
        case_id = str(sample.get("case_id", f"case_{index}"))
        mask = sample.get("mask", sample.get("label"))
        if mask is None:
            raise ValueError(f"sample {case_id!r} has neither 'mask' nor 'label'")
        mask, image = np.asarray(mask), np.asarray(sample["image"])
        names = label_names if label_names is not None else sample.get("label_names")
        cache: dict[int, list[Instance]] = {}
        for name, ids in _targets(mask, names, None).items():
            target = np.isin(mask, ids)
            if not target.any():
                continue
            if target.ndim == 2:
                if 0 not in cache:
                    cache[0] = everything(image)
                pred = best_instance(cache[0], target)
            else:
                pred = np.zeros(target.shape, dtype=bool)
                present = np.flatnonzero(target.reshape(len(target), -1).any(1))
                for z in range(len(target)):
                    if z not in cache:
                        cache[z] = everything(volume_slice(image, z, target.shape, case_id))
                    nearest = int(present[np.argmin(np.abs(present - z))])
                    pred[z] = best_instance(cache[z], target[nearest], require_overlap=nearest != z)
            result.records.append(
                {
                    "case_id": case_id,
                    "class": name,
                    "repeat": 0,
                    "seed": seed,
                    "dice": compute_dice(pred, target),
                    "iou": compute_iou(pred, target),
                    "hd95": compute_hd95(pred, target, spacing=sample.get("spacing")),
                }
            )
    return result
