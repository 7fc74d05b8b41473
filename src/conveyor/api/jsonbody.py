"""Strict JSON request bodies: ``StrictJsonRoute`` parses them with ``core.codec``
(orjson) instead of the standard library, so ``NaN``, ``Infinity``, ``-Infinity``,
numbers that overflow a double (``1e400``, a 4,300-digit integer), nesting deeper than
1,024 levels and invalid UTF-8 are refused as invalid JSON (422 naming ``body``),
never turned into floats or ``null``.

Every router with a JSON body uses it: ``APIRouter(route_class=StrictJsonRoute)``.
Imports only ``core.codec`` and FastAPI.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from conveyor.core import codec


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # orjson.JSONDecodeError is a json.JSONDecodeError: FastAPI maps it to a 422.
            self._json = codec.loads_input(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler
