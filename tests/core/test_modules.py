"""The module contract: declarations and [modules] validation (core.manager.plan), load
order, the handle undoing everything on unload, fold hooks, and the HACKING.md example."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from greetings_module import TEXT_EVENT, Greetings

from xmppd.core.config import Config, ConfigError, Listener, from_dict
from xmppd.core.hooks import STOP, Hooks
from xmppd.core.manager import (
    DEFAULT_MODULES,
    _load_order,
    available,
    module_class,
    plan,
    validate_options,
)
from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.core.session import Session
from xmppd.jid import JID
from xmppd.server import Server
from xmppd.xml.element import Element


def names(config: Config) -> list[str]:
    return [p.name for p in plan(config)]


# -- discovery and declarations -------------------------------------------------------------------


def test_every_available_module_declares_itself():
    found = available()
    assert set(DEFAULT_MODULES) <= set(found)
    for name in found:
        cls = module_class(name)
        assert cls.name == name and issubclass(cls, Module)
        assert all(dep in found for dep in (*cls.depends, *cls.soft_depends))
        for key, option in cls.options.items():
            assert option.doc, f"{name}.{key} has no doc"
            assert option.validate(option.default) == option.default


def test_module_class_of_an_unknown_name():
    for name in ("nope", "_subscription", "../x", ""):
        with pytest.raises(LookupError):
            module_class(name)


# -- [modules] validation ---------------------------------------------------------------------------


def test_the_default_set_loads_dependencies_first():
    order = names(Config())
    assert set(order) == set(DEFAULT_MODULES)
    for before, after in (("message", "offline"), ("presence", "offline"),
                          ("roster", "presence"), ("roster", "blocking"),
                          ("presence", "blocking"), ("s2s", "component")):
        assert order.index(before) < order.index(after)


def test_enabled_replaces_the_default_set_and_disabled_removes():
    assert names(Config(modules_enabled=("ping", "disco"))) == ["ping", "disco"]
    assert names(Config(modules_enabled=("ping", "disco"), modules_disabled=("ping",))) == ["disco"]
    assert "time" not in names(Config(modules_disabled=("time",)))


def test_enabled_is_ordered_by_dependencies():
    order = names(Config(modules_enabled=("offline", "blocking", "presence", "message", "roster")))
    assert order.index("roster") < order.index("presence") < order.index("offline")
    assert order.index("message") < order.index("offline")
    assert order.index("presence") < order.index("blocking")


@pytest.mark.parametrize(("config", "message"), [
    (Config(modules_disabled=("presnce",)),
     "modules.disabled: unknown module 'presnce'; did you mean 'presence'?"),
    (Config(modules_enabled=("ping", "xyzzy")), "modules.enabled: unknown module 'xyzzy' (available: "),
    (Config(modules_options={"rostr": {}}), "modules.rostr: unknown module 'rostr'"),
    (Config(modules_options={"roster": {"max_nme_length": 1}}),
     "modules.roster.max_nme_length: unknown option (roster has: max_name_length)"),
    (Config(modules_options={"ping": {"interval_s": 60}}),
     "modules.ping.interval_s: unknown option (ping has: no options)"),
    (Config(modules_options={"roster": {"max_name_length": True}}),
     "modules.roster.max_name_length: expected an integer, got True"),
    (Config(modules_options={"roster": {"max_name_length": "100"}}),
     "modules.roster.max_name_length: expected an integer, got '100'"),
    (Config(modules_options={"roster": {"max_name_length": 0}}),
     "modules.roster.max_name_length: must be at least 1, got 0"),
    (Config(modules_disabled=("message",)),
     "modules.offline requires module 'message', which is disabled"),
    (Config(modules_enabled=("offline", "presence", "roster")),
     "modules.offline requires module 'message', which is not in modules.enabled"),
    # a typo in the options of a disabled module is still a typo
    (Config(modules_disabled=("roster", "presence", "offline", "blocking"),
            modules_options={"roster": {"max_nme_length": 1}}),
     "modules.roster.max_nme_length: unknown option"),
])
def test_mistakes_are_errors_naming_the_key(config, message):
    with pytest.raises(ConfigError) as info:
        plan(config)
    assert str(info.value).startswith(message)


def test_options_are_validated_with_defaults_filled_in():
    (roster,) = [p for p in plan(Config(modules_options={"roster": {"max_name_length": 10}}))
                 if p.name == "roster"]
    assert roster.options == {"max_name_length": 10}
    (roster,) = [p for p in plan(Config()) if p.name == "roster"]
    assert roster.options == {"max_name_length": 1023}
    assert validate_options(Greetings, {"text": "Hi"}) == {"text": "Hi", "max_per_account": 3}
    with pytest.raises(ConfigError, match=r"^modules.greetings.txt: unknown option "
                                          r"\(greetings has: max_per_account, text\)$"):
        validate_options(Greetings, {"txt": "Hi"})


def test_option_types():
    assert Option(float, 1.0).validate(2) == 2.0 and isinstance(Option(float, 1.0).validate(2), float)
    with pytest.raises(ValueError, match="expected a number, got False"):
        Option(float, 1.0).validate(False)
    with pytest.raises(ValueError, match="expected a boolean, got 1"):
        Option(bool, False).validate(1)
    assert Option(list, [], item=str).validate(["a", "b"]) == ("a", "b")
    with pytest.raises(ValueError, match="expected a list of str, got 1"):
        Option(list, [], item=str).validate(["a", 1])
    with pytest.raises(ValueError, match="must be one of 'a', 'b', got 'c'"):
        Option(str, "a", choices=("a", "b")).validate("c")
    with pytest.raises(ValueError, match="must be at most 5, got 6"):
        Option(int, 1, max=5).validate(6)
    with pytest.raises(ValueError, match="odd"):
        Option(int, 1, check=lambda v: None if v % 2 else "must be odd").validate(2)


def test_config_syntax_of_the_modules_table():
    config = from_dict({"modules": {"enabled": ["ping"], "disabled": [], "roster": {"x": 1}}})
    assert config.modules_enabled == ("ping",) and config.modules_disabled == ()
    assert config.modules_options == {"roster": {"x": 1}}
    assert from_dict({}).modules_enabled is None
    with pytest.raises(ConfigError, match="modules.enabled must be a list of module names"):
        from_dict({"modules": {"enabled": ["ping", 1]}})


def test_dependency_cycles_are_reported():
    a = type("A", (Module,), {"name": "a", "depends": ("b",)})
    b = type("B", (Module,), {"name": "b", "soft_depends": ("a",)})
    with pytest.raises(ConfigError, match="module dependency cycle: a -> b -> a"):
        _load_order(["a", "b"], {"a": a, "b": b})


def test_the_server_refuses_a_bad_config(tmp_path):
    with pytest.raises(ConfigError, match="modules.disabled: unknown module 'presnce'"):
        Server(Config(data_dir=tmp_path, modules_disabled=("presnce",)))


# -- fold and notify hooks ---------------------------------------------------------------------------


def test_fold_threads_a_value_and_stops():
    hooks = Hooks()
    undo = hooks.declare("x/fold")
    hooks.hook("x/fold", lambda v, n: v + n, priority=2)
    hooks.hook("x/fold", lambda v, n: v * 10, priority=1)
    assert hooks.fold_sync("x/fold", 1, 2) == 30
    assert hooks.fold_maybe_async("x/fold", 1, 2) == 30
    assert asyncio.run(hooks.fold("x/fold", 1, 2)) == 30
    hooks.hook("x/fold", lambda v, n: STOP if v > 20 else v, priority=0)
    last: list[int] = []
    hooks.hook("x/fold", lambda v, n: last.append(v) or v, priority=-1)
    assert hooks.fold_sync("x/fold", 1, 2) is STOP and last == []
    assert hooks.fold_sync("x/fold", 0, 1) == 10 and last == [10]
    undo()
    assert "x/fold" not in hooks.events()


def test_fold_maybe_async_finishes_asynchronously():
    hooks = Hooks()
    hooks.declare("x/fold")

    async def slow(value: int) -> int:
        await asyncio.sleep(0)
        return value + 1

    hooks.hook("x/fold", lambda v: v * 2, priority=3)
    hooks.hook("x/fold", slow, priority=2)
    hooks.hook("x/fold", lambda v: v * 5, priority=1)
    pending = hooks.fold_maybe_async("x/fold", 1)
    assert asyncio.run(_await(pending)) == 15
    with pytest.raises(TypeError):
        hooks.fold_sync("x/fold", 1)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def test_handler_key_is_kept_until_the_handlers_change():
    """The key is reused while the handlers stay (a login asks for it), and follows every
    hook, unhook and re-declaration of the event."""
    hooks = Hooks()
    undeclare = hooks.declare("x/k")
    first = hooks.handler_key("x/k")
    assert first == () and hooks.handler_key("x/k") == ()

    def a() -> None: ...
    def b() -> None: ...

    unhook_a = hooks.hook("x/k", a, priority=1)
    key = hooks.handler_key("x/k")
    assert key == (a,) and hooks.handler_key("x/k") is key
    hooks.hook("x/k", b)
    assert hooks.handler_key("x/k") == (a, b)
    unhook_a()
    assert hooks.handler_key("x/k") == (b,)
    undeclare()
    assert hooks.handler_key("x/k") == ()
    hooks.declare("x/k")
    hooks.hook("x/k", a)
    assert hooks.handler_key("x/k") == (a,)


def test_a_declared_event_lives_until_its_last_declarer_undeclares():
    hooks = Hooks()
    first, second = hooks.declare("x/e"), hooks.declare("x/e")
    first()
    first()  # undo twice: still counted once
    assert "x/e" in hooks.events()
    second()
    assert "x/e" not in hooks.events()
    with pytest.raises(KeyError):
        hooks.declare("message/bare")  # a core event is not a module's to declare


# -- unloading undoes everything ------------------------------------------------------------------


class FakeKeyValue:
    """The key-value store interface (storage.open_store(namespace, "keyvalue"))."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Any] = {}

    async def get(self, owner: str, key: str, default: Any = None) -> Any:
        return self.data.get((owner, key), default)

    async def set(self, owner: str, key: str, value: Any) -> None:
        self.data[(owner, key)] = value


class FakeStorage:
    def __init__(self) -> None:
        self.stores: dict[tuple[str, str], Any] = {}

    def open_store(self, namespace: str, kind: str) -> Any:
        return self.stores.setdefault((namespace, kind), FakeKeyValue())


class FakeTransport:
    closed = False
    peer = None

    def __init__(self) -> None:
        self.sent: list[Element] = []
        self.send = self.sent.append

    def flush(self) -> None:
        pass

    def stream_error(self, condition: str, text: str | None = None) -> None:
        self.closed = True


def bind(server: Server, jid: str) -> Session:
    session = Session(JID(jid), FakeTransport())
    server.router.sessions.add(session)
    server.hooks.fire_sync("resource-bound", session)
    return session


class Everything(Module):
    """Registers one of everything the handle offers."""

    name = "everything"
    options = {"interval_s": Option(float, 60.0, "tick interval", min=0.001)}

    def load(self, api: ModuleAPI) -> None:
        self.api = api
        self.ticks = 0
        self.started = asyncio.Event()
        api.hook("resource-bound", self.bound)
        api.declare("everything/text")
        api.hook("everything/text", str.upper)
        api.iq_handler("get", "urn:example:everything", "query", self.query)
        api.add_feature("urn:example:everything")
        api.add_feature("urn:example:everything:account", account=True)
        api.add_identity("component", "generic", "everything")
        api.add_identity("pubsub", "pep", account=True)
        api.provide("everything", self)
        self.store = api.open_store("keyvalue")
        self.archive = api.open_store("archive")
        self.timer = api.call_later(3600, pytest.fail, "a timer outlived its module")
        api.every(api.options["interval_s"], self.tick)
        api.spawn(self.forever())
        api.hook("server-started", self.open_listener)
        api.add_http_route("/everything", self.http, alt_connection="urn:example:everything")
        api.gauge("everything", "how much", lambda: 42)

    def http(self, request: Any) -> Any:
        return None

    def bound(self, session: Session) -> None:
        self.api.state(session, dict)["seen"] = True

    def query(self, iq: Element, origin: Any, payload: Element) -> None:
        return None

    def tick(self) -> None:
        self.ticks += 1

    async def forever(self) -> None:
        self.started.set()
        await asyncio.Event().wait()

    async def open_listener(self, _server: object) -> None:
        self.addresses = await self.api.listen("everything", Listener("127.0.0.1", 0),
                                               asyncio.Protocol)


def snapshot(server: Server) -> dict[str, Any]:
    hooks = server.hooks
    return {
        "events": {name: hooks.handlers(name) for name in hooks.events()},
        "iq": hooks.find_iq_handler("host", "get", "urn:example:everything", "query"),
        "features": set(server.features), "account_features": set(server.account_features),
        "identities": list(server.identities),
        "account_identities": list(server.account_identities), "services": dict(server.services),
        "addresses": {k: list(v) for k, v in server.addresses.items() if v},
        "listeners": list(server._listeners),
        "http": [(r.path, r.handler) for r in server.http_routes.all()],
        "gauges": dict(server.metrics.gauges),
    }


def connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_unloading_a_module_removes_everything_it_registered(tmp_path: Path):
    server = Server(Config(data_dir=tmp_path, modules_enabled=("ping",)))
    server.storage = FakeStorage()

    async def main() -> None:
        server.modules.load_all(plan(server.config))
        session = bind(server, "alice@localhost/a")
        before = snapshot(server)
        api = server.modules.load(Everything, validate_options(Everything, {"interval_s": 0.01}))
        module = server.modules.loaded["everything"].module
        await server.hooks.fire("server-started", server)
        later = bind(server, "alice@localhost/b")
        await asyncio.sleep(0.05)
        await module.started.wait()
        # all of it is there ...
        loaded = snapshot(server)
        assert loaded["iq"] == module.query
        assert "urn:example:everything" in loaded["features"]
        assert "urn:example:everything:account" in loaded["account_features"]
        assert ("component", "generic", "everything") in loaded["identities"]
        assert ("pubsub", "pep", "") in loaded["account_identities"]
        assert loaded["services"]["everything"] is module
        assert server.hooks.fold_sync("everything/text", "hi") == "HI"
        assert module.bound in loaded["events"]["resource-bound"]
        assert set(api.stores) == {"keyvalue", "archive"}
        assert server.storage.stores.keys() == {("everything", "keyvalue"), ("everything", "archive")}
        assert api.peek_state(later) == {"seen": True} and api.peek_state(session) is None
        port = module.addresses[0][1]
        assert connects(port) and loaded["addresses"]["everything"] == module.addresses
        assert module.ticks >= 2
        assert server.http_routes.match("/everything").handler == module.http
        assert api.http_alt_connections() == [("urn:example:everything", "/everything")]
        assert loaded["gauges"]["everything"].read() == 42
        task = next(iter(api._tasks))

        server.modules.unload("everything")

        # ... and none of it is left
        await asyncio.sleep(0.05)
        assert snapshot(server) == before
        assert later.get_state(api.slot) is None
        assert module.timer.cancelled() and task.cancelled()
        ticks = module.ticks
        await asyncio.sleep(0.05)
        assert module.ticks == ticks
        assert not api.stores and not api._tasks and not api._undo
        assert not connects(port)
        # the slot is free again, and a new instance loads cleanly
        again = server.modules.load(Everything)
        again.state(later, list)  # a slot is taken on first use
        assert again.slot == api.slot and again.options == {"interval_s": 60.0}
        server.modules.unload_all()
        assert not server.modules.loaded

    asyncio.run(main())


def test_a_module_failing_to_load_leaves_nothing_behind(tmp_path: Path):
    class Broken(Module):
        name = "broken"

        def load(self, api: ModuleAPI) -> None:
            api.add_feature("urn:example:broken")
            api.declare("broken/event")
            raise RuntimeError("no")

    server = Server(Config(data_dir=tmp_path, modules_enabled=()))
    with pytest.raises(RuntimeError):
        server.modules.load(Broken)
    assert "urn:example:broken" not in server.features
    assert "broken/event" not in server.hooks.events() and "broken" not in server.modules


def test_a_needed_module_does_not_unload(tmp_path: Path):
    server = Server(Config(data_dir=tmp_path,
                           modules_enabled=("message", "roster", "presence", "offline")))
    server.modules.load_all(plan(server.config))
    with pytest.raises(ValueError, match="module 'message' is needed by offline"):
        server.modules.unload("message")
    with pytest.raises(ValueError, match="module 'needy' needs nothing loaded first"):
        server.modules.load(_Needy)
    server.modules.unload_all()
    assert not server.services and not server.features


class _Needy(Module):
    name = "needy"
    depends = ("presence", "nothing")


# -- the HACKING.md example ---------------------------------------------------------------------------


def test_the_example_module(tmp_path: Path):
    server = Server(Config(data_dir=tmp_path, modules_enabled=()))
    server.storage = FakeStorage()

    async def main() -> None:
        options = validate_options(Greetings, {"text": "Hello", "max_per_account": 1})
        api = server.modules.load(Greetings, options)
        first = bind(server, "alice@localhost/a")
        assert [m.findtext("body", m.ns) for m in first.transport.sent] == ["Hello"]
        assert server.services["greetings"].greeted(first) == ["Hello"]
        second = bind(server, "alice@localhost/b")  # greeted once per account at most
        assert second.transport.sent == []
        # another module changes the text, then vetoes greetings (a fold event)
        other = ModuleAPI(server, "other")
        other.hook(TEXT_EVENT, lambda text, session: text + ", " + session.jid.localpart)
        bob = bind(server, "bob@localhost/a")
        assert bob.transport.sent[0].findtext("body", bob.transport.sent[0].ns) == "Hello, bob"
        other.hook(TEXT_EVENT, lambda text, session: STOP, priority=10)
        carol = bind(server, "carol@localhost/a")
        assert carol.transport.sent == []
        other.unload()
        server.modules.unload("greetings")
        assert api.peek_state(first) is None and "greetings" not in server.services
        assert TEXT_EVENT not in server.hooks.events()

    asyncio.run(main())


def test_options_reach_the_handle_read_only():
    api = ModuleAPI(SimpleNamespace(), "x", options={"a": 1})
    assert api.options["a"] == 1
    with pytest.raises(TypeError):
        api.options["a"] = 2  # type: ignore[index]
