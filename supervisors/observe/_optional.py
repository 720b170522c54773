"""The optional packages observability needs: a clear ImportError naming the extra."""

from __future__ import annotations

import importlib.util

__all__ = ["need"]


def need(module: str, extra: str) -> None:
    """Raise ImportError naming `inorder[extra]` if `module` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        msg = f"{module} is not installed: pip install 'inorder[{extra}]'"
        raise ImportError(msg, name=module)
