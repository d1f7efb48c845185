"""The module manager: which modules exist, which are enabled, their validated options,
the load order, and loading/unloading them through their handles.

Modules are found by name under :mod:`xmppd.modules` (``xmppd.modules.<name>`` defines a
:class:`~xmppd.core.module.Module` subclass whose ``name`` is ``<name>``); the core imports
none of them by itself.  :func:`plan` turns the ``[modules]`` config into an ordered list of
(module class, options) or raises :class:`ConfigError` naming the offending key; both
``xmppd check`` and start-up run it.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import pkgutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from xmppd.core.config import Config, ConfigError
from xmppd.core.module import Module
from xmppd.core.moduleapi import ModuleAPI

if TYPE_CHECKING:
    from xmppd.server import Server

log = logging.getLogger(__name__)

#: The modules enabled when the config has no ``[modules] enabled`` list (in load order,
#: dependencies permitting).  README.md documents this set.
DEFAULT_MODULES = (
    "disco", "ping", "version", "time", "s2s", "component",
    "message", "roster", "presence", "offline", "blocking", "csi", "sm", "keepalive",
    "carbons", "muc", "pep", "vcard", "private", "pubsub", "contact", "sasl2",
    "push", "adhoc", "admin_commands", "register",
    "bosh", "upload", "extdisco", "metrics",
    "websocket", "hostmeta",
)

PACKAGE = "xmppd.modules"


def available() -> list[str]:
    """The names of the modules that can be enabled (files under :mod:`xmppd.modules`)."""
    package = importlib.import_module(PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__)
                  if not m.name.startswith("_"))


def module_class(name: str) -> type[Module]:
    """The :class:`Module` subclass named ``name``; LookupError if there is none."""
    if not name or name.startswith("_") or not name.replace("_", "").isalnum():
        raise LookupError(name)
    try:
        pymod = importlib.import_module(f"{PACKAGE}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{PACKAGE}.{name}":
            raise LookupError(name) from None
        raise
    return _find_class(pymod, name)


def _find_class(pymod: ModuleType, name: str) -> type[Module]:
    for value in vars(pymod).values():
        if (isinstance(value, type) and issubclass(value, Module) and value is not Module
                and value.__module__ == pymod.__name__ and value.name == name):
            return value
    raise LookupError(f"{pymod.__name__} defines no Module subclass named {name!r}")


@dataclass(frozen=True)
class Planned:
    """One module to load: its class and its validated options (defaults filled in)."""

    cls: type[Module]
    options: Mapping[str, Any]

    @property
    def name(self) -> str:
        return self.cls.name


def _unknown(key: str, name: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (available: {', '.join(known)})"
    return ConfigError(f"{key}: unknown module {name!r}{hint}")


def validate_options(cls: type[Module], table: Mapping[str, Any]) -> dict[str, Any]:
    """``table`` checked against ``cls.options``, defaults filled in; ConfigError naming
    the key otherwise."""
    options = cls.defaults()
    for key, value in table.items():
        where = f"modules.{cls.name}.{key}"
        option = cls.options.get(key)
        if option is None:
            has = ", ".join(sorted(cls.options)) or "no options"
            raise ConfigError(f"{where}: unknown option ({cls.name} has: {has})")
        try:
            options[key] = option.validate(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return options


def plan(config: Config) -> list[Planned]:
    """The enabled modules in load order with their options; ConfigError on an unknown
    module name or option, a mistyped option, or a missing dependency."""
    known = available()
    enabled_given = config.modules_enabled is not None
    for key, names in (("modules.enabled", config.modules_enabled or ()),
                       ("modules.disabled", config.modules_disabled)):
        for name in names:
            if name not in known:
                raise _unknown(key, name, known)
    for name in config.modules_options:
        if name not in known:
            raise _unknown(f"modules.{name}", name, known)
    disabled = set(config.modules_disabled)
    wanted = list(dict.fromkeys(config.modules_enabled if enabled_given else DEFAULT_MODULES))
    enabled = [n for n in wanted if n not in disabled]
    classes = {n: module_class(n) for n in enabled}
    # Options of every table are checked, also of a disabled module: a typo stays a typo.
    options = {n: validate_options(module_class(n), table)
               for n, table in config.modules_options.items()}
    for name, cls in classes.items():
        for dep in cls.depends:
            if dep not in classes:
                if dep not in known:
                    raise ConfigError(f"module {name!r} depends on {dep!r}, which does not exist")
                why = "which is disabled" if dep in disabled or not enabled_given \
                    else "which is not in modules.enabled"
                raise ConfigError(f"modules.{name} requires module {dep!r}, {why}")
    return [Planned(classes[n], options.get(n) or classes[n].defaults())
            for n in _load_order(enabled, classes)]


def _load_order(names: list[str], classes: Mapping[str, type[Module]]) -> list[str]:
    """``names`` with every module after its (hard and soft) dependencies, otherwise in
    the given order."""
    order: list[str] = []
    visiting: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name):], name])
            raise ConfigError(f"module dependency cycle: {cycle}")
        visiting.append(name)
        cls = classes[name]
        for dep in (*cls.depends, *cls.soft_depends):
            if dep in classes:
                visit(dep)
        visiting.pop()
        order.append(name)

    for name in names:
        visit(name)
    return order


@dataclass
class Reconciled:
    """What :meth:`ModuleManager.reconcile` did (``applied``), what waits for a restart
    (``restart``) and what failed (``failed``), one line each naming the module."""

    applied: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _uses(cls: type[Module], name: str) -> bool:
    return name in cls.depends or name in cls.soft_depends


class Loaded:
    """A loaded module: its instance and its handle."""

    __slots__ = ("module", "api")

    def __init__(self, module: Module, api: ModuleAPI) -> None:
        self.module = module
        self.api = api


class ModuleManager:
    """Loads modules through their handles, in dependency order; unloads in reverse."""

    def __init__(self, core: Server) -> None:
        self._core = core
        self.loaded: dict[str, Loaded] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.loaded

    def api(self, name: str) -> ModuleAPI:
        """The handle of the loaded module ``name``."""
        return self.loaded[name].api

    def load_all(self, planned: list[Planned]) -> None:
        for entry in planned:
            self.load(entry.cls, entry.options)

    def load(self, cls: type[Module], options: Mapping[str, Any] | None = None) -> ModuleAPI:
        """Load one module (its dependencies must be loaded); returns its handle."""
        name = cls.name
        if name in self.loaded:
            raise ValueError(f"module {name!r} is loaded already")
        missing = [d for d in cls.depends if d not in self.loaded]
        if missing:
            raise ValueError(f"module {name!r} needs {', '.join(missing)} loaded first")
        opts = validate_options(cls, {}) if options is None else dict(options)
        api = ModuleAPI(self._core, name, options=opts, new_slot=self._free_slot)
        module = cls()
        try:
            module.load(api)
        except BaseException:
            api.unload()  # a half-loaded module leaves nothing behind
            raise
        self.loaded[name] = Loaded(module, api)
        log.debug("loaded module %s", name)
        return api

    def unload(self, name: str) -> None:
        """Unload ``name``; refused while a loaded module depends on it."""
        users = [n for n, entry in self.loaded.items() if name in type(entry.module).depends]
        if users:
            raise ValueError(f"module {name!r} is needed by {', '.join(users)}")
        entry = self.loaded.pop(name)
        try:
            entry.module.unload()
        finally:
            entry.api.unload()
        log.debug("unloaded module %s", name)

    def unload_all(self) -> None:
        for name in reversed(list(self.loaded)):
            self.unload(name)

    # -- live reload ---------------------------------------------------------------------------

    def reconcile(self, planned: list[Planned]) -> Reconciled:
        """Make the loaded modules those of ``planned`` (a validated :func:`plan`), with its
        options, without losing what online users need: disabled modules are unloaded,
        changed options applied (:meth:`Module.reconfigure`, else unload and load),
        enabled modules loaded.  A stateful module, or one another loaded module depends
        on, is never unloaded: that change is reported in ``restart`` instead."""
        out = Reconciled()
        wanted = {entry.name: entry for entry in planned}
        for name in reversed(list(self.loaded)):
            if name not in wanted:
                self._disable(name, out)
        for entry in planned:
            if entry.name in self.loaded:
                self._reconfigure(entry, out)
        before = set(self.loaded)
        for entry in planned:
            if entry.name in self.loaded:
                continue
            try:
                self.load(entry.cls, entry.options)
            except Exception as exc:
                log.exception("reload: module %s failed to load", entry.name)
                out.failed.append(f"modules.{entry.name}: failed to load: {exc}")
                continue
            out.applied.append(f"modules.{entry.name}: loaded")
            users = sorted(n for n in before if _uses(type(self.loaded[n].module), entry.name))
            if users:
                out.restart.append(f"modules.{entry.name}: loaded; modules loaded without "
                                   f"it use it only after a restart: {', '.join(users)}")
        return out

    def _users(self, name: str) -> list[str]:
        return [n for n, e in self.loaded.items() if n != name and _uses(type(e.module), name)]

    def _disable(self, name: str, out: Reconciled) -> None:
        cls = type(self.loaded[name].module)
        users = self._users(name)
        if cls.stateful or users:
            why = (f"needed by {', '.join(users)}" if users
                   else "it keeps state of online users")
            out.restart.append(f"modules.{name}: disabling it needs a restart ({why}); "
                               "still loaded")
            return
        self.unload(name)
        out.applied.append(f"modules.{name}: unloaded")

    def _reconfigure(self, entry: Planned, out: Reconciled) -> None:
        name, loaded = entry.name, self.loaded[entry.name]
        old = loaded.api.options
        if dict(old) == dict(entry.options):
            return
        changed = ", ".join(sorted(k for k in entry.options if old.get(k) != entry.options[k]))
        loaded.api.set_options(entry.options)
        try:
            done = loaded.module.reconfigure(loaded.api, old)
        except Exception as exc:
            log.exception("reload: module %s failed to reconfigure", name)
            loaded.api.set_options(old)
            out.failed.append(f"modules.{name}: failed to apply {changed}: {exc}")
            return
        if done:
            out.applied.append(f"modules.{name}: {changed} changed")
            return
        loaded.api.set_options(old)
        users = self._users(name)
        if type(loaded.module).stateful or users:
            why = (f"needed by {', '.join(users)}" if users
                   else "reloading it would lose state of online users")
            out.restart.append(f"modules.{name}: {changed} changed; needs a restart ({why})")
            return
        self.unload(name)
        try:
            self.load(entry.cls, entry.options)
        except Exception as exc:
            log.exception("reload: module %s failed to load with its new options", name)
            self.load(entry.cls, old)  # as it was: it loaded with these before
            out.failed.append(f"modules.{name}: failed to load with the new {changed} "
                              f"({exc}); the old options stay in force")
            return
        out.applied.append(f"modules.{name}: {changed} changed (module reloaded)")

    def _free_slot(self) -> int:
        # A slot is reused only after its module unloaded (which cleared it everywhere).
        used = {entry.api.slot for entry in self.loaded.values()} - {None}
        return next(i for i in range(len(used) + 1) if i not in used)
