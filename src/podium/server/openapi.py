"""The OpenAPI document at /v1/openapi.json, built from the route table and the kinds' schemas."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from podium import __version__
from podium.model.types import Allocation, Event, Job, Node, PlacementFailure

_KINDS = (Job, Node, Allocation, Event, PlacementFailure)


def openapi_document(routes: list[tuple[str, str, str, str]]) -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        _KINDS, ref_template="#/components/schemas/{name}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for method, path, name, summary in routes:
        clean = re.sub(r"\{(\w+):\w+\}", r"{\1}", path)
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in re.findall(r"\{(\w+)", path)
        ]
        op: dict[str, Any] = {
            "operationId": name,
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "400": {"description": "Invalid input; `problems` lists each field"},
                "404": {"description": "Not found"},
                "409": {"description": "Revision conflict"},
            },
        }
        if method == "POST" and path.startswith("/v1/jobs"):
            op["requestBody"] = {
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Job"}},
                    "application/yaml": {"schema": {"type": "string"}},
                }
            }
        paths.setdefault(clean, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "podium", "version": __version__},
        "paths": paths,
        "components": {"schemas": components},
    }
