"""Text from attestations, policies and file names made safe to print or embed.

Control characters (ESC sequences, CR, LF), lone surrogates (the bytes of a file name that is
not UTF-8) and bidirectional overrides would let an input rewrite a terminal, forge a line of
output or disguise a name, and a lone surrogate cannot even be written to a strict UTF-8
stream; each is shown as \\uXXXX instead.
"""

from __future__ import annotations

import re

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def clean(text: str) -> str:
    """A string safe to print or embed: unsafe characters spelt out as \\uXXXX."""
    if not UNSAFE.search(text):
        return text
    return UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
