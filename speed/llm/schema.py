"""The strict subset of a JSON Schema that OpenAI's Structured Outputs (`json_schema`, strict)
accept, derived from the full schema a stage asks for.

Strict mode compiles the schema into a decoding grammar and refuses (HTTP 400) anything outside
its subset: every object must list all its properties in `required` and set
`additionalProperties: false`, and the length, range, size, pattern and format keywords are not
permitted (Structured Outputs guide, "Supported schemas"; the most restrictive version of that
list, which still holds for fine-tuned models, so a schema derived here is accepted by every
snapshot). The derived schema keeps the structure; what it drops is listed by `dropped` and
enforced after decoding by the stages' validators (speed/data/validate.py and the parsers), the
same checks that count drops for every backend and mode.

Local engines (vLLM, transformers in-process) decode with the full schema.
"""

from __future__ import annotations

from typing import Any

# Keywords strict mode does not permit, by the type they constrain.
UNSUPPORTED: frozenset[str] = frozenset(
    {
        # strings
        "minLength", "maxLength", "pattern", "format",
        # numbers
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
        # objects
        "patternProperties", "unevaluatedProperties", "propertyNames", "minProperties",
        "maxProperties",
        # arrays
        "unevaluatedItems", "contains", "minContains", "maxContains", "minItems", "maxItems",
        "uniqueItems",
    }
)  # fmt: skip
# A bounded integer (a judge's answer index) becomes an enum of its values, which strict mode
# decodes exactly; wider ranges are left to validation after decoding.
MAX_ENUM_RANGE = 256
_SCHEMA_MAPS = ("properties", "$defs", "definitions")  # name -> schema
_SCHEMA_LISTS = ("anyOf",)


def _is_object(node: dict[str, Any]) -> bool:
    t = node.get("type")
    return t == "object" or (isinstance(t, list) and "object" in t) or "properties" in node


def _int_enum(node: dict[str, Any]) -> list[int] | None:
    lo, hi = node.get("minimum"), node.get("maximum")
    if node.get("type") != "integer" or "enum" in node:
        return None
    if isinstance(lo, int) and isinstance(hi, int) and 0 <= hi - lo < MAX_ENUM_RANGE:
        return list(range(lo, hi + 1))
    return None


def string_fields(max_chars: dict[str, int], min_chars: int = 0) -> dict[str, Any]:
    """A closed object of required string fields, each at most `max_chars[name]` characters
    (and at least `min_chars`, when > 0): the shape of every structured answer the stages ask
    for."""
    bounds = {"minLength": min_chars} if min_chars else {}
    return {
        "type": "object",
        "properties": {
            k: {"type": "string", **bounds, "maxLength": n} for k, n in max_chars.items()
        },
        "required": list(max_chars),
        "additionalProperties": False,
    }


def strict_subset(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with every object closed and fully required, bounded integers as enums, and no
    keyword strict mode refuses. A property the full schema leaves optional becomes nullable
    (strict mode's way of saying "may be absent")."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in UNSUPPORTED:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: strict_subset(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [strict_subset(sub) for sub in value]
        elif key == "items" and isinstance(value, dict):
            out[key] = strict_subset(value)
        else:
            out[key] = value
    if (values := _int_enum(schema)) is not None:
        out["enum"] = values
    if _is_object(schema):
        props = out.setdefault("properties", {})
        optional = [k for k in props if k not in schema.get("required", [])]
        for name in optional:
            props[name] = {"anyOf": [props[name], {"type": "null"}]}
        out["required"] = list(props)
        out["additionalProperties"] = False
    return out


Path = tuple[str, ...]


def dropped(schema: dict[str, Any], path: Path = ()) -> list[tuple[Path, str]]:
    """(path, keyword) of every constraint of `schema` that strict mode does not permit. A path
    is the property names and `[]` (array items) from the root. Validation after decoding must
    enforce each of these: `json_object` and `none` decode none of them, and `json_schema`
    decodes only the bounded integers it turned into enums."""
    found = [(path, k) for k in schema if k in UNSUPPORTED]
    for name, sub in (schema.get("properties") or {}).items():
        found += dropped(sub, (*path, name))
    if isinstance(schema.get("items"), dict):
        found += dropped(schema["items"], (*path, "[]"))
    for sub in schema.get("anyOf") or []:
        found += dropped(sub, path)
    return found
