"""JSON bodies read whatever the Content-Type (``curl -d`` sends form encoding), validated into a model."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from corral.common import jsonfast
from corral.common.errors import InvalidFields, InvalidRequest

M = TypeVar("M", bound=BaseModel)


def json_body(model: type[M]) -> Callable[[Request], Coroutine[Any, Any, M]]:
    """A dependency parsing the raw body as JSON into ``model``: ``InvalidRequest`` (400) when it is not JSON,
    ``InvalidFields`` (422) when it does not validate."""

    async def parse(request: Request) -> M:
        raw = await request.body()
        if not raw.strip():
            raise InvalidRequest("missing request body")
        try:
            data = jsonfast.loads_request(raw)
        except jsonfast.RefusedJSON as exc:
            raise InvalidRequest(f"malformed JSON body: {exc}") from None
        except ValueError:  # UnicodeDecodeError too
            raise InvalidRequest("malformed JSON body") from None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = [
                {**e, "loc": ("body", *e["loc"])}
                for e in exc.errors(include_url=False, include_context=False)
            ]
            raise InvalidFields(errors) from None

    return parse


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting the body that ``json_body`` reads."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def add_body_schemas(app: Any, models: list[type[BaseModel]]) -> None:
    """Put the schemas of ``json_body`` models into the OpenAPI components (FastAPI only sees declared bodies)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema  # type: ignore[no-any-return]
        schema: dict[str, Any] = original()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            spec = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(spec.pop("$defs", {}))
            components[model.__name__] = spec
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
