"""The one prompt format for volumes: ``{z: Prompt}``, a 2D prompt per prompted slice.

A volume is ``(D, H, W)``; slice ``z`` is ``volume[z]``. ``prompts[z]`` is a :class:`~peft_medsa.prompts.Prompt` in
that slice's ORIGINAL pixels: clicks ``(x, y)`` with ``x`` the column and ``y`` the row, a box XYXY
``(x0, y0, x1, y1)``. Slices without an entry are not prompted: the volume predictor leaves them empty, or fills them
by propagation from the prompted ones. Every way of prompting a volume builds this dict:

- `box3d_prompts`: a 3D box ``(x0, y0, z0, x1, y1, z1)`` = the 2D box on every slice ``z0..z1`` (the CLI's ``--box``);
- `clicks_to_prompts`: clicks ``(x, y, z[, label])`` grouped per slice (the CLI's ``--point``);
- `prompts_from_mask`: a simulated prompt on every slice that holds the target (evaluation, benchmarks);
- `every_kth`: keep one prompted slice in ``k`` (sparse prompting).

`check_volume_prompts` validates a dict against a volume's shape, naming the source (a file) in its messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..prompts import Prompt, RngLike, as_generator, make_prompt

VolumePrompts = dict[int, Prompt]
"""``{slice index z: Prompt in slice pixels}``."""

__all__ = [
    "VolumePrompts",
    "box3d_prompts",
    "check_volume_prompts",
    "clicks_to_prompts",
    "every_kth",
    "prompts_from_mask",
    "tight_box_of",
]


def box3d_prompts(box3d: Any, shape: tuple[int, int, int]) -> VolumePrompts:
    """The 2D box ``(x0, y0, x1, y1)`` on every slice ``z0..z1`` (inclusive) of a ``(D, H, W)`` volume.

    Raises:
        ValueError: not 6 numbers, ``x1 < x0`` (or ``y``, ``z``), or outside the volume (names the bound).
    """
    box = np.asarray(box3d, dtype=np.float64).reshape(-1)
    if box.shape != (6,) or not np.isfinite(box).all():
        raise ValueError(f"3D box {box.tolist()} is not 6 finite numbers; expected (x0, y0, z0, x1, y1, z1)")
    x0, y0, z0, x1, y1, z1 = box
    depth, height, width = shape
    if x1 < x0 or y1 < y0 or z1 < z0:
        raise ValueError(f"3D box {box.tolist()} has a max below its min; expected x0 <= x1, y0 <= y1, z0 <= z1")
    if x0 < 0 or y0 < 0 or z0 < 0 or x1 > width or y1 > height or z1 > depth - 1:
        raise ValueError(
            f"3D box {box.tolist()} outside the volume; expected 0 <= x <= {width}, 0 <= y <= {height}, "
            f"0 <= z <= {depth - 1} (volume (D, H, W) = {shape})"
        )
    return {z: Prompt(box=[x0, y0, x1, y1]) for z in range(int(np.ceil(z0)), int(z1) + 1)}


def clicks_to_prompts(clicks: Iterable[Any]) -> VolumePrompts:
    """Clicks ``(x, y, z)`` or ``(x, y, z, label)`` (label 1 inside, 0 outside; default 1) -> one prompt per slice.

    Raises:
        ValueError: a click that is not 3 or 4 numbers, a non-integer ``z`` or a label other than 0 / 1.
    """
    per_slice: dict[int, list[tuple[float, float, int]]] = {}
    for click in clicks:
        values = [float(v) for v in np.asarray(click, dtype=np.float64).reshape(-1)]
        if len(values) not in (3, 4) or not np.isfinite(values).all():
            raise ValueError(f"click {values}: expected (x, y, z) or (x, y, z, label)")
        x, y, z, *label = values
        if not z.is_integer():
            raise ValueError(f"click {values}: slice z={z} is not an integer slice index")
        if label and label[0] not in (0, 1):
            raise ValueError(f"click {values}: label must be 1 (inside) or 0 (outside)")
        per_slice.setdefault(int(z), []).append((x, y, int(label[0]) if label else 1))
    return {z: Prompt([c[:2] for c in cs], [c[2] for c in cs]) for z, cs in sorted(per_slice.items())}


def check_volume_prompts(prompts: Mapping[int, Prompt], shape: tuple[int, int, int], source: str = "volume") -> None:
    """Checks that every prompt lies in the volume: ``0 <= z < D``, clicks ``0 <= x < W``, ``0 <= y < H``, boxes
    ``0 <= x0 <= x1 <= W``, ``0 <= y0 <= y1 <= H``.

    Args:
        prompts: ``{z: Prompt}``.
        shape: ``(D, H, W)`` of the volume.
        source: what the volume is (a file name), named in the messages.

    Raises:
        ValueError: no prompt at all, a slice index that does not exist, or a click / box outside its slice.
    """
    depth, height, width = shape
    if not prompts:
        raise ValueError(f"{source}: no prompt; expected at least one prompted slice")
    missing = sorted(int(z) for z in prompts if not (float(z).is_integer() and 0 <= z < depth))
    if missing:
        raise ValueError(
            f"{source}: prompts on slice(s) {missing}, but the volume has slices 0..{depth - 1} (D = {depth})"
        )
    for z, prompt in sorted(prompts.items()):
        if prompt.num_points == 0 and prompt.box is None:
            raise ValueError(f"{source}: slice {z} has an empty prompt; expected clicks and/or a box")
        outside = [p.tolist() for p in prompt.points if not (0 <= p[0] < width and 0 <= p[1] < height)]
        if outside:
            raise ValueError(
                f"{source}: click(s) {outside} on slice {z} outside the slice; expected 0 <= x < {width}, "
                f"0 <= y < {height}"
            )
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box.tolist()
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                raise ValueError(
                    f"{source}: box {prompt.box.tolist()} on slice {z} outside the slice; expected "
                    f"0 <= x0 <= x1 <= {width}, 0 <= y0 <= y1 <= {height}"
                )


def tight_box_of(mask: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """XYXY box of the foreground of an ``(H, W)`` mask (inclusive pixel corners), grown by ``margin`` pixels and
    clipped to the slice."""
    rows, cols = np.nonzero(mask)
    height, width = mask.shape
    return np.array(
        [
            max(cols.min() - margin, 0),
            max(rows.min() - margin, 0),
            min(cols.max() + margin, width - 1),
            min(rows.max() + margin, height - 1),
        ],
        dtype=np.float64,
    )


def prompts_from_mask(target: np.ndarray, setting: str, rng: RngLike, case_id: str | None = None) -> VolumePrompts:
    """A simulated prompt (:func:`peft_medsa.prompts.make_prompt` ``setting``) on every slice of a ``(D, H, W)``
    binary mask that holds the target; slices in increasing order consume ``rng``."""
    target = np.asarray(target, dtype=bool)
    if target.ndim != 3:
        raise ValueError(f"target has shape {target.shape}; expected a (D, H, W) mask")
    rng = as_generator(rng)
    present = np.flatnonzero(target.reshape(len(target), -1).any(1))
    return {int(z): make_prompt(target[z], setting, rng, case_id) for z in present}


def every_kth(prompts: Mapping[int, Prompt], k: int, offset: int = 0) -> VolumePrompts:
    """Sparse prompting: of the prompted slices in increasing order, keep positions ``offset, offset + k, ...`` (and
    at least one slice, the middle one, when ``offset`` is past the end)."""
    if k < 1:
        raise ValueError(f"k={k}; expected k >= 1")
    order = sorted(prompts)
    kept = order[offset % k :: k] if order else []
    if order and not kept:
        kept = [order[len(order) // 2]]
    return {z: prompts[z] for z in kept}
