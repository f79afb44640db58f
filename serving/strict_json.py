"""Request bodies parsed as JSON *text*: a string holding a lone UTF-16 surrogate is bad input.

JSON may escape a surrogate alone (``"\\ud800"``); Python's parser turns it into a str that
cannot be encoded as UTF-8, so it passed validation and then failed wherever it was
written (the history store, the decision log, even the 422 that echoed it): a 500 for bad
input.  orjson refuses such text while parsing (RFC 8259 leaves it undefined), and is
faster, so bodies go through orjson first.  What orjson refuses for another reason
(``NaN``, ``Infinity``, integers beyond 64 bits) is parsed by the standard library as
FastAPI would, so that those keep their field-named 422s, and is checked for lone
surrogates there.  A JSON decode error becomes FastAPI's usual 422 ``json_invalid``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute

__all__ = ["StrictJSONRequest", "StrictJSONRoute", "loads"]

LONE_SURROGATE = "a string holds a lone UTF-16 surrogate escape (\\ud800-\\udfff): not valid text"


def loads(body: bytes) -> Any:
    """The JSON value of ``body``; :class:`json.JSONDecodeError` when it is not JSON text."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    value = json.loads(body)  # raises json.JSONDecodeError on malformed JSON
    if not _is_text(value):
        raise json.JSONDecodeError(LONE_SURROGATE, body.decode("utf-8", "replace"), 0)
    return value


def _is_text(value: Any) -> bool:
    """True when every string (keys included) in the parsed ``value`` encodes as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


class StrictJSONRequest(Request):
    """A request whose ``json()`` is :func:`loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJSONRoute(APIRoute):
    """A FastAPI route that reads its JSON body with :class:`StrictJSONRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict
