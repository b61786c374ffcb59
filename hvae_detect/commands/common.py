"""What the commands share: printing progress, and reading a flag's JSON."""

from __future__ import annotations

import json


def log(msg, quiet=False):
    if not quiet:
        print(msg, flush=True)


def parse_json(value, flag):
    """``value`` parsed as JSON when it is text (a flag's value), else as it is; a ValueError names the flag."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"{flag}: invalid JSON ({e})") from None
    return value
