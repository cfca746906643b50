"""Builds a fresh pluggy manager per engine or CLI call and fills the typed registries.

Built-in plugins are entry points of this distribution, loaded exactly like third-party
ones; the core never imports ``mtlkit.plugins``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from mtlkit.components import hookspecs
from mtlkit.components.registry import Registry
from mtlkit.errors import MtlError, PluginError

ENTRY_POINT_GROUP = "mtlkit"
DISABLE_ENV = "MTLKIT_DISABLE_PLUGINS"
"""Comma-separated plugin (entry point) names to skip, e.g. ``MTLKIT_DISABLE_PLUGINS=foo,bar``."""

hookimpl = pluggy.HookimplMarker("mtlkit")


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin: its name and the distribution that provided it (None if in-process)."""

    name: str
    distribution: str | None


@dataclass(frozen=True)
class PluginFailure:
    """An installed plugin that failed to import and was skipped."""

    name: str
    distribution: str | None
    error: str  # "ImportError: no module named x"

    def message(self) -> str:
        """One line naming the plugin, its distribution, the error and the way out."""
        return (
            f"plugin {self.name!r} (distribution {self.distribution or 'unknown'}) failed to "
            f"import and was skipped: {self.error}. Fix or reinstall it, or silence this with "
            f"{DISABLE_ENV}={self.name}"
        )


class PluginHost:
    """One plugin manager plus the registries its plugins filled.

    ``extra_plugins`` are objects or modules registered in-process (tests, notebooks) after
    the installed ones, under ``name`` if they have a ``__name__`` or ``name`` attribute.
    An installed plugin that fails to import is skipped and kept in ``failures`` (as tox
    does): everything else still works, and a config that names a component no loaded
    plugin provides is told which plugins failed.
    """

    def __init__(self, extra_plugins: Iterable[Any] = ()):
        self.pm = pluggy.PluginManager("mtlkit")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.failures: list[PluginFailure] = []
        self.disabled = _disabled_names()
        for ep in _entry_points():
            self._load_entry_point(ep)
        for plugin in extra_plugins:
            name = _plugin_name(plugin)
            if name in self.disabled:
                continue
            self._register(plugin, name, distribution=None)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(
                f"plugin {self.pm.get_name(exc.plugin)!r} has a hook implementation that matches "
                f"no mtlkit hook: {exc}"
            ) from None
        self.registries = {
            kind: Registry(kind, unavailable=[f.message() for f in self.failures])
            for kind in hookspecs.REGISTRATION_HOOKS.values()
        }
        for hook_name, kind in hookspecs.REGISTRATION_HOOKS.items():
            self._collect(hook_name, self.registries[kind])

    # --- typed access to the registries ------------------------------------------------

    @property
    def backbones(self) -> Registry:
        return self.registries["backbone"]

    @property
    def heads(self) -> Registry:
        return self.registries["head"]

    @property
    def task_losses(self) -> Registry:
        return self.registries["task_loss"]

    @property
    def constraints(self) -> Registry:
        return self.registries["constraint"]

    @property
    def weightings(self) -> Registry:
        return self.registries["weighting"]

    @property
    def optimizers(self) -> Registry:
        return self.registries["optimizer"]

    @property
    def schedulers(self) -> Registry:
        return self.registries["scheduler"]

    @property
    def metrics(self) -> Registry:
        return self.registries["metric"]

    @property
    def data_sources(self) -> Registry:
        return self.registries["data_source"]

    @property
    def reports(self) -> Registry:
        return self.registries["report"]

    @property
    def baselines(self) -> Registry:
        return self.registries["baseline"]

    @property
    def loggers(self) -> Registry:
        return self.registries["logger"]

    @property
    def commands(self) -> Registry:
        return self.registries["command"]

    # --- training events ---------------------------------------------------------------

    def fit_start(self, engine: Any) -> None:
        self.pm.hook.mtl_fit_start(engine=engine)

    def epoch_end(self, engine: Any, epoch: int, logs: dict[str, Any]) -> None:
        self.pm.hook.mtl_epoch_end(engine=engine, epoch=epoch, logs=logs)

    def fit_end(self, engine: Any, result: Any) -> None:
        self.pm.hook.mtl_fit_end(engine=engine, result=result)

    # --- loading ------------------------------------------------------------------------

    def _load_entry_point(self, ep: EntryPoint) -> None:
        dist = ep.dist.name if ep.dist is not None else None
        if ep.name in self.disabled:
            return
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin is reported by name, whatever it raised
            self.failures.append(PluginFailure(ep.name, dist, f"{type(exc).__name__}: {exc}"))
            return
        self._register(plugin, ep.name, dist)

    def _register(self, plugin: Any, name: str, distribution: str | None) -> None:
        if self.pm.has_plugin(name):
            other = next(p.distribution for p in self.plugins if p.name == name)
            raise PluginError(
                f"two plugins are called {name!r} (distributions {other or 'in-process'} and "
                f"{distribution or 'in-process'}); disable one with {DISABLE_ENV}={name}"
            )
        try:
            self.pm.register(plugin, name=name)
        except ValueError as exc:  # pluggy refuses the same object twice
            raise PluginError(f"plugin {name!r} could not be registered: {exc}") from None
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin {name!r} is invalid: {exc}") from None
        self.plugins.append(PluginInfo(name, distribution))

    def _collect(self, hook_name: str, registry: Registry) -> None:
        # Each implementation is called on its own so the registry knows the owner, and an
        # implementation may accept a subset of the hook's arguments.
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():  # in registration order
            kwargs = {arg: registry.bound(impl.plugin_name) for arg in impl.argnames}
            try:
                impl.function(**kwargs)
            except MtlError:
                raise
            except Exception as exc:
                raise PluginError(
                    f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                    f"{type(exc).__name__}: {exc}\nRun without it: {DISABLE_ENV}={impl.plugin_name}"
                ) from None

    def owner_distribution(self, plugin_name: str) -> str | None:
        """The distribution that provided ``plugin_name``, None if registered in-process."""
        for info in self.plugins:
            if info.name == plugin_name:
                return info.distribution
        return None


def _entry_points() -> list[EntryPoint]:
    eps = entry_points(group=ENTRY_POINT_GROUP)
    # Sorted so the registration order, and with it every listing, is stable.
    return sorted(eps, key=lambda ep: ((ep.dist.name if ep.dist else "") != "mtlkit", ep.name))


def _disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _plugin_name(plugin: Any) -> str:
    for attr in ("name", "__name__"):
        value = getattr(plugin, attr, None)
        if isinstance(value, str) and value:
            return value
    return type(plugin).__name__
