"""What a feature module declares: :class:`Module` (name, XEPs, dependencies, options) and
:class:`Option` (one option's type, default, documentation and limits).

A module is a small class under :mod:`xmppd.modules`; the module manager
(:mod:`xmppd.core.manager`) validates its options from the config, creates one instance and
calls :meth:`Module.load` with the module's handle (:class:`xmppd.core.moduleapi.ModuleAPI`).
Everything registered through the handle is undone when the module unloads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from xmppd.core.moduleapi import ModuleAPI

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a table"}


@dataclass(frozen=True)
class Option:
    """One module option: ``type`` (bool, int, float, str, list or dict), ``default``,
    ``doc``, and optional limits: ``min``/``max`` for numbers, ``choices`` for any value,
    ``item`` the type of a list's items, ``check`` a function returning an error text or
    None."""

    type: type
    default: Any
    doc: str = ""
    min: float | None = None
    max: float | None = None
    choices: Sequence[Any] | None = None
    item: type | None = None
    check: Callable[[Any], str | None] | None = None

    def validate(self, value: Any) -> Any:
        """``value`` converted to the option's type (an int is a float), or ValueError
        with a message for the user."""
        kind = self.type
        if kind is list and isinstance(value, tuple):
            value = list(value)  # a validated list (options are frozen): validate it again
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        # bool is a subclass of int, but `max_name_length = true` is a mistake
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ValueError(f"expected {_TYPE_NAMES.get(kind, kind.__name__)}, got {value!r}")
        if self.item is not None and kind is list:
            for entry in value:
                if not isinstance(entry, self.item) or (
                    self.item is not bool and isinstance(entry, bool)
                ):
                    raise ValueError(f"expected a list of {self.item.__name__}, got {entry!r}")
            value = tuple(value)  # options are frozen
        if self.min is not None and value < self.min:
            raise ValueError(f"must be at least {self.min:g}, got {value!r}")
        if self.max is not None and value > self.max:
            raise ValueError(f"must be at most {self.max:g}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(map(repr, self.choices))}, got {value!r}")
        if self.check is not None and (problem := self.check(value)):
            raise ValueError(problem)
        return value


class Module:
    """Base class of feature modules: declare, then register everything in :meth:`load`.

    ``name`` is the module's config name (and the name of its file under
    :mod:`xmppd.modules`), ``xeps`` what it implements, ``depends`` the modules that must
    be enabled and load first, ``soft_depends`` modules that load first when they are
    enabled, ``options`` its config schema (``[modules.<name>]``).

    A live reload (``xmppd reload``, SIGHUP) applies changed options with
    :meth:`reconfigure`; a module that does not implement it is unloaded and loaded again
    with the new options, unless it is ``stateful`` or another loaded module depends on
    it: then the change waits for a restart (and the reload says so).
    """

    name: ClassVar[str] = ""
    xeps: ClassVar[tuple[str, ...]] = ()
    depends: ClassVar[tuple[str, ...]] = ()
    soft_depends: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[dict[str, Option]] = {}
    #: It keeps in memory what unloading would lose and online users still need
    #: (per-session state, rooms, connections, detached sessions): a reload never unloads
    #: it, and disabling it, or changing options it cannot :meth:`reconfigure`, needs a
    #: restart.
    stateful: ClassVar[bool] = False
    #: It works when the server runs several worker processes (``server.workers``): no
    #: in-memory state that another worker's writes would make stale, and whatever it
    #: needs to know of other workers' sessions is shared (:meth:`ModuleAPI.share`).  With
    #: more than one worker, start-up refuses a module that does not declare it.
    workers_safe: ClassVar[bool] = False
    #: Its HTTP sessions span several requests, which must reach one process: with
    #: workers, only worker 0 binds the HTTP listeners (BOSH).
    http_in_one_worker: ClassVar[bool] = False

    def load(self, api: ModuleAPI) -> None:
        """Register hooks, handlers, features... through ``api``."""
        raise NotImplementedError

    def unload(self) -> None:
        """Undo what ``api`` cannot know about (nothing, usually): called before the
        handle's own undo."""

    def reconfigure(self, api: ModuleAPI, old: Mapping[str, Any]) -> bool:
        """Apply new options in place, without unloading (``api.options`` holds them
        already; ``old`` the previous ones).  True: done.  False (the default): the module
        cannot, and a reload unloads and loads it again (or reports that a restart is
        needed, see :attr:`stateful`)."""
        return False

    @classmethod
    def service_domains(cls, options: Mapping[str, Any], domain: str) -> tuple[str, ...]:
        """The domains this module serves on behalf of the served ``domain`` (e.g.
        ``conference.<domain>``), for certificate checks; none by default."""
        return ()

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {key: option.default for key, option in cls.options.items()}
