"""Load a YAML file into a pydantic model with errors that name the key, the value and the line.

Each process has one config model (edge node, aggregator); both load through here so that a
mistake reads the same everywhere::

    Error: node.yaml line 7: retention.max_age_days = -3: Input should be greater than 0
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file that cannot be used; the message is meant for the operator."""


def _line_index(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map every key path in a composed YAML document to its 1-based line."""
    lines: dict[tuple[Any, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, key_node.value)
            lines[key_path] = key_node.start_mark.line + 1
            lines.update(_line_index(value_node, key_path))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            lines.update(_line_index(item, (*path, i)))
    return lines


def load_yaml_model(model: type[M], path: str | os.PathLike[str], **overrides: Any) -> M:
    """Read ``path`` and validate it as ``model``; ``overrides`` (dotted keys) win over the file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc.strerror or exc}") from exc
    try:
        composed = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{p}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    lines = _line_index(composed) if composed is not None else {}
    return validate_model(model, apply_overrides(data, overrides), source=str(p), lines=lines)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``kiosk.port``) in a nested dict; ``None`` values are ignored."""
    for dotted, value in overrides.items():
        if value is None:
            continue
        target = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[leaf] = value
    return data


def validate_model(
    model: type[M],
    data: dict[str, Any],
    *,
    source: str = "config",
    lines: dict[tuple[Any, ...], int] | None = None,
) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, data, source, lines or {})) from None


def format_errors(
    exc: ValidationError, data: dict[str, Any], source: str, lines: dict[tuple[Any, ...], int]
) -> str:
    out = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(part) for part in loc) or "(top level)"
        line = _nearest_line(loc, lines)
        where = f"{source} line {line}" if line else source
        if err["type"] == "missing":
            out.append(f"{where}: {key} is required")
            continue
        value = _lookup(data, loc)
        shown = (
            "***" if any("password" in str(p) or "secret" in str(p) for p in loc) else repr(value)
        )
        out.append(f"{where}: {key} = {shown}: {err['msg']}")
    return "\n".join(out)


def _nearest_line(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


#: Config keys whose values are secrets in themselves (not file names): masked in the log.
SECRET_KEYS = frozenset({"share_group"})
MASK = "**********"


def masked_dump(model: BaseModel) -> dict[str, Any]:
    """The effective config for the start-up log: JSON-safe, with SecretStr values and the
    keys in :data:`SECRET_KEYS` (for example the aggregators' secret share group) masked."""
    return _mask(model.model_dump(mode="json"))


def _mask(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: MASK if k in SECRET_KEYS and v else _mask(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_mask(v) for v in data]
    return data


def read_secret(file: str | os.PathLike[str] | None, env: str | None = None) -> str | None:
    """A secret from the environment variable ``env`` or else from ``file`` (stripped)."""
    if env and os.environ.get(env):
        return os.environ[env]
    if file is None:
        return None
    try:
        return Path(file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read secret file {file}: {exc.strerror or exc}") from exc


def model_reference(model: type[BaseModel]) -> str:
    """Markdown tables of every key of a config model, from its fields' types, defaults and bounds.

    The top-level keys come first, then one section per nested model; the generated docs
    (docs/config.md, docs/aggregator-config.md) embed this text and their tests check it is current.
    """
    parts = ["## top level", "", *_reference_rows(model, ""), ""]
    parts += _sections(model, "")
    return "\n".join(parts)


def _sections(model: type[BaseModel], prefix: str) -> list[str]:
    """One section per nested model, then its own nested models (``## adaptation.privacy``)."""
    parts: list[str] = []
    for name, f in model.model_fields.items():
        sub = section_model(f.annotation)
        if sub is not None:
            key = f"{prefix}{name}"
            parts += [f"## {key}", "", f.description or "", "", *_reference_rows(sub, f"{key}.")]
            parts += ["", *_sections(sub, f"{key}.")]
    return parts


def _is_model(annotation: Any) -> bool:
    return section_model(annotation) is not None


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The nested model of a section key: ``Model`` or an optional ``Model | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if len(args) == 1 and type(None) in get_args(annotation):
        return section_model(args[0])
    return None


def _reference_rows(model: type[BaseModel], prefix: str) -> list[str]:
    out = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, f in model.model_fields.items():
        if _is_model(f.annotation):
            continue
        if f.is_required():
            default = "required"
        else:
            value = f.default_factory() if f.default_factory is not None else f.default  # type: ignore[call-arg]
            default = f"`{json.dumps(_plain(value))}`"
        bounds = ", ".join(
            f"{op} {getattr(m, attr)}"
            for m in f.metadata
            for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
            if getattr(m, attr, None) is not None
        )
        meaning = (f.description or "").replace("|", "\\|") + (f" ({bounds})" if bounds else "")
        out.append(f"| `{prefix}{name}` | {_type_name(f.annotation)} | {default} | {meaning} |")
    return out


def _type_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return "one of: " + ", ".join(str(a) for a in get_args(annotation))
    # pathlib.Path prints as pathlib._local.Path from Python 3.13 on: both read "path"
    text = str(annotation).replace("typing.", "").replace("pathlib._local.", "")
    text = text.replace("pathlib.", "")
    text = text.replace("<class '", "").replace("'>", "").replace("Path", "path")
    return text.replace(" | None", " or null")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value
