"""Register the project's peft methods when peft is imported, without importing peft here.

`import trainers` calls `register_with_peft()`. If peft is already imported the methods are
registered at once; otherwise a one-shot import hook registers them right after peft's own
import finishes. So `import trainers; peft.PeftModel.from_pretrained(base, "runs/loFF")`
works, while commands that never touch peft (`interp --help`) do not pay for importing it.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys


def _register() -> None:
    try:
        from trainers.methods.peft_types import register_all
    except ImportError as exc:
        if "partially initialized module" in str(exc):
            return  # peft_types itself imported peft; it registers at its end
        raise
    register_all()


class _AfterPeftImport(importlib.abc.MetaPathFinder):
    """Finds 'peft' like the normal finders do, and registers our methods once it has run."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "peft":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from recursing
        spec = importlib.util.find_spec("peft")
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            _register()

        spec.loader.exec_module = exec_then_register
        return spec


def register_with_peft() -> None:
    if "peft" in sys.modules:
        _register()
    elif not any(isinstance(finder, _AfterPeftImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterPeftImport())
