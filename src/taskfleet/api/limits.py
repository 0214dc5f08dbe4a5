"""What a request may carry: the body size limit, enforced while the body is read, and the
JSON values every backend can keep.

Raising `errors.TooLarge` from `receive` lets each route class answer in its own wire
shape (problem+json here, a dialect's own body elsewhere).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskfleet.core import errors


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        too_large = errors.TooLarge(f"the request body must be at most {limit} bytes")
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            if declared.isdigit() and int(declared) > limit:
                raise too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large
            return message

        await self.app(scope, limited_receive, send)


MAX_JSON_DEPTH = 100  #: nesting levels of arrays and objects in a request body
#: NUL, which PostgreSQL refuses in text and jsonb, and lone UTF-16 surrogates ("\ud800"),
#: which JSON decoding lets through but no UTF-8 encoder can write back out.
BAD_TEXT = re.compile("[\x00\ud800-\udfff]")


def check_json(value: object, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuses, with `Invalid`, what JSON decoding lets through but cannot be kept or sent
    back the same on every backend: NaN and ±Infinity (not JSON, though Python reads them),
    NUL characters and lone surrogates in text (`BAD_TEXT`), and nesting deeper than
    `max_depth` (encoders give up near 1000 levels)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if BAD_TEXT.search(item):
                raise errors.Invalid(
                    "text must not contain NUL characters (\\u0000) or lone surrogates"
                )
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise errors.Invalid("numbers must be finite: NaN and Infinity are not JSON")
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise errors.Invalid(f"JSON may nest at most {max_depth} levels deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def check_text(values: Iterable[object]) -> None:
    """Refuses NUL characters in decoded path segments and query parameters."""
    if any("\x00" in str(value) for value in values):
        raise errors.Invalid("the URL must not contain NUL characters (%00)")
