"""Server-side time of a click in the app (``peft-medsa app``) on a 256 px image with LiteMedSAM.

Claim: after the image's first embedding, a click returns its overlay in at most 0.3 s of server time on this CPU.

A click is timed as the app's handler runs it: `AppController.click` (the prompt checked, the mask decoded from the
cached embedding through the predictor: for one click the single-mask output plus SAM's three candidates, i.e. two
decoder calls), `AppController.render` (the overlay at the original size) and Gradio's ``gr.Image.postprocess``
(the PNG written to Gradio's cache, as served to the page). Not included: the HTTP round trip and the browser's
drawing. Each of the 20 rounds clears the prompts (untimed), then times a single positive click at a random pixel
(the costliest click: two decoder calls) and a second click added to it (one decoder call). The image is a real
DDTI ultrasound image resized to 256 x 256 when ``../shared/data`` is present, else a synthetic one.

    python benchmarks/bench_app_click.py              # 20 rounds; prints median, worst and the load average
    python benchmarks/bench_app_click.py --threads 1  # one torch thread (faster when other jobs share the cores)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

DDTI = Path(__file__).resolve().parents[2] / "shared" / "data" / "ddti_thyroid" / "images" / "27_1.png"


def test_image(size: int) -> tuple[np.ndarray, str]:
    """A ``(size, size, 3)`` uint8 image: DDTI 27_1 resized when present, else smooth random blobs."""
    from PIL import Image

    if DDTI.is_file():
        return np.asarray(Image.open(DDTI).convert("RGB").resize((size, size))), f"DDTI {DDTI.name}"
    rng = np.random.default_rng(0)
    grid = np.linspace(-1, 1, size)
    blob = np.exp(-((grid[None] - 0.2) ** 2 + (grid[:, None] + 0.1) ** 2) / 0.1)
    grey = np.clip(blob * 200 + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), "synthetic"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the machine has 2 cores)")
    args = parser.parse_args()

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr
    import torch
    from PIL import Image

    from peft_medsa.app import AppController, load_segmenter
    from peft_medsa.app.controller import MODES

    torch.set_num_threads(args.threads)
    image, source = test_image(args.size)
    folder = Path(gr.utils.get_upload_folder()) / "bench-app-click"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "bench.png")

    controller = AppController(load_segmenter("lite-medsam", []))
    canvas = gr.Image(type="numpy", format="png", interactive=False)
    state = controller.new_state()
    controller.open(state, folder / "bench.png")
    start = time.perf_counter()
    controller.click(state, args.size / 2, args.size / 2, MODES[0])  # the first click embeds the image
    first = time.perf_counter() - start

    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {"single click": [], "added click": []}
    for _ in range(args.clicks):
        controller.clear(state)
        for (x, y), kind in zip(rng.integers(0, args.size, (2, 2)), times):
            start = time.perf_counter()
            controller.click(state, float(x), float(y), MODES[0])
            canvas.postprocess(controller.render(state))
            times[kind].append(time.perf_counter() - start)
    assert controller.segmenter.embed_count == 1, "a click re-embedded the image"
    load = os.getloadavg()
    print(f"image: {source}, {args.size} x {args.size}; LiteMedSAM zero-shot, torch threads {args.threads}")
    print(f"first click (embedding + decoding): {first:.3f} s")
    for kind, values in times.items():
        print(
            f"{kind}, {len(values)} after the embedding: median {statistics.median(values):.3f} s, worst "
            f"{max(values):.3f} s (target <= 0.3 s)"
        )
    print(f"load average during the run (1, 5, 15 min): {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}")


if __name__ == "__main__":
    main()
