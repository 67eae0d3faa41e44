"""The secret handles a caller holds: ``pipe.secrets`` and ``store.global_secrets``."""

from __future__ import annotations

import re

from objstore.errors import InvalidName
from objstore.names import validate_secret_name
from objstore.stores.secrets import SecretStore
from objstore.types import SecretInfo

__all__ = ["GlobalSecrets", "PipelineSecrets", "validate_namespace_patterns"]

_PATTERN = re.compile(r"[A-Za-z0-9_*?\[\]!-]{1,64}")


def validate_namespace_patterns(patterns: object) -> list[str]:
    """A list of full-match globs over namespace ids (``team-*``, ``build-?``); raises InvalidName."""
    if isinstance(patterns, str) or not isinstance(patterns, list | tuple):
        raise InvalidName("namespaces is a list of patterns, e.g. namespaces=['team-*']")
    checked = []
    for pattern in patterns:
        if not isinstance(pattern, str) or _PATTERN.fullmatch(pattern) is None:
            raise InvalidName(
                f"invalid namespace pattern {pattern!r}: use 1-64 characters of letters, digits, '_', '-' "
                "and the glob characters * ? [ ] !"
            )
        checked.append(pattern)
    return checked


class PipelineSecrets:
    """The secrets of one pipeline (``pipe.secrets``); values are never shown in reprs or errors."""

    __slots__ = ("_namespace", "_pipeline", "_store")

    def __init__(self, store: SecretStore, namespace: str, pipeline: str) -> None:
        self._store = store
        self._namespace = namespace
        self._pipeline = pipeline

    def put(self, name: str, value: str | bytes, *, overwrite: bool = False) -> SecretInfo:
        """Seal and store ``value`` (str or bytes, up to 64 KiB). Raises ``AlreadyExists`` without
        ``overwrite``, ``VaultError`` when no usable encryption key is configured."""
        return self._store.put(
            "pipeline",
            self._namespace,
            self._pipeline,
            validate_secret_name(name),
            value,
            overwrite=overwrite,
        )

    def get(self, name: str) -> str | bytes:
        """The value, as it was put (str or bytes). Raises ``SecretNotFound`` or ``InvalidName``."""
        if type(name) is not str:
            validate_secret_name(name)  # raises: only strings name secrets
        # Every stored name was validated when it was put: look first, validate only a miss.
        return self._store.get(
            "pipeline", self._namespace, self._pipeline, name, validate=validate_secret_name
        )

    def get_global(self, name: str) -> str | bytes:
        """A global secret, if this pipeline's namespace matches one of its allowed patterns."""
        return self._store.get_global_for(self._namespace, validate_secret_name(name))

    def list(self) -> list[SecretInfo]:
        """Names and times of this pipeline's secrets, by name; never values."""
        return self._store.infos("pipeline", self._namespace, self._pipeline)

    def delete(self, name: str) -> None:
        self._store.delete("pipeline", self._namespace, self._pipeline, validate_secret_name(name))

    def __repr__(self) -> str:
        return f"<Secrets of {self._namespace}/{self._pipeline}>"


class GlobalSecrets:
    """Secrets shared across namespaces (``store.global_secrets``), readable only where allowed."""

    __slots__ = ("_store",)

    def __init__(self, store: SecretStore) -> None:
        self._store = store

    def put(
        self,
        name: str,
        value: str | bytes,
        *,
        namespaces: list[str] | None = None,
        overwrite: bool = False,
    ) -> SecretInfo:
        """Seal and store a global secret readable by namespaces matching ``namespaces`` (full-match
        globs; default: none, so no pipeline can read it until allowed)."""
        patterns = validate_namespace_patterns([] if namespaces is None else namespaces)
        return self._store.put(
            "global",
            "",
            "",
            validate_secret_name(name),
            value,
            overwrite=overwrite,
            allowed_namespaces=patterns,
        )

    def get(self, name: str) -> str | bytes:
        return self._store.get("global", "", "", validate_secret_name(name))

    def list(self) -> list[SecretInfo]:
        return self._store.infos("global", "", "")

    def delete(self, name: str) -> None:
        self._store.delete("global", "", "", validate_secret_name(name))

    def __repr__(self) -> str:
        return "<GlobalSecrets>"
