"""`VolumePredictor`: a whole volume with per-slice or sparse prompts, built on the image predictor.

The layers, as segment-anything's model -> ``SamPredictor`` -> automatic generator, plus one for volumes:

1. :class:`~peft_medsa.inference.predictor.MedSAPredictor`: one 2D image, embed once, decode prompts (and
   ``mask_input``) in original pixels;
2. `VolumePredictor` (this module): reads a volume with its affine, embeds its slices in chunks with overlap
   (:class:`~peft_medsa.inference.slice_embeddings.SliceEmbeddings`; SD-Trans sees the neighbouring slices when the
   adapter has it), decodes each prompted slice through the image predictor, fills unprompted slices by propagation,
   and writes the labels with the input's affine;
3. "segment everything" on one slice: `VolumePredictor.image_predictor` gives the image predictor of a slice, on
   which :func:`peft_medsa.inference.everything.segment_everything` runs.

Prompts: the one volume format of :mod:`peft_medsa.inference.volume_prompts`, ``{z: Prompt}`` in slice pixels
(points ``(x, y)``, boxes XYXY). Propagation (``propagate=True``): each unprompted slice between or beyond prompted
ones belongs to its nearest prompted slice (ties to the lower one); from each prompted slice outwards, the previous
slice's mask gives the next slice its prompt: the mask's tight box grown by ``margin`` pixels (and, with
``carry_mask=True``, the previous low-resolution logits as SAM's mask prompt). Propagation stops where the mask
vanishes (fewer than ``min_area`` pixels), at the volume's end, or where the slices of another prompted slice begin.

Example:

    >>> predictor = VolumePredictor(model)                  # any SAM-like model, with or without SD-Trans
    >>> predictor.set_volume("ct.nii.gz", window=(40, 400))
    >>> mask = predictor.predict(box3d_prompts((10, 20, 5, 80, 90, 30), predictor.shape))   # (D, H, W) bool
    >>> predictor.save("labels.nii.gz", mask.astype("uint8"))                                 # input's affine
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.io import Volume
from ..prompts import Prompt
from .predictor import MedSAPredictor
from .slice_embeddings import SliceEmbeddings
from .volume_io import LoadedVolume, load_volume, save_label_volume, volume_to_uint8
from .volume_prompts import check_volume_prompts, tight_box_of

__all__ = ["VolumePredictor", "nearest_prompted", "segment_volume"]


def nearest_prompted(prompted: Sequence[int], depth: int) -> np.ndarray:
    """``(D,)`` index of the nearest prompted slice of every slice (ties to the lower one)."""
    order = np.asarray(sorted(prompted))
    distance = np.abs(np.arange(depth)[:, None] - order[None, :])
    return order[np.argmin(distance, axis=1)]


def _as_slices(volume: Any, window: tuple[float, float] | None) -> tuple[np.ndarray, LoadedVolume | None]:
    """A path / `LoadedVolume` / array -> ``(D, H, W[, 3])`` uint8 slices and the loaded volume (for its affine)."""
    loaded = None
    if isinstance(volume, (str, Path)):
        loaded = load_volume(volume)
    elif isinstance(volume, LoadedVolume):
        loaded = volume
    array = loaded.array if loaded is not None else np.asarray(volume)
    channels_last = array.ndim == 4 and array.shape[-1] == 3
    if array.ndim != 3 and not channels_last:
        raise ValueError(f"volume of shape {array.shape}; expected (D, H, W) or (D, H, W, 3) slices")
    if min(array.shape[:3]) < 1:
        raise ValueError(f"volume of shape {array.shape} is empty")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise ValueError(f"volume of shape {array.shape} has non-finite or non-numeric voxels")
    if array.dtype != np.uint8:
        if channels_last:
            array = np.stack([volume_to_uint8(array[..., c], window) for c in range(3)], axis=-1)
        else:
            array = volume_to_uint8(array, window)
    return array, loaded


class VolumePredictor:
    """Segments volumes slice by slice with a SAM-like model, SD-Trans context included when the model has it.

    Args:
        model: ``SamModel``, LiteMedSAM, or a ``PeftModel`` wrapping one (with or without SD-Trans).
        normalization: as :class:`~peft_medsa.inference.predictor.MedSAPredictor` (``"auto"`` from the model).
        chunk_size: slices embedded together (the depth context of SD-Trans).
        overlap: slices shared by consecutive chunks (their embeddings are averaged).
        device: device to run on (default: the model's).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        normalization: str = "auto",
        chunk_size: int = 16,
        overlap: int = 4,
        device: torch.device | str | None = None,
    ) -> None:
        self.image_predictor = MedSAPredictor(model, normalization=normalization, device=device)
        self.model = self.image_predictor.model
        self.chunk_size, self.overlap = chunk_size, overlap
        self.slices: np.ndarray | None = None
        self.loaded: LoadedVolume | None = None
        self.embeddings: SliceEmbeddings | None = None
        self.source = "volume"

    # -- the volume -----------------------------------------------------------------------------------------------
    def set_volume(
        self,
        volume: Any,
        *,
        window: tuple[float, float] | None = None,
        affine: np.ndarray | None = None,
        source: str | None = None,
        embeddings_cls: type[SliceEmbeddings] = SliceEmbeddings,
    ) -> None:
        """Takes a volume; slices are embedded lazily, when a prompt first needs them.

        Args:
            volume: a NIfTI path or DICOM folder, a :class:`~peft_medsa.inference.volume_io.LoadedVolume`, or an
                array ``(D, H, W)`` (any numeric dtype) or ``(D, H, W, 3)`` (channels per slice). Non-uint8 values
                are mapped to uint8 once for the whole volume (`volume_to_uint8`: ``window`` or the 0.5-99.5
                percentiles), so every slice sees the same intensity mapping.
            window: ``(level, width)`` for CT, e.g. ``(40, 400)``.
            affine: ``(4, 4)`` voxel ``(w, h, d, 1)`` -> mm matrix of an array volume, used by `save`.
            source: the name used in error messages (default: the file path, else ``"volume"``).
            embeddings_cls: the `SliceEmbeddings` class (a subclass may reuse cached encoder features).

        Raises:
            FileNotFoundError, ValueError: unreadable or malformed volumes (4D NIfTI, DICOM with mixed orientations
                or missing slices, non-finite voxels), with messages naming the file.
        """
        slices, loaded = _as_slices(volume, window)
        if loaded is None and affine is not None:
            spacing = tuple(float(np.linalg.norm(np.asarray(affine)[:3, i])) for i in (2, 1, 0))
            loaded = LoadedVolume(
                Volume(slices[..., 0] if slices.ndim == 4 else slices, affine, spacing, Path()), None, "array"
            )
        self.slices, self.loaded = slices, loaded
        self.source = source or (
            str(loaded.volume.path) if loaded is not None and loaded.source != "array" else "volume"
        )
        self.embeddings = embeddings_cls(
            self.model,
            slices,
            normalization=self.image_predictor.normalization,
            chunk_size=self.chunk_size,
            overlap=self.overlap,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)`` of the current volume."""
        return tuple(self._require_volume().shape[:3])

    def _require_volume(self) -> np.ndarray:
        if self.slices is None:
            raise RuntimeError("no volume set: call set_volume(volume) before predict()")
        return self.slices

    def image_predictor_at(self, z: int) -> MedSAPredictor:
        """The image predictor with slice ``z``'s embedding set (SD-Trans context included): decode prompts on it,
        or run "segment everything" on it."""
        self._require_volume()
        self.image_predictor.set_image_embedding(self.embeddings(z), self.slices.shape[1:3])
        return self.image_predictor

    # -- prediction -----------------------------------------------------------------------------------------------
    def predict_slice(
        self, z: int, prompt: Prompt, mask_input: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits ``(H, W)`` at the slice's size and low-resolution logits ``(s, s)`` for one prompt on slice ``z``."""
        predictor = self.image_predictor_at(z)
        logits, _, low_res = predictor.predict(
            point_coords=prompt.points if prompt.num_points else None,
            point_labels=prompt.labels if prompt.num_points else None,
            box=prompt.box,
            mask_input=mask_input,
            return_logits=True,
        )
        return logits[0], low_res[0]

    def predict_logits(
        self,
        prompts: Mapping[int, Prompt],
        *,
        propagate: bool = False,
        margin: float = 2.0,
        min_area: int = 1,
        carry_mask: bool = False,
        progress: Callable[[int], Any] | None = None,
    ) -> dict[int, np.ndarray]:
        """``{z: (H, W) logits}`` for the prompted slices and, with ``propagate``, the slices reached from them
        (module docstring). Arguments as `predict`."""
        self._require_volume()
        check_volume_prompts(prompts, self.shape, self.source)
        depth = self.shape[0]
        logits: dict[int, np.ndarray] = {}
        low_res: dict[int, np.ndarray] = {}
        for z in sorted(prompts):
            logits[z], low_res[z] = self.predict_slice(int(z), prompts[z])
            if progress is not None:
                progress(1)
        if not propagate:
            return logits
        owner = nearest_prompted(list(prompts), depth)
        for z in sorted(prompts):
            for step in (1, -1):
                previous, current = z, z + step
                while 0 <= current < depth and owner[current] == z:
                    mask = logits[previous] > 0
                    if mask.sum() < max(min_area, 1):
                        break
                    prompt = Prompt(box=tight_box_of(mask, margin))
                    carried = low_res[previous] if carry_mask else None
                    logits[current], low_res[current] = self.predict_slice(current, prompt, carried)
                    if progress is not None:
                        progress(1)
                    previous, current = current, current + step
        return logits

    def predict(
        self,
        prompts: Mapping[int, Prompt],
        *,
        propagate: bool = False,
        margin: float = 2.0,
        min_area: int = 1,
        carry_mask: bool = False,
        progress: Callable[[int], Any] | None = None,
    ) -> np.ndarray:
        """One object: ``(D, H, W)`` bool mask from ``{z: Prompt}`` in slice pixels.

        Args:
            prompts: per-slice prompts (:mod:`peft_medsa.inference.volume_prompts`).
            propagate: fill unprompted slices from the prompted ones (module docstring); without it, unprompted
                slices stay empty.
            margin: pixels added around a mask's tight box when it becomes the next slice's box.
            min_area: a propagated mask smaller than this stops the propagation (and is dropped).
            carry_mask: also give the previous slice's low-resolution logits as SAM's mask prompt.
            progress: called with 1 after each decoded slice (e.g. ``tqdm.update``).

        Raises:
            ValueError: a prompt on a slice that does not exist or outside its slice (the message names the volume).
        """
        result = np.zeros(self.shape, dtype=bool)
        logits = self.predict_logits(
            prompts, propagate=propagate, margin=margin, min_area=min_area, carry_mask=carry_mask, progress=progress
        )
        for z, slice_logits in logits.items():
            mask = slice_logits > 0
            if z in prompts or mask.sum() >= max(min_area, 1):
                result[z] = mask
        return result

    def predict_labels(self, objects: Sequence[Mapping[int, Prompt]], *, propagate: bool = False) -> np.ndarray:
        """Several objects: ``(D, H, W)`` labels, 0 background and ``k + 1`` for ``objects[k]``; where objects
        overlap, the voxel takes the object of highest logit."""
        depth, height, width = self.shape
        best = np.full((depth, height, width), -np.inf, dtype=np.float32)
        labels = np.zeros((depth, height, width), dtype=np.uint8 if len(objects) < 255 else np.int32)
        for k, prompts in enumerate(objects):
            for z, logits in self.predict_logits(prompts, propagate=propagate).items():
                wins = (logits > 0) & (logits > best[z])
                best[z][wins] = logits[wins]
                labels[z][wins] = k + 1
        return labels

    # -- output ---------------------------------------------------------------------------------------------------
    def save(self, path: str | Path, labels: np.ndarray) -> Path:
        """Writes ``(D, H, W)`` labels as NIfTI with the input's affine (atomically).

        Raises:
            ValueError: the volume was an array given without ``affine``, or ``path`` is not ``.nii`` / ``.nii.gz``.
        """
        self._require_volume()
        if self.loaded is None:
            raise ValueError("the volume was given as an array without affine=; cannot write it in its geometry")
        return save_label_volume(path, labels, self.loaded)


def segment_volume(
    model: torch.nn.Module,
    volume: Any,
    prompts: Mapping[int, Prompt] | Sequence[Mapping[int, Prompt]],
    *,
    propagate: bool = False,
    chunk_size: int = 16,
    overlap: int = 4,
    normalization: str = "auto",
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """One call: ``(D, H, W)`` labels of a volume from ``{z: Prompt}`` (one object, label 1) or a list of them (one
    label per object), through a `VolumePredictor`."""
    predictor = VolumePredictor(model, normalization=normalization, chunk_size=chunk_size, overlap=overlap)
    predictor.set_volume(volume, window=window)
    objects = [prompts] if isinstance(prompts, Mapping) else list(prompts)
    return predictor.predict_labels(objects, propagate=propagate)
