"""Where settings come from: the TOML file, ``OBJSTORE_*`` environment variables and keyword overrides.

Each source is read into nested dicts, checked for keys in sections objstore owns that match no setting
(reported with the closest valid key), and the sources are merged deeply. The host application's sections
and keys are dropped from the file, which may be the host's own configuration. The settings models live in
:mod:`objstore.config`, which imports this module: what is needed of them comes in as a
:class:`SettingsShape`.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from objstore.config_errors import ARGUMENT, ENVIRONMENT, join_problems
from objstore.errors import ConfigError

__all__ = ["SettingsShape", "Sources", "deep_merge", "plain_overrides", "read_sources"]


@dataclass(frozen=True)
class SettingsShape:
    """What reading the sources needs to know about the settings models."""

    model: type[BaseModel]
    # The field holding the list of blob stores: tables told apart by their "type" key, not by a model.
    store_list: tuple[type[BaseModel], str]
    store_types: Mapping[str, type[BaseModel]]
    host_sections: frozenset[str]
    host_keys: Mapping[str, frozenset[str]]
    # Sections shared with the host: objstore's keys are checked, any other key is the host's unless it
    # looks like a misspelling of one of objstore's.
    shared_sections: frozenset[str]
    env_var_name: Callable[[Iterable[str]], str]
    env_prefix: str
    # Variables with env_prefix that are not settings, and a prefix of more of them.
    env_not_settings: frozenset[str]
    env_not_settings_prefix: str
    # Every setting's variable -> (the setting's path, whether its value is structured, i.e. JSON).
    env_settings: Mapping[str, tuple[tuple[str, ...], bool]] = field(init=False)

    def __post_init__(self) -> None:
        table = {self.env_var_name(path): (path, structured) for path, structured in self._paths(self.model)}
        object.__setattr__(self, "env_settings", table)

    def is_store_list(self, model: type[BaseModel], name: str) -> bool:
        return model is self.store_list[0] and name == self.store_list[1]

    def _paths(
        self, model: type[BaseModel], path: tuple[str, ...] = ()
    ) -> Iterator[tuple[tuple[str, ...], bool]]:
        """Every setting's path, and whether its value is structured (a section, or the blob store list)."""
        for name in model.model_fields:
            sub = _section_model(model, name)
            yield (*path, name), sub is not None or self.is_store_list(model, name)
            if sub is not None:
                yield from self._paths(sub, (*path, name))


@dataclass(frozen=True)
class Sources:
    """What each source contributed, with the keys objstore does not own removed."""

    file: Path | None
    file_data: dict[str, Any]
    env_data: dict[str, Any]
    # Which environment variable set which setting path.
    env_vars: dict[tuple[str, ...], str]
    overrides: dict[str, Any]

    def merged(self) -> dict[str, Any]:
        """The sources merged: the file < environment variables < overrides."""
        return deep_merge(deep_merge(self.file_data, self.env_data), self.overrides)

    def labelled(self) -> tuple[tuple[Mapping[str, Any], str], ...]:
        """The sources with their labels, highest precedence first, for ``validation_problems``."""
        return ((self.overrides, ARGUMENT), (self.env_data, ENVIRONMENT), (self.file_data, f"in {self.file}"))


def read_sources(
    file: Path | None,
    origin: str,
    overrides: dict[str, Any],
    environ: Mapping[str, str],
    shape: SettingsShape,
) -> Sources:
    """Read ``file`` (named by ``origin``) and ``environ``; raise one ConfigError for all unknown keys."""
    problems: list[str] = []
    file_data: dict[str, Any] = {}
    if file is not None:
        file_data = _owned(_read_toml(file, origin), f"in {file}", problems, shape, host_tolerant=True)
    env_data, env_vars = _read_env(environ, problems, shape)
    overrides = _owned(overrides, "in the arguments to Settings.load", problems, shape, host_tolerant=False)
    if problems:
        raise ConfigError(join_problems(problems))
    return Sources(file, file_data, env_data, env_vars, overrides)


def _section_model(settings_model: type[BaseModel], name: str) -> type[BaseModel] | None:
    annotation = settings_model.model_fields[name].annotation
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _read_toml(file: Path, origin: str) -> dict[str, Any]:
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {file} (named by {origin}) does not exist; create it with "
            f"`objstore init-config -o {file}`, or fix the path"
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {file} (named by {origin}): {exc.strerror}; check the path and its "
            "permissions"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {file} is not UTF-8 text (byte {exc.start} is not valid UTF-8); save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if found:
        where, reason = f"line {found[1]}, column {found[2]}", message[: found.start()]
    else:  # "(at end of document)": point at the last character
        lines = text.split("\n")
        where = f"line {len(lines)}, column {len(lines[-1]) + 1} (end of file)"
        reason = message.removesuffix(" (at end of document)")
    raise ConfigError(f"config file {file} is not valid TOML: {where}: {reason}; fix the syntax there")


def _closest(word: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=cutoff)
    return found[0] if found else None


def _unknown(where: str, kind: str, name: str, candidates: Iterable[str], valid: Iterable[str]) -> str:
    close = _closest(name, candidates)
    advice = f"did you mean {close!r}?" if close else f"valid ones are: {', '.join(valid)}."
    return f"{where}: unknown {kind} {name!r}; {advice} Correct or remove it."


def _owned(
    data: Mapping[str, Any], where: str, problems: list[str], shape: SettingsShape, *, host_tolerant: bool
) -> dict[str, Any]:
    """The part of ``data`` that objstore owns; misspelt keys are appended to ``problems``."""
    owned: dict[str, Any] = {}
    fields = shape.model.model_fields
    sections = list(fields)
    for name, value in data.items():
        if name in fields:
            owned[name] = _owned_table(
                shape.model, name, value, section=name, where=where, problems=problems, shape=shape
            )
        elif not host_tolerant or (name not in shape.host_sections and _closest(name, sections, 0.8)):
            problems.append(_unknown(where, "section", name, sections, sections))
        # Anything else belongs to the host application.
    return owned


def _owned_table(
    parent: type[BaseModel],
    name: str,
    value: Any,
    *,
    section: str,
    where: str,
    problems: list[str],
    shape: SettingsShape,
) -> Any:
    model = _section_model(parent, name)
    if shape.is_store_list(parent, name) and isinstance(value, list):
        return [_owned_store(item, f"{section}[{i}]", where, problems, shape) for i, item in enumerate(value)]
    if model is None or not isinstance(value, Mapping):
        return value  # pydantic reports a wrong type
    return _check_keys(model, value, section, where, problems, shape=shape)


def _check_keys(
    model: type[BaseModel],
    table: Mapping[str, Any],
    section: str,
    where: str,
    problems: list[str],
    *,
    shape: SettingsShape,
) -> dict[str, Any]:
    owned: dict[str, Any] = {}
    host = shape.host_keys.get(section, frozenset())
    shared = section in shape.shared_sections
    for key, value in table.items():
        if key in model.model_fields:
            owned[key] = _owned_table(
                model, key, value, section=f"{section}.{key}", where=where, problems=problems, shape=shape
            )
        elif shared and not _closest(key, model.model_fields, 0.8):
            continue  # the host's key
        elif key not in host:
            candidates = [*model.model_fields, *host]
            problems.append(
                _unknown(f"{where}, section {section}", "key", key, candidates, model.model_fields)
            )
    return owned


def _owned_store(item: Any, section: str, where: str, problems: list[str], shape: SettingsShape) -> Any:
    kind = item.get("type") if isinstance(item, Mapping) else None
    model = shape.store_types.get(kind) if isinstance(kind, str) else None
    return item if model is None else _check_keys(model, item, section, where, problems, shape=shape)


def _read_env(
    environ: Mapping[str, str], problems: list[str], shape: SettingsShape
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """``OBJSTORE_*`` variables as nested data, and which variable set which setting path."""
    data: dict[str, Any] = {}
    names: dict[tuple[str, ...], str] = {}
    found: list[tuple[tuple[str, ...], str, Any]] = []
    for name, text in environ.items():
        upper = name.upper()
        if not upper.startswith(shape.env_prefix) or upper in shape.env_not_settings:
            continue
        if upper.startswith(shape.env_not_settings_prefix):
            continue
        if upper not in shape.env_settings:
            close = _closest(upper, shape.env_settings)
            advice = (
                f"did you mean {close}?" if close else "sample-config.toml names every setting's variable."
            )
            problems.append(
                f"environment variable {name} names no objstore setting; {advice} Rename or unset it."
            )
            continue
        path, structured = shape.env_settings[upper]
        value: Any = text
        if structured:
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(
                    f"environment variable {name} is not valid JSON ({exc.msg}); give a JSON "
                    f"{'list' if path[-1] == 'stores' else 'object'}"
                )
                continue
            where = f"in environment variable {name}"
            parent = shape.model
            for part in path[:-1]:
                parent = _section_model(parent, part) or parent
            value = _owned_table(
                parent, path[-1], value, section=".".join(path), where=where, problems=problems, shape=shape
            )
        found.append((path, name, value))
    # A whole section given as JSON first, so that variables of single keys override it.
    for path, name, value in sorted(found, key=lambda entry: len(entry[0])):
        nested: Any = value
        for part in reversed(path):
            nested = {part: nested}
        data = deep_merge(data, nested)
        names[path] = name
    return data, names


def plain_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides as nested dicts; a section given as a model counts with the fields set on it."""
    plain: dict[str, Any] = {}
    for key, given in values.items():
        value = given.model_dump(exclude_unset=True) if isinstance(given, BaseModel) else given
        plain[key] = plain_overrides(value) if isinstance(value, Mapping) else value
    return plain


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; tables present in both are merged key by key."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        if isinstance(below, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(below, value)
        else:
            merged[key] = value
    return merged
