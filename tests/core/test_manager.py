"""ModuleManager.reconcile: what a live reload does to the loaded modules (end to end in
tests/test_reload.py; here each rule on small modules of its own)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xmppd.core.config import Config
from xmppd.core.manager import Planned
from xmppd.core.module import Module, Option
from xmppd.core.moduleapi import ModuleAPI
from xmppd.server import Server


class InPlace(Module):
    """Applies new options itself."""

    name = "inplace"
    options = {"size": Option(int, 1, "")}

    def load(self, api: ModuleAPI) -> None:
        self.size = api.options["size"]
        api.add_feature(f"urn:example:inplace:{self.size}")

    def reconfigure(self, api: ModuleAPI, old: Any) -> bool:
        if api.options["size"] < 0:
            raise ValueError("negative")
        self.size = api.options["size"]
        return True


class Plain(Module):
    """Keeps nothing: reloaded for new options."""

    name = "plain"
    options = {"size": Option(int, 1, "")}

    def load(self, api: ModuleAPI) -> None:
        if api.options["size"] == 13:
            raise RuntimeError("unlucky")
        api.add_feature(f"urn:example:plain:{api.options['size']}")


class Keeper(Plain):
    """Keeps state of online users and cannot apply new options in place."""

    name = "keeper"
    stateful = True


class User(Module):
    """Uses ``plain`` when it is there."""

    name = "user"
    soft_depends = ("plain",)

    def load(self, api: ModuleAPI) -> None:
        self.plain = api.service("plain")


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(Config(data_dir=tmp_path, modules_enabled=()))


def _plan(*entries: tuple[type[Module], dict[str, Any]]) -> list[Planned]:
    return [Planned(cls, {**cls.defaults(), **options}) for cls, options in entries]


def test_options_applied_in_place_or_by_reloading(server: Server):
    server.modules.load_all(_plan((InPlace, {}), (Plain, {})))
    inplace = server.modules.loaded["inplace"].module
    plain = server.modules.loaded["plain"].module
    done = server.modules.reconcile(_plan((InPlace, {"size": 2}), (Plain, {"size": 3})))
    assert done.applied == ["modules.inplace: size changed",
                            "modules.plain: size changed (module reloaded)"]
    assert done.restart == done.failed == []
    assert server.modules.loaded["inplace"].module is inplace and inplace.size == 2
    assert server.modules.loaded["plain"].module is not plain
    assert server.modules.api("plain").options["size"] == 3
    assert "urn:example:plain:3" in server.features and "urn:example:plain:1" not in server.features
    assert server.modules.reconcile(_plan((InPlace, {"size": 2}), (Plain, {"size": 3}))) \
        .applied == []  # nothing changed: nothing done


def test_what_cannot_change_live_waits_for_a_restart(server: Server):
    server.modules.load_all(_plan((Keeper, {}), (Plain, {}), (User, {})))
    keeper = server.modules.loaded["keeper"].module
    done = server.modules.reconcile(_plan((Keeper, {"size": 2}), (Plain, {"size": 2}),
                                          (User, {})))
    assert done.restart == [
        "modules.keeper: size changed; needs a restart (reloading it would lose state of "
        "online users)",
        "modules.plain: size changed; needs a restart (needed by user)",
    ]
    assert done.applied == []
    assert server.modules.loaded["keeper"].module is keeper
    assert server.modules.api("keeper").options["size"] == 1  # what runs is what it says
    done = server.modules.reconcile(_plan((User, {})))  # disable keeper and plain
    assert done.restart == [
        "modules.plain: disabling it needs a restart (needed by user); still loaded",
        "modules.keeper: disabling it needs a restart (it keeps state of online users); "
        "still loaded",
    ]
    assert set(server.modules.loaded) == {"keeper", "plain", "user"}
    done = server.modules.reconcile(_plan((Keeper, {})))  # user goes: then plain can too
    assert done.applied == ["modules.user: unloaded", "modules.plain: unloaded"]


def test_enabling_tells_which_loaded_modules_use_it_only_after_a_restart(server: Server):
    server.modules.load_all(_plan((User, {})))
    done = server.modules.reconcile(_plan((User, {}), (Plain, {})))
    assert done.applied == ["modules.plain: loaded"]
    assert done.restart == ["modules.plain: loaded; modules loaded without it use it only "
                            "after a restart: user"]


def test_failures_leave_the_old_options_in_force(server: Server):
    server.modules.load_all(_plan((InPlace, {}), (Plain, {})))
    done = server.modules.reconcile(_plan((InPlace, {"size": -1}), (Plain, {"size": 13})))
    assert done.failed == [
        "modules.inplace: failed to apply size: negative",
        "modules.plain: failed to load with the new size (unlucky); the old options stay in "
        "force",
    ]
    assert server.modules.api("inplace").options["size"] == 1
    assert server.modules.api("plain").options["size"] == 1
    assert "urn:example:plain:1" in server.features
    done = server.modules.reconcile(_plan((InPlace, {}), (Plain, {}), (Broken, {})))
    assert done.failed == ["modules.broken: failed to load: no"]
    assert "broken" not in server.modules


class Broken(Module):
    name = "broken"

    def load(self, api: ModuleAPI) -> None:
        raise RuntimeError("no")
