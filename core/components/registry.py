"""Typed registries of named components, each remembering the plugin that registered it."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from mtlkit.components.contracts import check_registration
from mtlkit.config.problems import validation_problems
from mtlkit.errors import ConfigError, RegistryError

KIND_TITLES = {
    "backbone": "backbones",
    "head": "task heads",
    "task_loss": "task losses",
    "constraint": "constraints",
    "weighting": "task weightings",
    "optimizer": "optimizers",
    "scheduler": "learning-rate schedulers",
    "metric": "metrics",
    "data_source": "data sources",
    "report": "reports",
    "baseline": "baselines",
    "logger": "experiment loggers",
    "command": "commands",
}
"""What each registry kind is called in listings (``mtl plugins``, the config reference)."""


@dataclass(frozen=True)
class Entry:
    """One registered component: what it is called, what builds it, and who registered it."""

    kind: str
    name: str
    obj: Any
    owner: str
    options: type[BaseModel] | None
    description: str


class Registry:
    """Components of one kind (heads, metrics, ...) keyed by name.

    A duplicate name is an error naming both owners; an unknown name lists the choices and
    the closest match. Plugins receive an :class:`OwnedRegistry` view so the core, not the
    plugin, decides who the owner is.
    """

    def __init__(self, kind: str, unavailable: list[str] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        # Plugins that failed to import: an unknown name may be one of theirs.
        self.unavailable = list(unavailable or [])

    def add(
        self,
        name: str,
        obj: Any,
        *,
        owner: str,
        options: type[BaseModel] | None = None,
        description: str | None = None,
    ) -> Entry:
        """Register ``obj`` under ``name`` for ``owner``; returns the new entry."""
        if not isinstance(name, str) or not name.strip():
            raise RegistryError(f"plugin {owner!r} registered a {self.kind} with an empty name")
        if name in self._entries:
            first = self._entries[name].owner
            raise RegistryError(
                f"{self.kind} {name!r} is registered twice: by plugin {first!r} and by plugin "
                f"{owner!r}; disable one of them (MTLKIT_DISABLE_PLUGINS={owner})"
            )
        if options is None:
            options = getattr(obj, "Options", None)
        if description is None:
            # The docstring's first paragraph (its lines wrap: a first line alone may stop
            # mid-sentence).
            doc = (getattr(obj, "__doc__", None) or "").strip()
            description = " ".join(doc.split("\n\n")[0].split())
        entry = Entry(self.kind, name, obj, owner, options, description)
        self._entries[name] = entry
        return entry

    def bound(self, owner: str) -> OwnedRegistry:
        """A view of this registry whose ``register`` records ``owner``."""
        return OwnedRegistry(self, owner)

    def get(self, name: str) -> Entry:
        """The entry called ``name``; raises :class:`RegistryError` listing the choices."""
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: object) -> str:
        """Explain that ``name`` is not registered, with the choices and the closest match."""
        choices = sorted(self._entries)
        message = f"unknown {self.kind} {name!r}; choices: {', '.join(choices) or '(none)'}"
        close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.6)
        if close:
            message += f"; did you mean {close[0]!r}?"
        for failure in self.unavailable:
            message += f" (it may come from a {failure})"
        return message

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)

    def resolve(
        self, spec: Mapping[str, Any], path: str, key: str = "type"
    ) -> tuple[Entry, BaseModel | None]:
        """Look up ``spec[key]`` and validate the other keys with the entry's own model.

        ``path`` is the YAML path of ``spec`` (``heads[2]``); errors name paths below it.
        ``key`` is the key that names the component: ``type`` for most kinds, ``name`` for
        ``training.optimizer`` and ``training.scheduler``.
        """
        if not isinstance(spec, Mapping):
            raise ConfigError([(path, f"expected a mapping with a '{key}' key, got {spec!r}")])
        if key not in spec:
            raise ConfigError([(f"{path}.{key}", f"missing; choices: {', '.join(self.names())}")])
        name = spec[key]
        if not isinstance(name, str):
            raise ConfigError([(f"{path}.{key}", f"expected a {self.kind} name, got {name!r}")])
        if name not in self._entries:
            raise ConfigError([(f"{path}.{key}", self.unknown_message(name))])
        entry = self._entries[name]
        values = {k: v for k, v in spec.items() if k != key}
        if entry.options is None:
            if values:
                keys = ", ".join(sorted(values))
                raise ConfigError([(path, f"{self.kind} {name!r} takes no options (got {keys})")])
            return entry, None
        try:
            return entry, entry.options.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(validation_problems(exc, path)) from None


class OwnedRegistry:
    """What a registration hook receives: ``register`` on behalf of one plugin, checking
    what the plugin registers against its kind's contract."""

    def __init__(self, registry: Registry, owner: str):
        self._registry = registry
        self.owner = owner
        self.kind = registry.kind

    def register(
        self,
        name: str,
        obj: Any,
        *,
        options: type[BaseModel] | None = None,
        description: str | None = None,
    ) -> None:
        """Register ``obj`` as ``name``; ``options`` defaults to ``obj.Options`` if present.

        Raises :class:`PluginError` when ``obj`` breaks its kind's contract
        (:mod:`mtlkit.components.contracts`), naming this plugin and the fix.
        """
        model = options if options is not None else getattr(obj, "Options", None)
        check_registration(self.kind, name, obj, self.owner, model)
        self._registry.add(name, obj, owner=self.owner, options=options, description=description)
