"""JSON from outside drillkit's process: files a user or an attacker may have written, sockets.

:func:`loads` is :func:`json.loads` where a document nested too deeply for the parser (a few
kilobytes of ``[``) fails like any other malformed document, with a
:class:`json.JSONDecodeError`, instead of a :class:`RecursionError` that no caller expects.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["loads"]


def loads(data: str | bytes | bytearray, **kwargs: Any) -> Any:
    """Parse ``data``; :class:`json.JSONDecodeError` (a ValueError) for anything that is not
    a JSON document drillkit can hold, too deep a nesting included."""
    try:
        return json.loads(data, **kwargs)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", "", 0) from None
