"""TGI's OpenAPI spec (``shared/reference/tgi/openapi.json``) as JSON Schema, for checking what
the simulator answers."""

from __future__ import annotations

import json

import jsonschema

from support.helpers import ROOT

SPEC_PATH = ROOT.parent / "shared" / "reference" / "tgi" / "openapi.json"

def _spec() -> dict:
    return json.loads(SPEC_PATH.read_text())


def _nullable(node: object) -> object:
    """OpenAPI 3.0's ``nullable: true`` in JSON Schema terms (null is also allowed)."""
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable(v) for k, v in node.items()}
    if node.pop("nullable", False):
        return {"anyOf": [node, {"type": "null"}]}
    return node


SPEC = _spec()
COMPONENTS = _nullable(SPEC["components"])


def check_schema(instance: object, name: str) -> None:
    """Validate against components/schemas/<name>, resolving the spec's $refs."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": COMPONENTS}
    jsonschema.Draft202012Validator(schema).validate(instance)
