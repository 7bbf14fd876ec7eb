"""Pushing Med-SA adapters (one per task or organ) to the Hugging Face Hub, and loading them into one model.

Adapter references (``load_organ_adapters``): a local adapter folder, a Hub repo id ``"owner/name"``, or
``"owner/name/sub/folder"`` for an adapter stored in a subfolder of a repo (as written by
:func:`push_adapters_to_hub` into a shared repo).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .cards import write_model_card

ADAPTER_CONFIG = "adapter_config.json"


def _adapter_folders(source: Any, adapter_names: Sequence[str] | None, workdir: Path) -> dict[str, Path]:
    """``{name: folder}`` of the adapters to push from a PeftModel or a folder (one adapter or one per subfolder)."""
    if hasattr(source, "peft_config") and hasattr(source, "save_pretrained"):
        names = list(adapter_names or source.peft_config)
        unknown = [n for n in names if n not in source.peft_config]
        if unknown:
            raise ValueError(f"adapter(s) {unknown} not in the model; it has {sorted(source.peft_config)}")
        folders = {}
        for name in names:
            saved = workdir / f"saved-{name}"
            source.save_pretrained(str(saved), selected_adapters=[name])
            # peft writes the "default" adapter at the root and any other one in a subfolder named after it
            folders[name] = saved if name == "default" else saved / name
        return folders
    if isinstance(source, Mapping):
        found = {str(name): Path(path) for name, path in source.items()}
        missing = {n: str(p) for n, p in found.items() if not (p / ADAPTER_CONFIG).is_file()}
        if missing:
            raise FileNotFoundError(f"no {ADAPTER_CONFIG} in the folder(s) given for {missing}")
        folder = None
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not an adapter folder nor a PeftModel")
    if folder is None:
        pass
    elif (folder / ADAPTER_CONFIG).is_file():
        found = {folder.name: folder}
    else:
        found = {p.name: p for p in sorted(folder.iterdir()) if (p / ADAPTER_CONFIG).is_file()}
    if not found:
        raise FileNotFoundError(
            f"{folder} holds no {ADAPTER_CONFIG}, neither itself nor in a subfolder (one per task or organ)"
        )
    if adapter_names is not None:
        missing = [n for n in adapter_names if n not in found]
        if missing:
            raise ValueError(f"adapter(s) {missing} not found in {folder}; it has {sorted(found)}")
        found = {n: found[n] for n in adapter_names}
    copies = {}
    for name, path in found.items():
        copies[name] = workdir / name
        shutil.copytree(path, copies[name])
    return copies


def push_adapters_to_hub(
    folder_or_model: Any,
    repo_id: str,
    *,
    adapter_names: Sequence[str] | None = None,
    card_info: Mapping[str, Any] | Mapping[str, Mapping[str, Any]] | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload Med-SA adapter",
    api: Any | None = None,
) -> dict[str, str]:
    """Uploads each adapter (one per task or organ) with its model card.

    Args:
        folder_or_model: A ``PeftModel`` (each of its adapters is saved), an adapter folder (one adapter), a
            folder whose subfolders are adapter folders (one per organ, e.g. ``spleen/``, ``liver/``), or a mapping
            ``{name: adapter folder}`` (e.g. ``{"liver": "runs/btcv/liver/best"}``).
        repo_id: ``"owner/name"``: one repo, each adapter in a subfolder named after it (a single adapter goes to the
            root); ``"owner/medsa-btcv-{name}"``: one repo per adapter (``{name}`` = adapter name).
        adapter_names: Only these adapters (default: all).
        card_info: Arguments of :func:`peft_medsa.hub.cards.render_model_card`, shared, or ``{name: {...}}`` per
            adapter. An adapter folder with its own README.md (not peft's stub) and no card info keeps it; otherwise a
            card is rendered (``organ`` defaults to the adapter name when there are several).
        private: Create private repos.
        token: Hub token (default: the logged-in one).
        commit_message: Prefix of the commit messages.
        api: An ``huggingface_hub.HfApi``-like object (tests pass a recorder); default ``HfApi(token=token)``.

    Returns:
        ``{adapter name: reference}`` usable by :func:`load_organ_adapters` (``"owner/name"`` or
        ``"owner/name/<adapter>"``).
    """
    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id must be 'owner/name' (optionally with '{{name}}'), got {repo_id!r}")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    per_repo = "{name}" in repo_id
    references: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="medsa-push-") as tmp:
        folders = _adapter_folders(folder_or_model, adapter_names, Path(tmp))
        several = len(folders) > 1
        created: set[str] = set()
        for name, folder in folders.items():
            info = dict(card_info or {})
            if info and all(isinstance(v, Mapping) for v in info.values()):
                info = dict(info.get(name, {}))
            target = repo_id.format(name=name) if per_repo else repo_id
            path_in_repo = "" if per_repo or not several else name
            reference = target if not path_in_repo else f"{target}/{path_in_repo}"
            if info or not _has_own_card(folder):
                if several:
                    info.setdefault("organ", name)
                info.setdefault("repo_id", reference)
                write_model_card(folder, **info)
            if target not in created:
                api.create_repo(repo_id=target, private=private, exist_ok=True, repo_type="model")
                created.add(target)
            api.upload_folder(
                repo_id=target,
                folder_path=str(folder),
                path_in_repo=path_in_repo or None,
                commit_message=f"{commit_message}: {name}",
                repo_type="model",
            )
            references[name] = reference
    return references


def _has_own_card(folder: Path) -> bool:
    """True if ``folder/README.md`` exists and is not the stub that ``PeftModel.save_pretrained`` writes."""
    readme = folder / "README.md"
    return readme.is_file() and "[More Information Needed]" not in readme.read_text(encoding="utf-8")


def _split_reference(reference: str | Path) -> tuple[str, str | None]:
    """Local folder -> (folder, None); ``owner/name[/sub/dir]`` -> (repo id, subfolder)."""
    text = str(reference)
    if Path(text).expanduser().is_dir():
        return str(Path(text).expanduser()), None
    parts = text.strip("/").split("/")
    if len(parts) < 2:
        raise ValueError(f"{text!r} is neither a local adapter folder nor a Hub id 'owner/name[/subfolder]'")
    return "/".join(parts[:2]), ("/".join(parts[2:]) or None)


def _fetch_subfolder(repo_id: str, subfolder: str, hub_kwargs: Mapping[str, Any]) -> str:
    """Local path of ``subfolder`` of a Hub repo (downloaded, or from the cache when offline)."""
    from huggingface_hub import snapshot_download

    allowed = {k: v for k, v in hub_kwargs.items() if k in ("revision", "token", "cache_dir", "local_files_only")}
    root = snapshot_download(repo_id, allow_patterns=[f"{subfolder}/*"], **allowed)
    folder = Path(root) / subfolder
    if not (folder / ADAPTER_CONFIG).is_file():
        raise FileNotFoundError(f"{repo_id}: no {ADAPTER_CONFIG} in subfolder {subfolder!r}")
    return str(folder)


def load_organ_adapters(
    model: Any, adapters: Mapping[str, str | Path], *, is_trainable: bool = False, **hub_kwargs: Any
):
    """Loads one Med-SA adapter per organ into one model: ``PeftModel.from_pretrained`` then ``load_adapter``.

    Args:
        model: The base ``SamModel`` (not yet a ``PeftModel``).
        adapters: ``{organ: reference}``; references are local folders, Hub ids or ``owner/name/subfolder``.
            Offline use: with ``HF_HUB_OFFLINE=1`` Hub ids are read from the local Hugging Face cache.
        is_trainable: Load the adapters trainable.
        hub_kwargs: Passed to the loaders (``revision``, ``token``, ``cache_dir``, ...).

    Returns:
        The ``PeftModel`` with one adapter named after each organ; the first organ is active. Use
        ``model.set_adapter(organ)``, or a mixed batch ``model(..., adapter_names=["liver", "spleen", ...])`` with one
        organ per image.

    Raises:
        ValueError: ``adapters`` is empty or an organ name is not a valid adapter name.
    """
    from peft import PeftModel

    import peft_medsa  # noqa: F401  (registers the MEDSA method)

    if not adapters:
        raise ValueError("load_organ_adapters needs at least one {organ: adapter reference}")
    bad = [name for name in adapters if not name or "." in name or "/" in name]
    if bad:
        raise ValueError(f"organ names must be non-empty and contain no '.' or '/': {bad}")
    peft_model = None
    for organ, reference in adapters.items():
        source, subfolder = _split_reference(reference)
        kwargs = dict(hub_kwargs)
        if subfolder:  # peft 0.21 joins the subfolder twice for Hub ids: fetch that folder, then load it locally
            source = _fetch_subfolder(source, subfolder, hub_kwargs)
        if peft_model is None:
            peft_model = PeftModel.from_pretrained(
                model, source, adapter_name=organ, is_trainable=is_trainable, **kwargs
            )
        else:
            peft_model.load_adapter(source, adapter_name=organ, is_trainable=is_trainable, **kwargs)
    peft_model.set_adapter(next(iter(adapters)))
    return peft_model


__all__ = ["load_organ_adapters", "push_adapters_to_hub"]
