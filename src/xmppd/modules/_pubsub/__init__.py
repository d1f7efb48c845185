"""The node and item engine shared by PEP (XEP-0163, on accounts' bare JIDs) and the
PubSub service (XEP-0060, on ``pubsub.<domain>``): node configuration and access checks
(:mod:`.node`), storage of nodes, items, subscriptions and affiliations (:mod:`.engine`),
the ``pubsub`` / ``pubsub#owner`` IQ protocol (:mod:`.protocol`), XEP-0004 forms
(:mod:`.forms`) and entity capabilities (:mod:`.caps`).  PEP and the service differ only
in addressing, defaults and who is told about a new item.
"""

from __future__ import annotations

from xmppd.xml.element import Element
from xmppd.xml.stanza import STANZA_ERROR_NS, StanzaError, error_reply

NS = "http://jabber.org/protocol/pubsub"
OWNER_NS = NS + "#owner"
EVENT_NS = NS + "#event"
ERRORS_NS = NS + "#errors"
PUBLISH_OPTIONS_NS = NS + "#publish-options"
NODE_CONFIG_NS = NS + "#node_config"
SUBSCRIBE_OPTIONS_NS = NS + "#subscribe_options"
RSM_NS = "http://jabber.org/protocol/rsm"


class PubSubError(StanzaError):
    """A stanza error with an optional XEP-0060 application condition (``pubsub#errors``
    element name, e.g. ``precondition-not-met``; ``feature`` for ``unsupported``)."""

    def __init__(self, condition: str, app: str | None = None, feature: str | None = None,
                 text: str | None = None, type: str | None = None) -> None:
        super().__init__(condition, text, type)
        self.app = app
        self.feature = feature

    def reply(self, iq: Element) -> Element:
        out = error_reply(iq, self.condition, self.type, self.text)
        if self.app:
            err = out.find("error")
            attrs = {"feature": self.feature} if self.feature else None
            app = Element(self.app, ERRORS_NS, attrs or {}, [])
            kids = err.children
            # RFC 6120 §8.3.2: the defined condition, then <text/>, then the application one
            at = next((i + 1 for i, k in enumerate(kids)
                       if not isinstance(k, str) and k.ns == STANZA_ERROR_NS), len(kids))
            if self.text:
                at += 1
            kids.insert(at, app)
        return out


def unsupported(feature: str) -> PubSubError:
    return PubSubError("feature-not-implemented", "unsupported", feature=feature)
