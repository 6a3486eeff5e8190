"""Settings helpers for every pydantic settings model (train, tracking, the flows' run configs).

`parse_overrides` reads `--set a.b=c` pairs, `apply_overrides` applies them to a model,
`flatten_params` turns nested settings into MLflow params (dotted keys, string values).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tasks.core.errors import TbprError

SettingsT = TypeVar("SettingsT", bound=BaseModel)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["a.b=1", "c=x"]` -> `{"a": {"b": 1}, "c": "x"}`; values are JSON when they parse, else strings."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise TbprError(f"override {pair!r} is not key=value; write e.g. --set model.embed_dim=128")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *parents, leaf = key.strip().split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TbprError(f"override {pair!r} conflicts with an earlier override of {part!r}")
        node[leaf] = value
    return nested


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `update` merged in, recursively for nested dicts."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(settings: SettingsT, pairs: list[str]) -> SettingsT:
    """`settings` with `--set key=value` pairs applied and validated; a bad key or value -> TbprError."""
    data = deep_merge(settings.model_dump(mode="json"), parse_overrides(pairs))
    try:
        return type(settings).model_validate(data)
    except ValidationError as exc:
        raise TbprError(
            f"invalid settings: {validation_summary(exc)}; check the --set keys and values"
        ) from exc


def validation_summary(exc: ValidationError) -> str:
    """A pydantic error as one line: `field.path: message; ...` (no URLs, no input dumps)."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings -> dotted keys with string values, the one encoding of MLflow params:
    `{"model": {"embed_dim": 32}}` -> `{"model.embed_dim": "32"}`; lists are JSON (`"[8, 16]"`),
    lists of tables get their index (`jobs.1.top_k`), an empty mapping is `"{}"`."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
        elif isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value):
            flat.update(flatten_params({str(i): v for i, v in enumerate(value)}, f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(list(value))
        else:
            flat[name] = "{}" if isinstance(value, Mapping) else str(value)
    return flat
