"""Starting the app: ``peft-medsa app --model lite-medsam [--adapter NAME=DIR_OR_HUB_ID ...] [--port P]``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .backend import UserError

__all__ = ["launch_app", "run_app"]


def launch_app(app: Any, port: int | None = None, *, block: bool = True) -> str:
    """Serves ``app`` on 127.0.0.1 (``port`` or a free one) and returns its address; ``block=False`` returns at once
    with the server running in a background thread (``app.close()`` stops it)."""
    app.queue(default_concurrency_limit=1)  # one model: one inference at a time
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=False)
    address = app.local_url
    if block:
        print(f"peft-medsa app: serving on {address} (Ctrl+C stops)", flush=True)
        app.block_thread()
    return address


def run_app(args: argparse.Namespace) -> str:
    """The ``app`` subcommand: loads the model and adapters, then serves until interrupted."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # serve locally, report nothing
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError('the app needs Gradio: pip install "peft-medsa[app]"') from None
    from .controller import AppController
    from .models import load_segmenter
    from .ui import build_app

    if args.port is not None and not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: expected 1..65535")
    if getattr(args, "threads", None) is not None:
        import torch

        if args.threads < 1:
            raise UserError(f"--threads {args.threads}: expected at least 1")
        torch.set_num_threads(args.threads)
    segmenter = load_segmenter(args.model, args.adapter, args.device)
    app = build_app(AppController(segmenter))
    try:
        launch_app(app, args.port)
    except OSError as err:
        raise UserError(f"--port {args.port}: cannot serve there ({err})") from None
    return "peft-medsa app: stopped"
