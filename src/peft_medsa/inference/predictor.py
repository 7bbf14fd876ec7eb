"""`MedSAPredictor`: set an image once, then click as often as you like (segment-anything's ``SamPredictor``).

The first layer of inference (:mod:`peft_medsa.inference`): the volume predictor decodes each slice through it and
"segment everything" runs on it. Public API: ``set_image(image)`` (embeds once), ``predict(point_coords,
point_labels, box, multimask_output, return_logits, mask_input) -> (masks (K, H, W), scores (K,), low_res (K, s, s))``
(feed ``low_res[k]`` back as ``mask_input`` so that the next click refines mask ``k``), ``set_image_embedding(
embedding, (H, W))`` (an embedding computed elsewhere, e.g. a volume slice with SD-Trans context), ``set_adapter``,
``reset_image``, ``decode`` / ``postprocess`` (model-input-space prompts, for batched callers), and
`cached_predict_fn` (the one cached ``predict_fn(image, prompt)`` of the evaluation protocol).

Works on any SAM-like model with transformers' ``SamModel`` interface: ``SamModel``, LiteMedSAM
(``model_type == "lite_medsam"``) or a ``PeftModel`` wrapping either (the active adapter is used; encoder adapters run
inside ``get_image_embeddings`` because they are modules of the vision encoder).

Coordinate conventions (as in segment-anything and :mod:`peft_medsa.data.transforms`):
    - everything the user gives and gets is in ORIGINAL image pixels: points are ``(x, y)`` with ``x`` the column
      and ``y`` the row, ``0 <= x < W``, ``0 <= y < H``; boxes are XYXY ``(x0, y0, x1, y1)`` with
      ``0 <= x0 <= x1 <= W`` and ``0 <= y0 <= y1 <= H``;
    - inside, the image's long side is resized to the model input size ``S`` and padded at the bottom / right;
      prompts are scaled by ``(w / W, h / H)`` into that space and the masks are mapped back (bilinear on logits,
      crop of the padding, resize to ``(H, W)``, threshold 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..box_fit import check_box_fit, fit_to_box
from ..box_prior import check_box_prior, ellipse_prior_logits
from ..data.io import read_image
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, ResizeInfo, compute_resize, restore_original_size
from ..data.transforms import model_pixels as preprocess_image
from ..mask_shape import apply_mask_shape, check_mask_shape
from ..model_input import (
    NORMALIZATIONS,
    base_sam_model,
    default_normalization,
    model_input_size,
    resolve_normalization,
)
from ..prompt_checks import check_model_call

__all__ = [
    "MedSAPredictor",
    "base_sam_model",
    "cached_predict_fn",
    "check_box",
    "check_points",
    "default_normalization",
    "load_image_array",
    "model_input_size",
    "NORMALIZATIONS",
]


def load_image_array(image: Any) -> np.ndarray:
    """An image given as a path, a PIL image or an array -> ``(H, W)`` or ``(H, W, C)`` numpy array (dtype kept).

    Paths are read with :func:`peft_medsa.data.io.read_image` (RGB uint8; 16-bit files min-max rescaled); errors name
    the file.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable image, or the array is not ``(H, W)`` / ``(H, W, 1|3|4)``.
    """
    if isinstance(image, (str, Path)):
        return read_image(Path(image))
    if hasattr(image, "mode") and hasattr(image, "size"):  # PIL image
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            image = np.asarray(image)
        elif image.mode not in ("L", "RGB"):
            image = np.asarray(image.convert("RGB"))
        else:
            image = np.asarray(image)
    array = np.asarray(image)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (1, 3, 4)) or min(array.shape[:2]) < 1:
        raise ValueError(f"image has shape {array.shape}; expected (H, W) grey or (H, W, 3) RGB")
    return array


def check_points(point_coords: Any, point_labels: Any, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Validates clicks in original pixels: ``(N, 2)`` ``(x, y)`` inside the image and ``(N,)`` labels 0 / 1."""
    height, width = image_size
    coords = np.asarray(point_coords, dtype=np.float64).reshape(-1, 2)
    labels = np.ones(len(coords), dtype=np.int64) if point_labels is None else np.asarray(point_labels)
    labels = labels.astype(np.int64).reshape(-1)
    if len(labels) != len(coords):
        raise ValueError(f"point_labels has {len(labels)} entries for {len(coords)} point_coords")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"point_labels must be 1 (positive) or 0 (negative), got {labels.tolist()}")
    outside = [(float(x), float(y)) for x, y in coords if not (0 <= x < width and 0 <= y < height)]
    if outside or not np.isfinite(coords).all():
        raise ValueError(
            f"point_coords {outside or coords.tolist()} outside the image: expected (x, y) pixels with "
            f"0 <= x < {width} (width) and 0 <= y < {height} (height)"
        )
    return coords, labels


def check_box(box: Any, image_size: tuple[int, int]) -> np.ndarray:
    """Validates an XYXY box ``(4,)`` in original pixels: ``0 <= x0 <= x1 <= W``, ``0 <= y0 <= y1 <= H``."""
    height, width = image_size
    box = np.asarray(box, dtype=np.float64).reshape(-1)
    if box.shape != (4,) or not np.isfinite(box).all():
        raise ValueError(f"box {box.tolist()} is not 4 numbers; expected XYXY (x0, y0, x1, y1)")
    x0, y0, x1, y1 = box
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box {box.tolist()} has x1 < x0 or y1 < y0; expected XYXY with x0 <= x1 and y0 <= y1")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(
            f"box {box.tolist()} outside the image; expected 0 <= x0 <= x1 <= {width} and 0 <= y0 <= y1 <= {height}"
        )
    return box


def _active_adapter(model: torch.nn.Module) -> Any:
    active = getattr(model, "active_adapters", None) if hasattr(model, "peft_config") else None
    return tuple(active) if isinstance(active, (list, tuple)) else active


class MedSAPredictor:
    """Interactive prediction on one image at a time: `set_image` once, then `predict` per prompt.

    Args:
        model: ``SamModel``, LiteMedSAM, or a ``PeftModel`` wrapping one (put in eval mode here).
        normalization: ``"auto"`` (from the model: min-max [0, 1] for LiteMedSAM, ImageNet mean / std for ViT SAM),
            ``"imagenet"``, ``"minmax"`` or ``"none"``.
        device: device to run on (default: the model's).
        mean, std: channel statistics for ``"imagenet"`` (on [0, 1] pixels).
        mask_shape: ``"auto"`` (the active adapter's ``mask_shape``: ``"ellipse"`` for an adapter trained on masks
            drawn as ellipses, else none), ``None`` (the masks as predicted) or ``"ellipse"`` (the ellipse fitted to
            each mask, :func:`peft_medsa.mask_shape.fit_ellipse`). Applies to the boolean masks of `predict`, not to
            logits (``return_logits=True``) nor to the low-resolution logits fed back as ``mask_input``.
        box_prior: ``"auto"`` (the active adapter's ``box_prior``: ``"ellipse"`` for an adapter trained with it, else
            none), ``None`` or ``"ellipse"``: a box prompt given without ``mask_input`` comes with the ellipse
            inscribed in the box as SAM's mask prompt (:mod:`peft_medsa.box_prior`).
        box_fit: ``None`` (default: masks as predicted), or, for callers whose boxes are TIGHT (the object touches all
            four sides, as boxes from detection labels or from masks do): ``"stretch"`` (each mask of a box prompt
            scaled along x and y to span the box), ``"ellipse"`` (the fitted ellipse scaled to span the box) or
            ``"auto"`` (``"ellipse"`` for an adapter whose `mask_shape` is ``"ellipse"``, else ``"stretch"``);
            :mod:`peft_medsa.box_fit`. Replaces the `mask_shape` fit for box prompts; boolean masks only. Wrong for
            loose boxes, which it stretches to the wrong extent.

    Example:

        >>> predictor = MedSAPredictor(model)
        >>> predictor.set_image("scan.png")
        >>> masks, scores, low_res = predictor.predict(point_coords=[[120, 80]], point_labels=[1])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        normalization: str = "auto",
        device: torch.device | str | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        mask_shape: str | None = "auto",
        box_prior: str | None = "auto",
        box_fit: str | None = None,
    ) -> None:
        if mask_shape != "auto":
            check_mask_shape(mask_shape)
        if box_prior != "auto":
            check_box_prior(box_prior)
        if box_fit != "auto":
            check_box_fit(box_fit)
        self.requested_box_fit = box_fit
        self.requested_mask_shape = mask_shape
        self.requested_box_prior = box_prior
        self.normalization = resolve_normalization(model, normalization)
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model.to(self.device)
        self.dtype = next(model.parameters()).dtype
        self.mean, self.std = tuple(mean), tuple(std)
        self.input_size = model_input_size(model)
        self.reset_image()

    @property
    def mask_shape(self) -> str | None:
        """The shape `predict` gives its masks: the ``mask_shape`` asked for, or with ``"auto"`` the active adapter's
        (``None`` for a bare model, a non-Med-SA adapter or several active adapters that disagree)."""
        if self.requested_mask_shape != "auto":
            return self.requested_mask_shape
        return self._adapter_setting("mask_shape")

    @property
    def box_prior(self) -> str | None:
        """The mask prompt given with a box: the ``box_prior`` asked for, or with ``"auto"`` the active adapter's
        (``None`` for a bare model, a non-Med-SA adapter or several active adapters that disagree)."""
        if self.requested_box_prior != "auto":
            return self.requested_box_prior
        return self._adapter_setting("box_prior")

    @property
    def box_fit(self) -> str | None:
        """How masks of box prompts are made to span their (tight) box: the ``box_fit`` asked for, with ``"auto"``
        ``"ellipse"`` where `mask_shape` is ``"ellipse"`` and ``"stretch"`` elsewhere."""
        if self.requested_box_fit != "auto":
            return self.requested_box_fit
        return "ellipse" if self.mask_shape == "ellipse" else "stretch"

    def _adapter_setting(self, name: str) -> str | None:
        """Field ``name`` of the active adapters' configs when they agree, else ``None``."""
        configs = getattr(self.model, "peft_config", None)
        active = _active_adapter(self.model)
        if not configs or active is None:
            return None
        names = active if isinstance(active, tuple) else (active,)
        values = {getattr(configs[n], name, None) for n in names if n in configs}
        return values.pop() if len(values) == 1 else None

    # -- image ------------------------------------------------------------------------------------------------------
    def reset_image(self) -> None:
        """Forgets the current image and its embedding."""
        self.pixel_values: torch.Tensor | None = None
        self.image_embeddings: torch.Tensor | None = None
        self.resize_info: ResizeInfo | None = None
        self._embedded_with: Any = None

    @property
    def is_image_set(self) -> bool:
        """Whether `set_image` (or `set_image_embedding`) has been called."""
        return self.resize_info is not None

    @property
    def original_size(self) -> tuple[int, int]:
        """``(H, W)`` of the current image."""
        return self._require_image().original_size

    def _require_image(self) -> ResizeInfo:
        if self.resize_info is None:
            raise RuntimeError("no image set: call set_image(image) before predict()")
        return self.resize_info

    @torch.no_grad()
    def set_image(self, image: Any) -> None:
        """Preprocesses ``image`` and computes its embedding once (``model.get_image_embeddings``).

        Args:
            image: path (PNG/JPEG/GIF/TIFF/BMP), PIL image or array ``(H, W)`` grey or ``(H, W, 3)`` RGB; uint8,
                16-bit or float; any size.
        """
        array = load_image_array(image)
        pixel_values, info = preprocess_image(array, self.input_size, self.normalization, self.mean, self.std)
        self.pixel_values = pixel_values.to(self.device, self.dtype)
        self.resize_info = info
        self._embed()

    def set_image_embedding(self, image_embedding: torch.Tensor, original_size: tuple[int, int]) -> None:
        """Uses an embedding computed elsewhere for the next `predict` calls (no encoder run).

        The volume predictor embeds slices together (SD-Trans needs the neighbouring slices) and decodes each slice
        through this predictor, so prompts and masks are mapped exactly as for a 2D image.

        Args:
            image_embedding: ``(1, C, h, w)`` output of ``get_image_embeddings`` for the image resized (long side to
                ``S``) and padded as `set_image` would.
            original_size: ``(H, W)`` of that image.
        """
        self.pixel_values = None
        self.image_embeddings = image_embedding.to(self.device, self.dtype)
        self.resize_info = compute_resize(tuple(original_size), self.input_size)
        self._embedded_with = _active_adapter(self.model)

    def _embed(self) -> None:
        self.image_embeddings = self.model.get_image_embeddings(self.pixel_values)
        self._embedded_with = _active_adapter(self.model)

    def _current_embeddings(self) -> torch.Tensor:
        self._require_image()
        if _active_adapter(self.model) != self._embedded_with:  # set_adapter() was called since set_image()
            if self.pixel_values is None:
                raise RuntimeError("the active adapter changed after set_image_embedding(); give a new embedding")
            with torch.no_grad():
                self._embed()
        return self.image_embeddings

    def set_adapter(self, name: str | list[str]) -> None:
        """Activates adapter ``name`` of the wrapped ``PeftModel``; the embedding is recomputed on the next predict."""
        if not hasattr(self.model, "set_adapter"):
            raise ValueError(f"{type(self.model).__name__} has no adapters; expected a PeftModel to set_adapter on")
        self.model.set_adapter(name)

    # -- prompts ----------------------------------------------------------------------------------------------------
    def check_points(self, point_coords: Any, point_labels: Any) -> tuple[np.ndarray, np.ndarray]:
        """See :func:`check_points` (on the current image)."""
        return check_points(point_coords, point_labels, self.original_size)

    def check_box(self, box: Any) -> np.ndarray:
        """See :func:`check_box` (on the current image)."""
        return check_box(box, self.original_size)

    def _to_input(self, coords: np.ndarray) -> np.ndarray:
        scale_x, scale_y = self._require_image().scale_xy
        return coords * np.asarray([scale_x, scale_y])

    # -- decoding ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(
        self,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        multimask_output: bool = False,
        input_masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Runs prompt encoder + mask decoder on the cached embedding, prompts already in MODEL INPUT space.

        Args:
            input_points: ``(1, P, N, 2)`` ``(x, y)``; ``P`` prompts decoded together (a point batch).
            input_labels: ``(1, P, N)`` 1 / 0 (-10 for padding points).
            input_boxes: ``(1, P, 4)`` XYXY.
            multimask_output: three masks per prompt instead of one.
            input_masks: ``(1, 1, s, s)`` low-resolution logits of an earlier prediction (SAM's mask prompt).

        Returns:
            ``pred_masks`` ``(P, K, s, s)`` low-resolution logits (``s = S / 4``) and ``iou_scores`` ``(P, K)``.
        """
        embeddings = self._current_embeddings()
        kwargs = {
            "input_points": input_points,
            "input_labels": input_labels,
            "input_boxes": input_boxes,
            "input_masks": input_masks,
        }
        kwargs = {k: v.to(self.device) for k, v in kwargs.items() if v is not None}
        for name in ("input_points", "input_boxes", "input_masks"):
            if name in kwargs:
                kwargs[name] = kwargs[name].to(self.dtype)
        check_model_call(self.model, **kwargs)  # the API boundary: the model's forward does not check values
        outputs = self.model(image_embeddings=embeddings, multimask_output=multimask_output, **kwargs)
        return outputs.pred_masks[0].float(), outputs.iou_scores[0].float()

    def _check_mask_input(self, mask_input: Any) -> torch.Tensor:
        size = _low_res_size(self)
        array = torch.as_tensor(np.asarray(mask_input, dtype=np.float32))
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if tuple(array.shape) != (size, size) or not torch.isfinite(array).all():
            raise ValueError(
                f"mask_input has shape {tuple(np.shape(mask_input))}; expected ({size}, {size}) finite low-resolution "
                "logits, the third output of an earlier predict() on this image"
            )
        return array[None, None]

    def postprocess(self, low_res_logits: torch.Tensor) -> torch.Tensor:
        """``(..., s, s)`` low-resolution logits -> ``(..., H, W)`` logits at the original image size."""
        return restore_original_size(low_res_logits, self._require_image(), mode="linear")

    @torch.no_grad()
    def predict(
        self,
        point_coords: Any = None,
        point_labels: Any = None,
        box: Any = None,
        multimask_output: bool = False,
        return_logits: bool = False,
        mask_input: Any = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one object from clicks and / or a box, all in ORIGINAL image pixels.

        Args:
            point_coords: ``(N, 2)`` ``(x, y)`` clicks, or ``None``.
            point_labels: ``(N,)`` 1 = inside (positive), 0 = outside (negative); ``None``: all positive.
            box: ``(4,)`` XYXY box ``(x0, y0, x1, y1)``, or ``None``.
            multimask_output: return SAM's three candidate masks (ambiguous single clicks) instead of one.
            return_logits: return logits instead of boolean masks.
            mask_input: ``(s, s)`` or ``(1, s, s)`` low-resolution logits of an earlier `predict` on this image (its
                third output, one mask of it), fed back as SAM's mask prompt so that a further click refines that
                mask instead of starting over (segment-anything's ``SamPredictor.predict(mask_input=...)``). Without
                it, a box comes with the `box_prior`'s mask prompt when there is one.

        Returns:
            ``masks`` ``(K, H, W)`` bool (or float logits), ``scores`` ``(K,)`` predicted IoU and ``low_res_logits``
            ``(K, s, s)`` in model input space (``K`` = 3 with ``multimask_output``, else 1). With a `mask_shape`
            (``"ellipse"``) each boolean mask is the ellipse fitted to the predicted one; with a `box_fit` and a box,
            each boolean mask spans the box instead.

        Raises:
            ValueError: no prompt, a point outside the image, a box with ``x1 < x0`` / ``y1 < y0`` or outside, a
                ``mask_input`` that is not ``(s, s)`` finite logits.
        """
        self._require_image()
        if point_coords is None and box is None:
            raise ValueError("predict needs a prompt: point_coords (with point_labels) and/or box")
        points = labels = boxes = None
        if point_coords is not None:
            coords, label_array = self.check_points(point_coords, point_labels)
            points = torch.as_tensor(self._to_input(coords), dtype=torch.float32)[None, None]
            labels = torch.as_tensor(label_array)[None, None]
        if box is not None:
            box = self.check_box(box)
            corners = self._to_input(box.reshape(2, 2)).reshape(4)
            boxes = torch.as_tensor(corners, dtype=torch.float32)[None, None]
        masks_in = None if mask_input is None else self._check_mask_input(mask_input)
        if masks_in is None and boxes is not None and self.box_prior is not None:
            masks_in = ellipse_prior_logits(boxes[0], _low_res_size(self), self.input_size)
        low_res, scores = self.decode(points, labels, boxes, multimask_output=multimask_output, input_masks=masks_in)
        logits = self.postprocess(low_res[0])
        if return_logits:
            masks = logits.cpu().numpy()
        elif box is not None and self.box_fit is not None:
            fit = self.box_fit
            masks = np.stack([fit_to_box(m, box, fit) for m in (logits > 0).cpu().numpy()])
        else:
            masks = apply_mask_shape((logits > 0).cpu().numpy(), self.mask_shape)
        return masks, scores[0].cpu().numpy(), low_res[0].cpu().numpy()


def _low_res_size(predictor: MedSAPredictor) -> int:
    return 4 * int(predictor._current_embeddings().shape[-1])


def cached_predict_fn(predictor: MedSAPredictor, max_images: int = 64):
    """A ``predict_fn(image, prompt) -> (H, W) bool`` for :func:`peft_medsa.evaluation.evaluate_model` that embeds
    each image once: the embeddings of up to ``max_images`` images (keyed by shape and bytes) are kept, so repeated
    prompts on the same images (settings x seeds) cost only decoder calls.

    Prompts are in the image's original pixels ((x, y) clicks, XYXY box), as ``evaluate_model`` makes them. The
    cache belongs to the returned function: make a new one after changing the model's active adapter or weights.
    """
    cache: dict[tuple, tuple] = {}
    fields = ("pixel_values", "image_embeddings", "resize_info", "_embedded_with")

    def predict_fn(image: np.ndarray, prompt: Any) -> np.ndarray:
        key = (image.shape, hash(np.ascontiguousarray(image).tobytes()))
        if key in cache:
            for name, value in zip(fields, cache[key]):
                setattr(predictor, name, value)
        else:
            predictor.set_image(image)
            if len(cache) >= max_images:
                cache.pop(next(iter(cache)))
            cache[key] = tuple(getattr(predictor, name) for name in fields)
        points = prompt.points if prompt.points is not None and len(prompt.points) else None
        labels = prompt.labels if points is not None else None
        masks, _, _ = predictor.predict(point_coords=points, point_labels=labels, box=prompt.box)
        return masks[0]

    return predict_fn
