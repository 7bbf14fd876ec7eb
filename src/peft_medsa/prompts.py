"""Prompt simulation for SAM (Med-SA paper, sections 3.5 and 4.2): clicks, boxes, corrective clicks and grids.

Conventions (the one place that defines them):

- Coordinates are pixel coordinates of the array the prompt is computed on: a point is ``(x, y)`` with
  ``x`` = column and ``y`` = row, integers at pixel centres (SAM's prompt encoder adds the 0.5 itself). Boxes are
  ``XYXY`` = ``(x_min, y_min, x_max, y_max)`` with inclusive pixel indices, so the tight box of a mask has its
  corners on the first and last foreground columns / rows (as in SAM's ``batched_mask_to_box`` and MedSAM).
- Call these functions on the mask in the space where the prompt will be used: on the model-input mask (after
  resize + pad) for training, or on the original mask when an adapter such as
  :func:`peft_medsa.evaluation.sam_predict_fn` maps prompts into the model input space itself.
  :meth:`Prompt.scale` maps a prompt between spaces.
- Randomness comes from a ``numpy.random.Generator`` (or an int seed turned into one): the same seed gives the
  same prompt.
- Box IoU treats a box as the pixels it covers: ``[x0 - 0.5, x1 + 0.5] x [y0 - 0.5, y1 + 0.5]``, so a box's area
  is ``(x1 - x0 + 1) * (y1 - y0 + 1)`` and a one-pixel object has a box of area 1, not 0.

Named evaluation settings (:func:`make_prompt`): ``"1pt"`` and ``"3pt"`` (any ``"<N>pt"``) random positive
clicks, ``"bbox"`` the tight box, ``"bbox0.5"`` / ``"bbox0.75"`` (any ``"bbox<t>"``) a randomly jittered box whose
IoU with the tight box is ``t`` (within 1e-3). The "everything" setting has no prompt: use :func:`grid_points`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from .finite import require_finite

__all__ = [
    "SETTINGS",
    "Prompt",
    "SlicePrompts",
    "add_corrective_click",
    "as_generator",
    "box_iou",
    "collate_prompts",
    "grid_points",
    "jitter_box",
    "make_prompt",
    "negative_points",
    "next_click",
    "positive_points",
    "slice_prompts",
    "tight_box",
]

SETTINGS = ("1pt", "3pt", "bbox0.5", "bbox0.75", "bbox")
"""The paper's prompted evaluation settings (Tables 1-4, 10) plus the tight box."""

RngLike = np.random.Generator | int | None


def as_generator(rng: RngLike) -> np.random.Generator:
    """Returns ``rng`` if it is a ``Generator``, else ``np.random.default_rng(rng)`` (``None``: fresh entropy)."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


@dataclass(eq=False)
class Prompt:
    """Clicks and an optional box for one object, in (x, y) pixel coordinates of one image.

    Args:
        points: ``(N, 2)`` float32 ``(x, y)`` click positions (``N`` may be 0).
        labels: ``(N,)`` int64 click labels, 1 = positive (inside the object), 0 = negative (outside).
        box: ``(4,)`` float32 ``XYXY`` box with inclusive pixel corners, or ``None``.
    """

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=np.int64))
    box: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.points = require_finite(self.points, "Prompt points").astype(np.float32).reshape(-1, 2)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if len(self.labels) != len(self.points):
            raise ValueError(f"Prompt has {len(self.points)} points but {len(self.labels)} labels")
        if not np.isin(self.labels, (0, 1)).all():
            raise ValueError(f"Prompt labels must be 1 (positive) or 0 (negative), got {self.labels.tolist()}")
        if self.box is not None:
            self.box = require_finite(self.box, "Prompt box").astype(np.float32).reshape(-1)
            if self.box.shape != (4,) or self.box[2] < self.box[0] or self.box[3] < self.box[1]:
                raise ValueError(f"Prompt box must be XYXY with x0 <= x1 and y0 <= y1, got {self.box.tolist()}")

    @property
    def num_points(self) -> int:
        """Number of clicks."""
        return len(self.points)

    def add_points(self, points: np.ndarray, labels: np.ndarray) -> Prompt:
        """Returns a new prompt with ``points`` ``(M, 2)`` and ``labels`` ``(M,)`` appended after the current ones."""
        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        return Prompt(
            np.concatenate([self.points, points]),
            np.concatenate([self.labels, np.asarray(labels, dtype=np.int64).reshape(-1)]),
            self.box,
        )

    def scale(self, scale_x: float, scale_y: float) -> Prompt:
        """Maps the prompt to a resized image: ``x * scale_x``, ``y * scale_y`` (as SAM's ``apply_coords``)."""
        factors = require_finite([scale_x, scale_y], "Prompt.scale factors").astype(np.float32)
        box = None if self.box is None else self.box * np.tile(factors, 2)
        return Prompt(self.points * factors, self.labels.copy(), box)

    def to_sam_inputs(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """SamModel inputs for a batch of one image; see :func:`collate_prompts`."""
        return collate_prompts([self], device=device)


def collate_prompts(prompts: list[Prompt], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Stacks one prompt per image into ``SamModel`` keyword inputs (one mask per image, ``point_batch_size=1``).

    Prompts with fewer clicks are padded with ``(0, 0)`` points labelled -10, which SAM's prompt encoder ignores.

    Args:
        prompts: ``B`` prompts; either all or none of them have a box.
        device: Device of the returned tensors.

    Returns:
        A dict with ``input_points`` float32 ``(B, 1, N, 2)`` and ``input_labels`` int64 ``(B, 1, N)`` when any
        prompt has clicks, and ``input_boxes`` float32 ``(B, 1, 4)`` when the prompts have boxes.

    Raises:
        ValueError: On an empty list, a mix of prompts with and without boxes, or prompts with neither clicks nor
            a box.
    """
    if not prompts:
        raise ValueError("collate_prompts needs at least one prompt")
    has_box = [p.box is not None for p in prompts]
    if any(has_box) and not all(has_box):
        raise ValueError("either all prompts in a batch have a box or none does")
    num_points = max(p.num_points for p in prompts)
    if num_points == 0 and not has_box[0]:
        raise ValueError("a prompt needs at least one click or a box")
    inputs: dict[str, torch.Tensor] = {}
    if num_points:
        points = np.zeros((len(prompts), 1, num_points, 2), dtype=np.float32)
        labels = np.full((len(prompts), 1, num_points), -10, dtype=np.int64)
        for i, p in enumerate(prompts):
            points[i, 0, : p.num_points] = p.points
            labels[i, 0, : p.num_points] = p.labels
        inputs["input_points"] = torch.from_numpy(points)
        inputs["input_labels"] = torch.from_numpy(labels)
    if has_box[0]:
        inputs["input_boxes"] = torch.from_numpy(np.stack([p.box for p in prompts])[:, None, :])
    return {k: v.to(device) for k, v in inputs.items()} if device is not None else inputs


def _foreground(mask: np.ndarray, what: str, case_id: str | None = None) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what} needs a 2D (H, W) mask, got shape {mask.shape}")
    mask = mask.astype(bool)
    if not mask.any():
        where = f" of case {case_id!r}" if case_id is not None else ""
        raise ValueError(f"{what} needs a non-empty mask, but the mask{where} has no foreground")
    return mask


def _depth(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each foreground pixel to the nearest background pixel or to outside the image."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def _xy(flat_indices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.unravel_index(flat_indices, shape)
    return np.stack([cols, rows], axis=-1).astype(np.float32)


def _choose(candidates: np.ndarray, fallback: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(candidates) >= n:
        return rng.choice(candidates, size=n, replace=False)
    if len(fallback) >= n:
        return rng.choice(fallback, size=n, replace=False)
    return rng.choice(fallback, size=n, replace=True)


def positive_points(mask: np.ndarray, n: int, rng: RngLike, min_distance: float = 2.0) -> np.ndarray:
    """Random positive clicks inside a mask, preferring interior pixels.

    Candidates are the foreground pixels at Euclidean distance ``>= min_distance`` from the background (or the image
    edge), capped at the mask's deepest distance so that thin masks keep their central pixels; with the default 2.0
    the one-pixel outer ring of the mask is avoided. Points are drawn uniformly without replacement from the
    candidates, then from the whole mask if too few, then with replacement if the mask has fewer than ``n`` pixels.

    Args:
        mask: ``(H, W)`` binary mask (non-zero = foreground).
        n: Number of clicks.
        rng: Generator or seed.
        min_distance: Interior preference in pixels; 1.0 samples uniformly over the whole mask.

    Returns:
        ``(n, 2)`` float32 ``(x, y)`` positions.

    Raises:
        ValueError: If the mask is empty or not 2D.
    """
    require_finite(min_distance, "positive_points min_distance")
    mask = _foreground(mask, "positive_points")
    depth = _depth(mask).ravel()
    candidates = np.flatnonzero(depth >= min(min_distance, depth.max()))
    chosen = _choose(candidates, np.flatnonzero(mask.ravel()), n, as_generator(rng))
    return _xy(chosen, mask.shape)


def negative_points(mask: np.ndarray, n: int, rng: RngLike, max_distance: float | None = None) -> np.ndarray:
    """Random negative clicks outside a mask.

    Args:
        mask: ``(H, W)`` binary mask (non-zero = foreground).
        n: Number of clicks.
        rng: Generator or seed.
        max_distance: If given, only background pixels within this many pixels of the mask are candidates (clicks
            near the object, as a user would place them); else the whole background.

    Returns:
        ``(n, 2)`` float32 ``(x, y)`` positions (drawn without replacement unless there are fewer than ``n``).

    Raises:
        ValueError: If the mask is not 2D or has no background pixels (within ``max_distance``).
    """
    if max_distance is not None:
        require_finite(max_distance, "negative_points max_distance")
    mask = np.asarray(mask).astype(bool)
    if mask.ndim != 2:
        raise ValueError(f"negative_points needs a 2D (H, W) mask, got shape {mask.shape}")
    background = ~mask
    if max_distance is not None and mask.any():
        background &= ndimage.distance_transform_edt(~mask) <= max_distance
    candidates = np.flatnonzero(background.ravel())
    if len(candidates) == 0:
        raise ValueError("negative_points needs background pixels, but the mask has none (within max_distance)")
    return _xy(_choose(candidates, candidates, n, as_generator(rng)), mask.shape)


def tight_box(mask: np.ndarray, case_id: str | None = None) -> np.ndarray:
    """Tight ``XYXY`` box of a mask: first/last foreground column and row (inclusive), float32 ``(4,)``."""
    mask = _foreground(mask, "tight_box", case_id)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def box_iou(box_a: np.ndarray, box_b: np.ndarray) -> float:
    """IoU of two ``XYXY`` boxes with inclusive pixel corners (area ``(x1 - x0 + 1) * (y1 - y0 + 1)``)."""
    a = np.asarray(box_a, dtype=np.float64)
    b = np.asarray(box_b, dtype=np.float64)
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1.0)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1.0)
    inter = iw * ih
    area_a = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0)
    area_b = (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0)
    return float(inter / (area_a + area_b - inter))


def jitter_box(
    box: np.ndarray,
    target_iou: float,
    rng: RngLike,
    image_shape: tuple[int, int],
    tol: float = 1e-3,
    max_tries: int = 100,
) -> np.ndarray:
    """Randomly jittered box whose IoU with ``box`` equals ``target_iou`` (within ``tol``).

    Method: draw a random direction ``d ~ U[-1, 1]^4`` that moves each edge by ``s * d_i`` times the box width
    (x edges) or height (y edges); ``box(s)`` is that box with its corners re-ordered and clipped to the image. Its
    IoU with ``box`` is continuous in ``s`` and equals 1 at ``s = 0``, so after doubling ``s`` until the IoU falls
    below the target, bisection on ``s`` hits the target. Directions that cannot reach it (e.g. a box already
    filling the image, pushed outwards) are redrawn.

    Args:
        box: Reference ``XYXY`` box (inclusive pixel corners), e.g. :func:`tight_box`.
        target_iou: Wanted IoU in ``(0, 1]``.
        rng: Generator or seed.
        image_shape: ``(H, W)``; the result is clipped to ``[0, W - 1] x [0, H - 1]``.
        tol: Accepted absolute IoU error.
        max_tries: Directions tried before giving up.

    Returns:
        float32 ``(4,)`` ``XYXY`` box with non-integer corners in general.

    Raises:
        ValueError: If ``target_iou`` is outside ``(0, 1]`` or no direction reaches it.
    """
    if not 0.0 < target_iou <= 1.0:
        raise ValueError(f"target_iou must be in (0, 1], got {target_iou}")
    ref = np.asarray(box, dtype=np.float64)
    if target_iou >= 1.0 - tol:
        return ref.astype(np.float32)
    rng = as_generator(rng)
    height, width = image_shape
    size = np.array([ref[2] - ref[0] + 1.0, ref[3] - ref[1] + 1.0] * 2)
    limits_low = np.zeros(4)
    limits_high = np.array([width - 1.0, height - 1.0] * 2)

    def moved(direction: np.ndarray, s: float) -> np.ndarray:
        x0, y0, x1, y1 = np.clip(ref + s * direction * size, limits_low, limits_high)
        return np.array([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)])

    for _ in range(max_tries):
        direction = rng.uniform(-1.0, 1.0, size=4)
        high = 0.25
        while box_iou(ref, moved(direction, high)) > target_iou and high < 64.0:
            high *= 2.0
        if box_iou(ref, moved(direction, high)) > target_iou:
            continue
        low = 0.0
        for _ in range(100):
            mid = 0.5 * (low + high)
            iou = box_iou(ref, moved(direction, mid))
            if abs(iou - target_iou) <= tol:
                return moved(direction, mid).astype(np.float32)
            low, high = (mid, high) if iou > target_iou else (low, mid)
    raise ValueError(f"could not jitter box {ref.tolist()} to IoU {target_iou} inside an image of shape {image_shape}")


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, int] | None:
    """Corrective click for the largest error region of a prediction, as a user would place it.

    The error regions are the 4-connected components of the false negatives (``gt & ~pred``) and false positives
    (``pred & ~gt``). The largest by pixel count is chosen (a false-negative region wins a tie) and the click goes to
    its pixel farthest from the region's boundary (maximum of the Euclidean distance transform, the image edge
    counting as boundary; first such pixel in row-major order). Deterministic.

    Args:
        pred: ``(H, W)`` current binary prediction.
        gt: ``(H, W)`` binary ground truth.

    Returns:
        ``((x, y) float32 (2,), label)`` with label 1 in a false-negative region and 0 in a false-positive one,
        or ``None`` if the prediction equals the ground truth.

    Raises:
        ValueError: If the shapes differ or are not 2D.
    """
    pred = np.asarray(pred).astype(bool)
    gt = np.asarray(gt).astype(bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"next_click needs two 2D masks of one shape, got {pred.shape} and {gt.shape}")
    best: tuple[int, np.ndarray, int] | None = None
    for error, label in ((gt & ~pred, 1), (pred & ~gt, 0)):
        components, count = ndimage.label(error)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        largest = int(np.argmax(sizes))
        if best is None or sizes[largest] > best[0]:
            best = (int(sizes[largest]), components == largest + 1, label)
    if best is None:
        return None
    _, region, label = best
    position = int(np.argmax(_depth(region)))
    return _xy(np.array([position]), region.shape)[0], label


def add_corrective_click(prompt: Prompt, pred: np.ndarray, gt: np.ndarray) -> Prompt:
    """Returns ``prompt`` plus the :func:`next_click` for ``pred`` (unchanged if the prediction is perfect)."""
    click = next_click(pred, gt)
    if click is None:
        return prompt
    point, label = click
    return prompt.add_points(point[None], [label])


def grid_points(n_per_side: int, image_shape: tuple[int, int]) -> np.ndarray:
    """Regular grid of clicks for "segment everything", as SAM's automatic mask generator.

    Cell centres of an ``n_per_side x n_per_side`` grid over the image: ``x = (i + 0.5) / n * W``,
    ``y = (j + 0.5) / n * H``, with x varying fastest.

    Args:
        n_per_side: Points per side (SAM uses 32).
        image_shape: ``(H, W)``.

    Returns:
        ``(n_per_side ** 2, 2)`` float32 ``(x, y)`` positions.
    """
    if n_per_side < 1:
        raise ValueError(f"n_per_side must be >= 1, got {n_per_side}")
    offset = 1.0 / (2 * n_per_side)
    side = np.linspace(offset, 1.0 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1)) * image_shape[1]
    ys = np.tile(side[:, None], (1, n_per_side)) * image_shape[0]
    return np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32)


_POINTS = re.compile(r"^(\d+)pt$")
_BOX = re.compile(r"^bbox(\d*\.?\d+)?$")


def make_prompt(mask: np.ndarray, setting: str, rng: RngLike, case_id: str | None = None) -> Prompt:
    """Prompt for a named evaluation setting on one 2D mask.

    Args:
        mask: ``(H, W)`` binary mask of the target object, in the space the prompt will be used in.
        setting: ``"<N>pt"`` (``"1pt"``, ``"3pt"``: N random positive clicks, see :func:`positive_points`),
            ``"bbox"`` (tight box) or ``"bbox<t>"`` (``"bbox0.5"``, ``"bbox0.75"``: box with IoU ``t`` to the tight
            box, see :func:`jitter_box`).
        rng: Generator or seed.
        case_id: Named in the error message when the mask is empty.

    Returns:
        The prompt.

    Raises:
        ValueError: If the mask is empty (naming ``case_id``), not 2D, or the setting is unknown.
    """
    points_match, box_match = _POINTS.match(setting), _BOX.match(setting)
    if points_match is None and box_match is None:
        raise ValueError(
            f"unknown prompt setting {setting!r}; use '<N>pt', 'bbox' or 'bbox<iou>' such as {SETTINGS}"
            " ('everything' has no prompt: use grid_points)"
        )
    mask = _foreground(mask, f"prompt setting {setting!r}", case_id)
    if points_match is not None:
        n = int(points_match.group(1))
        if n < 1:
            raise ValueError(f"prompt setting {setting!r} asks for no clicks")
        return Prompt(positive_points(mask, n, rng), np.ones(n, dtype=np.int64))
    box = tight_box(mask)
    if box_match.group(1) is not None:
        box = jitter_box(box, float(box_match.group(1)), rng, mask.shape)
    return Prompt(box=box)


@dataclass(eq=False)
class SlicePrompts:
    """Per-slice prompts of a 3D volume along axis 0.

    Args:
        prompts: One entry per slice: a :class:`Prompt` computed on that slice's mask, or ``None`` where the
            slice has no foreground.
        has_foreground: ``(D,)`` bool, ``True`` for slices with foreground (the slices that got a prompt).
    """

    prompts: list[Prompt | None]
    has_foreground: np.ndarray

    @property
    def slice_indices(self) -> np.ndarray:
        """Indices of the prompted slices."""
        return np.flatnonzero(self.has_foreground)


def slice_prompts(
    volume: np.ndarray, setting: str, rng: RngLike, label: int | None = None, case_id: str | None = None
) -> SlicePrompts:
    """Prompts for each axial slice of a 3D mask, as 2D SAM is evaluated on volumes.

    Args:
        volume: ``(D, H, W)`` binary mask or label map; prompts are made on each ``volume[z]``.
        setting: A :func:`make_prompt` setting.
        rng: Generator or seed, consumed slice by slice in order.
        label: Class value to prompt for in a label map (``volume == label``); ``None`` means non-zero.
        case_id: Named in the error message when the volume has no foreground at all.

    Returns:
        The per-slice prompts; slices without foreground are flagged in ``has_foreground`` and have ``None``.

    Raises:
        ValueError: If the volume is not 3D or has no foreground for ``label``.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"slice_prompts needs a 3D (D, H, W) volume, got shape {volume.shape}")
    target = volume.astype(bool) if label is None else volume == label
    has_foreground = target.reshape(len(target), -1).any(axis=1)
    if not has_foreground.any():
        which = "foreground" if label is None else f"voxels of label {label}"
        raise ValueError(f"slice_prompts: the volume of case {case_id!r} has no {which}")
    rng = as_generator(rng)
    prompts = [make_prompt(target[z], setting, rng, case_id) if fg else None for z, fg in enumerate(has_foreground)]
    return SlicePrompts(prompts, has_foreground)
