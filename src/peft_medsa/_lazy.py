"""Post-import hooks: run a callback once a module (``peft``, ``transformers``) has been imported.

``import peft_medsa`` must register its PEFT methods with peft and its model type with transformers, yet loading
either costs seconds that a command failing on a missing file should not pay. So the package registers at once what
is already imported and, for the rest, puts a finder on ``sys.meta_path`` that runs the registration right after the
module's own code, before the ``import`` statement that loaded it returns. Whoever imports ``peft`` after
``peft_medsa`` thus finds the methods registered, exactly as if they had been registered eagerly.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec


class PostImportFinder(MetaPathFinder):
    """Finds nothing itself: for a watched module it asks the other finders, then wraps the loader's
    ``exec_module`` so that the module's callbacks run once the module has been executed."""

    def __init__(self) -> None:
        self.callbacks: dict[str, list[Callable[[], None]]] = {}
        self._searching: set[str] = set()

    def find_spec(self, fullname: str, path=None, target=None) -> ModuleSpec | None:
        if fullname not in self.callbacks or fullname in self._searching:
            return None
        self._searching.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        callbacks = self.callbacks.pop(fullname)
        exec_module = spec.loader.exec_module

        def exec_then_call_back(module) -> None:
            exec_module(module)
            for callback in callbacks:
                callback()

        spec.loader.exec_module = exec_then_call_back  # this loader instance serves this one module
        return spec


_FINDER = PostImportFinder()


def after_import(module_name: str, callback: Callable[[], None]) -> None:
    """Calls ``callback()`` now if ``module_name`` is imported, else right after it is first imported."""
    module = sys.modules.get(module_name)
    if module is not None:
        callback()
        return
    _FINDER.callbacks.setdefault(module_name, []).append(callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


__all__ = ["PostImportFinder", "after_import"]
