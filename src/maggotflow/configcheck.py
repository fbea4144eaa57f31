"""The workflow's configuration checked against its JSON schema, one line per mistake.

`snakemake.utils.validate` reports a bad key by printing the whole schema (~1,000 lines).
Here a key the schema does not know is named with its nearest valid name (difflib), and a
bad value with its key path, the value and the constraint it breaks. Every mistake of the
configuration is reported at once (unknown keys first, then bad values), so that a user
fixes them all in one go. No Snakemake import: the Snakefile calls `check_config_or_exit`
before `validate` (which then fills in defaults).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml


class ConfigError(ValueError):
    """Configuration mistakes, described one per line."""


def load_schema(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _object_schemas(schema: Mapping) -> Iterator[Mapping]:
    """The schema and its anyOf/oneOf/allOf alternatives that describe objects."""
    yield schema
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, ()):
            if isinstance(sub, Mapping):
                yield from _object_schemas(sub)


def unknown_keys(config: Any, schema: Mapping, path: tuple = ()) -> Iterator[tuple[tuple, str, str | None]]:
    """(path of the section, unknown key, nearest known key or None) for every key of
    `config` that a section with `additionalProperties: false` does not declare (also in
    the objects of a list, e.g. ensemble.members.0)."""
    if isinstance(config, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(config):
            yield from unknown_keys(item, schema["items"], path + (index,))
        return
    if not isinstance(config, Mapping):
        return
    properties: dict = {}
    closed = False
    for sub in _object_schemas(schema):
        properties.update(sub.get("properties", {}))
        closed = closed or sub.get("additionalProperties") is False
    for key, value in config.items():
        if key in properties:
            yield from unknown_keys(value, properties[key], path + (key,))
        elif closed:
            near = difflib.get_close_matches(str(key), [str(k) for k in properties], n=1, cutoff=0.6)
            yield path, str(key), near[0] if near else None
        elif isinstance(schema.get("additionalProperties"), Mapping):
            yield from unknown_keys(value, schema["additionalProperties"], path + (key,))


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _constraint(error) -> str:
    """The broken constraint in words (jsonschema's own message can hold the whole schema)."""
    kind, want = error.validator, error.validator_value
    if kind == "type":
        types = [want] if isinstance(want, str) else list(want)
        return "must be " + " or ".join("null" if t == "null" else f"a {t}" if t != "integer" else "an integer"
                                        for t in types)
    if kind == "enum":
        return "must be one of " + ", ".join(map(str, want))
    words = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kind in words:
        return f"must be {words[kind]} {want}"
    if kind == "pattern":
        return f"must match {want}"
    if kind == "minItems":
        return f"needs at least {want} item(s)"
    if kind == "maxItems":
        return f"takes at most {want} item(s)"
    if kind == "required":
        return _short(error.message, 120)
    if kind in ("anyOf", "oneOf"):
        return "matches none of the allowed forms (see config/README.md)"
    return f"breaks {kind}: {_short(want)}"


def _without(config: Any, path: tuple, key: str) -> Any:
    """A copy of `config` without the key `key` of the section at `path`."""
    if not path:
        return {k: v for k, v in config.items() if str(k) != key}
    if isinstance(config, list):
        return [_without(v, path[1:], key) if i == path[0] else v for i, v in enumerate(config)]
    return {k: _without(v, path[1:], key) if k == path[0] else v for k, v in config.items()}


def config_errors(config: Mapping, schema: Mapping | str | Path) -> list[str]:
    """One line per mistake of `config`: every unknown key (with its nearest valid name),
    then every bad value (key path, value, the constraint it breaks), in key order; [] when
    the configuration is valid."""
    if not isinstance(schema, Mapping):
        schema = load_schema(schema)
    lines = []
    known = config
    for path, key, near in list(unknown_keys(config, schema)):
        where = ".".join(map(str, path + (key,)))
        hint = f"; did you mean {'.'.join(map(str, path + (near,)))}?" if near else ""
        lines.append(f"{where}: unknown key{hint} (the keys: config/README.md)")
        known = _without(known, path, key)  # said once: not again as a bad section

    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema)
    for error in sorted(validator_class(schema).iter_errors(known), key=lambda e: [str(p) for p in e.absolute_path]):
        error = jsonschema.exceptions.best_match([error])  # an anyOf's closest alternative
        where = ".".join(map(str, error.absolute_path)) or "config"
        line = f"{where}={_short(error.instance)}: {_constraint(error)}"
        if line not in lines:
            lines.append(line)
    return lines


def check_config(config: Mapping, schema: Mapping | str | Path) -> None:
    """ConfigError, one line per mistake (`config_errors`), when `config` has any."""
    lines = config_errors(config, schema)
    if lines:
        raise ConfigError("\n".join(lines))


def check_config_or_exit(config: Mapping, schema: Mapping | str | Path) -> Mapping:
    """`check_config`, or stop the program with its lines ("config: ...", one per mistake)
    on stderr; returns `config` (so it can be passed on)."""
    try:
        check_config(config, schema)
    except ConfigError as err:
        raise SystemExit("\n".join(f"config: {line}" for line in str(err).splitlines())) from None
    return config
