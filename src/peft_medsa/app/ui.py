"""The Gradio page: components and event wiring only; every action is an `AppController` method.

Each handler returns the same outputs (state, image, candidates, message, slice slider, window, adapter), so the
page always shows the state as it is; a failed action shows its message (and a warning toast) and changes nothing.
Handlers listen to ``.input`` / ``.select`` (user actions), never ``.change``, so that redrawing does not re-trigger.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from .backend import UserError
from .controller import MODES, AppController, AppState
from .document import WINDOWS
from .export import export_mask, export_prompts

__all__ = ["build_app"]

HELP = """\
Open an image (PNG, JPEG, GIF, TIFF, BMP, DICOM) or a volume (NIfTI, a zipped DICOM series), then click on it:
positive / negative clicks, or a box by two opposite corners. The mask is redrawn after each prompt from the cached
image embedding. One click offers SAM's three candidates with their predicted IoU. Switching the adapter keeps the
prompts. Exports: the mask (PNG at the original size, NIfTI for volumes) and the prompts as JSON for
`peft-medsa predict --prompts`."""


def _error_text(err: Exception) -> str:
    text = " ".join(str(err).split())
    return f"Error: {text}" if isinstance(err, UserError) else f"Error ({type(err).__name__}): {text}"


def build_app(controller: AppController, title: str = "peft-medsa: interactive segmentation"):
    """The ``gr.Blocks`` page driving ``controller`` (not launched)."""
    def view(state: AppState, message: str) -> tuple:
        names, chosen = controller.candidate_labels(state)
        document = state.document
        is_volume = document is not None and document.depth > 1
        return (
            state,
            controller.render(state),
            gr.update(choices=names, value=chosen, visible=bool(names)),
            message,
            gr.update(visible=is_volume, maximum=max(document.depth - 1, 1) if document else 1, value=state.z),
            gr.update(visible=document is not None and document.needs_window, value=state.window),
            gr.update(choices=controller.segmenter.adapters, value=state.adapter),
        )

    def guarded(action: Callable[..., str]) -> Callable[..., tuple]:
        def handler(state: AppState, *args: Any) -> tuple:
            try:
                message = action(state, *args)
            except Exception as err:  # shown on the page; the state is unchanged by a failed action
                message = _error_text(err)
                gr.Warning(message)
            return view(state, message)

        return handler

    def click(state: AppState, index: Any, mode: str) -> str:
        if not (isinstance(index, (list, tuple)) and len(index) == 2):
            raise UserError("click ignored: outside the image")
        return controller.click(state, float(index[0]), float(index[1]), mode)

    def on_select(state: AppState, mode: str, event: gr.SelectData) -> tuple:
        return guarded(click)(state, event.index, mode)

    def on_upload(state: AppState, path: str | None) -> tuple:
        if not path:
            return view(state, controller.describe(state))
        return guarded(lambda s: controller.open(s, path, Path(path).name))(state)

    def on_candidate(state: AppState, label: str) -> tuple:
        names, _ = controller.candidate_labels(state)
        return guarded(lambda s: controller.choose(s, names.index(label) if label in names else -1))(state)

    def exporter(write: Callable[[AppState, Path], Path]) -> Callable[[AppState], tuple]:
        def handler(state: AppState) -> tuple:
            try:
                path = write(state, Path(tempfile.mkdtemp(prefix="peft-medsa-export-")))
            except Exception as err:
                gr.Warning(_error_text(err))
                return None, _error_text(err)
            return str(path), f"exported {path.name}"

        return handler

    with gr.Blocks(title=title) as app:
        state = gr.State(controller.new_state())
        gr.Markdown(f"## {title}\n\n{HELP}")
        with gr.Row():
            with gr.Column(scale=3):
                canvas = gr.Image(
                    label="image (click to prompt)", interactive=False, type="numpy", format="png",
                    elem_id="canvas", buttons=["fullscreen"],
                )
                slider = gr.Slider(0, 1, value=0, step=1, label="slice", visible=False, elem_id="slice")
                message = gr.Textbox(label="message", value="open an image or a volume", interactive=False,
                                     elem_id="message")
            with gr.Column(scale=2):
                upload = gr.File(label="open image or volume", type="filepath", elem_id="upload")
                mode = gr.Radio(list(MODES), value=MODES[0], label="a click adds", elem_id="mode")
                with gr.Row():
                    undo = gr.Button("Undo", elem_id="undo")
                    clear = gr.Button("Clear", elem_id="clear")
                adapter = gr.Dropdown(controller.segmenter.adapters, value=controller.default_adapter,
                                      label="adapter", elem_id="adapter")
                window = gr.Radio(list(WINDOWS), value=next(iter(WINDOWS)), label="window", visible=False,
                                  elem_id="window")
                candidates = gr.Radio([], label="mask candidates", visible=False, elem_id="candidates")
                with gr.Row():
                    export_mask_button = gr.Button("Export mask", elem_id="export-mask")
                    export_prompts_button = gr.Button("Export prompts", elem_id="export-prompts")
                mask_file = gr.File(label="mask", interactive=False, elem_id="mask-file")
                prompts_file = gr.File(label="prompts", interactive=False, elem_id="prompts-file")
                with gr.Accordion("load another adapter", open=False):
                    adapter_spec = gr.Textbox(label="NAME=DIR_OR_HUB_ID", elem_id="adapter-spec")
                    add_adapter = gr.Button("Load adapter", elem_id="add-adapter")

        outputs = [state, canvas, candidates, message, slider, window, adapter]
        upload.upload(on_upload, [state, upload], outputs)
        canvas.select(on_select, [state, mode], outputs)
        undo.click(guarded(controller.undo), [state], outputs)
        clear.click(guarded(controller.clear), [state], outputs)
        adapter.input(guarded(controller.set_adapter), [state, adapter], outputs)
        window.input(guarded(controller.set_window), [state, window], outputs)
        slider.release(guarded(controller.set_slice), [state, slider], outputs)
        candidates.input(on_candidate, [state, candidates], outputs)
        add_adapter.click(guarded(controller.add_adapter), [state, adapter_spec], outputs)
        export_mask_button.click(exporter(export_mask), [state], [mask_file, message])
        export_prompts_button.click(exporter(export_prompts), [state], [prompts_file, message])
    return app
