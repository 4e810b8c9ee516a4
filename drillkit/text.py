"""Text from outside (scenario names, targets, fault evidence, error messages, file names) made
safe for where it is shown.

A terminal obeys escape sequences: a scenario named ``\\x1b]0;...`` would retitle the window,
``\\x1b[2J`` clear it. XML 1.0 cannot hold most control characters at all: one in a JUnit
message makes the whole file unparseable for CI. Both replace what they cannot show with a
visible escape (``\\x1b``), so nothing is lost and nothing acts.
"""

from __future__ import annotations

import re

__all__ = ["printable", "xml_safe"]

# C0 controls but tab and newline, DEL, and the C1 controls (which some terminals obey).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# What XML 1.0 cannot hold: C0 controls but tab, newline and carriage return, lone
# surrogates, and U+FFFE/U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character a terminal would obey shown as an escape."""
    return _UNPRINTABLE.sub(_escape, text)


def xml_safe(text: str) -> str:
    """``text`` with every character XML 1.0 cannot hold shown as an escape."""
    return _NOT_XML.sub(_escape, text)
