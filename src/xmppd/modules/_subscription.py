"""The presence subscription state machine of RFC 6121 §3 and Appendix A, with no I/O.

A :class:`State` is one side's view of one contact: the subscription (``none``, ``to``,
``from``, ``both``) plus the pending-out (``ask``), pending-in and pre-approved flags.
:func:`outbound` is what the user's server does with a subscription stanza the user sends
(Appendix A.2), :func:`inbound` what the contact's server does with one it receives
(Appendix A.3).  Both return an :class:`Outcome`: the new state, whether the stanza is
passed on (routed for outbound, delivered to the user for inbound), and the automatic reply
the server sends in the user's name, if any.  The server applies the outcome; the contact
is an opaque JID, local or remote alike.

The tables use the RFC's state names (``"None + Pending Out"`` ...), so they can be checked
line by line against the RFC.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

__all__ = ["STATE_NAMES", "Outcome", "State", "inbound", "outbound"]

SUBSCRIBE = "subscribe"
SUBSCRIBED = "subscribed"
UNSUBSCRIBE = "unsubscribe"
UNSUBSCRIBED = "unsubscribed"
TYPES = (SUBSCRIBE, SUBSCRIBED, UNSUBSCRIBE, UNSUBSCRIBED)


@dataclass(frozen=True)
class State:
    """One side's subscription state with a contact."""

    subscription: str = "none"
    pending_out: bool = False
    pending_in: bool = False
    approved: bool = False  # pre-approved (RFC 6121 §3.4); only meaningful without 'from'

    @property
    def name(self) -> str:
        """The RFC 6121 Appendix A name of the state (pre-approval is not part of it)."""
        parts = [self.subscription.capitalize()]
        if self.pending_out:
            parts.append("Pending Out")
        if self.pending_in:
            parts.append("Pending In")
        return " + ".join(parts)

    def normalized(self) -> State:
        """Drop flags that cannot go with the subscription (defensive against odd data)."""
        return State(
            self.subscription,
            self.pending_out and not self.has_to,
            self.pending_in and not self.has_from,
            self.approved and not self.has_from,
        )

    @classmethod
    def from_name(cls, name: str, approved: bool = False) -> State:
        parts = name.split(" + ")
        return cls(parts[0].lower(), "Pending Out" in parts, "Pending In" in parts, approved)

    @property
    def has_from(self) -> bool:
        """The contact receives the user's presence."""
        return self.subscription in ("from", "both")

    @property
    def has_to(self) -> bool:
        """The user receives the contact's presence."""
        return self.subscription in ("to", "both")


#: The nine states of Appendix A.1 (the RFC defines no others).
STATE_NAMES = (
    "None",
    "None + Pending Out",
    "None + Pending In",
    "None + Pending Out + Pending In",
    "To",
    "To + Pending In",
    "From",
    "From + Pending Out",
    "Both",
)


class Outcome(NamedTuple):
    """What to do with a subscription stanza."""

    state: State
    passed_on: bool  # outbound: route it to the contact; inbound: deliver it to the user
    auto_reply: str | None = None  # a presence type the server sends back in the user's name


# (state before, new state or None for "no change", passed on)
_Row = tuple[str | None, bool]

# Appendix A.2: outbound stanzas (the user's server; the state is the user's view).
_OUTBOUND: dict[str, dict[str, _Row]] = {
    # A.2.1: the user's server always routes a subscribe, even where it changes nothing, so
    # that the contact's server can resynchronize (it auto-replies where appropriate).
    SUBSCRIBE: {
        "None": ("None + Pending Out", True),
        "None + Pending Out": (None, True),
        "None + Pending In": ("None + Pending Out + Pending In", True),
        "None + Pending Out + Pending In": (None, True),
        "To": (None, True),
        "To + Pending In": (None, True),
        "From": ("From + Pending Out", True),
        "From + Pending Out": (None, True),
        "Both": (None, True),
    },
    # A.2.2: unsubscribe is always routed too.
    UNSUBSCRIBE: {
        "None": (None, True),
        "None + Pending Out": ("None", True),
        "None + Pending In": (None, True),
        "None + Pending Out + Pending In": ("None + Pending In", True),
        "To": ("None", True),
        "To + Pending In": ("None + Pending In", True),
        "From": (None, True),
        "From + Pending Out": ("From", True),
        "Both": ("From", True),
    },
    # A.2.3: subscribed is routed only when it approves a pending request; otherwise it is
    # a pre-approval (handled in outbound()) or ignored.
    SUBSCRIBED: {
        "None": (None, False),
        "None + Pending Out": (None, False),
        "None + Pending In": ("From", True),
        "None + Pending Out + Pending In": ("From + Pending Out", True),
        "To": (None, False),
        "To + Pending In": ("Both", True),
        "From": (None, False),
        "From + Pending Out": (None, False),
        "Both": (None, False),
    },
    # A.2.4: unsubscribed is routed only when it denies or cancels something.
    UNSUBSCRIBED: {
        "None": (None, False),
        "None + Pending Out": (None, False),
        "None + Pending In": ("None", True),
        "None + Pending Out + Pending In": ("None + Pending Out", True),
        "To": (None, False),
        "To + Pending In": ("To", True),
        "From": ("None", True),
        "From + Pending Out": ("None + Pending Out", True),
        "Both": ("To", True),
    },
}

# Appendix A.3: inbound stanzas (the contact's server; the state is the contact's view of
# the user who sent the stanza).
_INBOUND: dict[str, dict[str, _Row]] = {
    # A.3.1: from/both already granted -> auto-reply "subscribed" (see inbound()).
    SUBSCRIBE: {
        "None": ("None + Pending In", True),
        "None + Pending Out": ("None + Pending Out + Pending In", True),
        "None + Pending In": (None, False),
        "None + Pending Out + Pending In": (None, False),
        "To": ("To + Pending In", True),
        "To + Pending In": (None, False),
        "From": (None, False),
        "From + Pending Out": (None, False),
        "Both": (None, False),
    },
    # A.3.2
    UNSUBSCRIBE: {
        "None": (None, False),
        "None + Pending Out": (None, False),
        "None + Pending In": ("None", True),
        "None + Pending Out + Pending In": ("None + Pending Out", True),
        "To": (None, False),
        "To + Pending In": ("To", True),
        "From": ("None", True),
        "From + Pending Out": ("None + Pending Out", True),
        "Both": ("To", True),
    },
    # A.3.3
    SUBSCRIBED: {
        "None": (None, False),
        "None + Pending Out": ("To", True),
        "None + Pending In": (None, False),
        "None + Pending Out + Pending In": ("To + Pending In", True),
        "To": (None, False),
        "To + Pending In": (None, False),
        "From": (None, False),
        "From + Pending Out": ("Both", True),
        "Both": (None, False),
    },
    # A.3.4
    UNSUBSCRIBED: {
        "None": (None, False),
        "None + Pending Out": ("None", True),
        "None + Pending In": (None, False),
        "None + Pending Out + Pending In": ("None + Pending In", True),
        "To": ("None", True),
        "To + Pending In": ("None + Pending In", True),
        "From": (None, False),
        "From + Pending Out": ("From", True),
        "Both": ("From", True),
    },
}


def _apply(table: dict[str, dict[str, _Row]], state: State, stype: str) -> Outcome:
    if stype not in table:
        raise ValueError(f"{stype!r} is not a subscription stanza type")
    new_name, passed_on = table[stype][state.name]
    new = state if new_name is None else State.from_name(new_name, state.approved)
    if new.has_from:
        new = replace(new, approved=False)  # a pre-approval is used up once granted
    return Outcome(new, passed_on)


def outbound(state: State, stype: str) -> Outcome:
    """The user sent a ``stype`` presence to the contact (RFC 6121 Appendix A.2)."""
    state = state.normalized()
    outcome = _apply(_OUTBOUND, state, stype)
    if stype == SUBSCRIBED and not state.pending_in and not state.has_from:
        # §3.4: "subscribed" with no request pending pre-approves the contact.
        return Outcome(replace(state, approved=True), False)
    if stype == UNSUBSCRIBED and state.approved:
        # §3.4: "unsubscribed" cancels a pre-approval.
        return Outcome(replace(outcome.state, approved=False), outcome.passed_on)
    return outcome


def inbound(state: State, stype: str) -> Outcome:
    """The contact sent a ``stype`` presence to the user (RFC 6121 Appendix A.3).

    ``state`` is the receiving user's view of the sender.
    """
    state = state.normalized()
    if stype == SUBSCRIBE:
        if state.has_from:
            # §3.1.3: already approved; answer for the user, do not bother them.
            return Outcome(state, False, SUBSCRIBED)
        if state.approved:
            # §3.4: pre-approved; grant now, answer for the user.
            sub = "both" if state.has_to else "from"
            return Outcome(State(sub, state.pending_out, False, False), False, SUBSCRIBED)
    return _apply(_INBOUND, state, stype)
