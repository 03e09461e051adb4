"""The reference receiver (``sync-workers serve``): the contract's endpoint over the archive store.

Needs the ``server`` extra (FastAPI, uvicorn, fastjsonschema). Nothing is imported until used,
so the worker, which imports ``sync_workers.receiver.cli`` for its command line, never needs them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ReceiverService", "Settings", "Tokens", "create_app", "create_router"]

_WHERE = {"create_app": "app", "create_router": "app", "ReceiverService": "service", "Settings": "service",
          "Tokens": "auth"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
