"""``Element.children``: the compiled tokenizer puts a C accessor in place of element.py's
property unless pure Python is forced; both must read and write the same slots the same
way (the lazy and differential tests then run through whichever is in place)."""

from __future__ import annotations

import pytest
from support import twins

from xmppd._impl import PURE_PYTHON
from xmppd.xml.element import Element

pure, compiled = twins("tokenizer")


def test_the_accessor_in_place():
    fget = Element.__dict__["children"].fget
    if compiled is None or PURE_PYTHON:
        assert fget.__module__ == "xmppd.xml.element"
    else:
        assert fget.__module__ == compiled.__name__


def test_built_lazily_once_and_raw_form_dropped():
    calls = []

    def lazy():
        calls.append(1)
        return ["text"]

    el = Element("a", lazy=lazy, raw_inner=b"text", raw_ns="urn:x")
    kids = el.children
    assert kids == ["text"] and el.children is kids and calls == [1]
    assert el._lazy is None and el._raw_inner is None and el._children is kids


def test_no_children_gives_a_kept_empty_list():
    el = Element("a")
    kids = el.children
    assert kids == [] and el.children is kids


def test_a_failing_builder_leaves_the_element_unbuilt():
    def lazy():
        raise ValueError("boom")

    el = Element("a", lazy=lazy, raw_inner=b"x")
    with pytest.raises(ValueError, match="boom"):
        el.children  # noqa: B018
    assert el._lazy is lazy and el._children is None and el._raw_inner is None


def test_setting_drops_the_builder_and_the_raw_form():
    el = Element("a", lazy=lambda: ["old"], raw_inner=b"old")
    el.children = ["new"]
    assert el._lazy is None and el._raw_inner is None and el.children == ["new"]


def test_an_element_without_its_slots_fails_as_the_property_does():
    el = Element.__new__(Element)
    with pytest.raises(AttributeError):
        el.children  # noqa: B018
    with pytest.raises(AttributeError):
        del el.children
