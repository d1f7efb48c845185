"""The subscription state machine against RFC 6121 Appendix A, transition by transition."""

from __future__ import annotations

import pytest

from xmppd.modules._subscription import STATE_NAMES, State, inbound, outbound

N, NPO, NPI, NPOPI = "None", "None + Pending Out", "None + Pending In", "None + Pending Out + Pending In"
T, TPI, F, FPO, B = "To", "To + Pending In", "From", "From + Pending Out", "Both"

# (state before, state after, passed on) for each stanza type, transcribed from the RFC's
# tables: A.2 outbound (passed on = routed to the contact), A.3 inbound (= delivered).
OUTBOUND = {
    "subscribe": [  # A.2.1
        (N, NPO, True), (NPO, NPO, True), (NPI, NPOPI, True), (NPOPI, NPOPI, True),
        (T, T, True), (TPI, TPI, True), (F, FPO, True), (FPO, FPO, True), (B, B, True),
    ],
    "unsubscribe": [  # A.2.2
        (N, N, True), (NPO, N, True), (NPI, NPI, True), (NPOPI, NPI, True),
        (T, N, True), (TPI, NPI, True), (F, F, True), (FPO, F, True), (B, F, True),
    ],
    "subscribed": [  # A.2.3 (the no-change rows pre-approve: tested separately)
        (NPI, F, True), (NPOPI, FPO, True), (TPI, B, True),
        (F, F, False), (FPO, FPO, False), (B, B, False),
    ],
    "unsubscribed": [  # A.2.4
        (N, N, False), (NPO, NPO, False), (NPI, N, True), (NPOPI, NPO, True),
        (T, T, False), (TPI, T, True), (F, N, True), (FPO, NPO, True), (B, T, True),
    ],
}
INBOUND = {
    "subscribe": [  # A.3.1 (From/Both rows auto-reply: tested separately)
        (N, NPI, True), (NPO, NPOPI, True), (NPI, NPI, False), (NPOPI, NPOPI, False),
        (T, TPI, True), (TPI, TPI, False),
    ],
    "unsubscribe": [  # A.3.2
        (N, N, False), (NPO, NPO, False), (NPI, N, True), (NPOPI, NPO, True),
        (T, T, False), (TPI, T, True), (F, N, True), (FPO, NPO, True), (B, T, True),
    ],
    "subscribed": [  # A.3.3
        (N, N, False), (NPO, T, True), (NPI, NPI, False), (NPOPI, TPI, True),
        (T, T, False), (TPI, TPI, False), (F, F, False), (FPO, B, True), (B, B, False),
    ],
    "unsubscribed": [  # A.3.4
        (N, N, False), (NPO, N, True), (NPI, NPI, False), (NPOPI, NPI, True),
        (T, N, True), (TPI, NPI, True), (F, F, False), (FPO, F, True), (B, F, True),
    ],
}


def _cases(table):
    return [pytest.param(t, a, b, p, id=f"{t}:{a}") for t, rows in table.items() for a, b, p in rows]


@pytest.mark.parametrize(("stype", "before", "after", "passed_on"), _cases(OUTBOUND))
def test_outbound(stype, before, after, passed_on):
    outcome = outbound(State.from_name(before), stype)
    assert (outcome.state.name, outcome.passed_on, outcome.auto_reply) == (after, passed_on, None)


@pytest.mark.parametrize(("stype", "before", "after", "passed_on"), _cases(INBOUND))
def test_inbound(stype, before, after, passed_on):
    outcome = inbound(State.from_name(before), stype)
    assert (outcome.state.name, outcome.passed_on, outcome.auto_reply) == (after, passed_on, None)


def test_tables_cover_every_state():
    for table in (OUTBOUND, INBOUND):
        for stype, rows in table.items():
            covered = {r[0] for r in rows}
            if stype == "subscribed" and table is OUTBOUND:
                covered |= {N, NPO, T}  # pre-approval rows
            if stype == "subscribe" and table is INBOUND:
                covered |= {F, FPO, B}  # auto-reply rows
            assert covered == set(STATE_NAMES), stype


@pytest.mark.parametrize("before", [F, FPO, B])
def test_inbound_subscribe_already_approved_auto_replies(before):
    outcome = inbound(State.from_name(before), "subscribe")
    assert outcome == (State.from_name(before), False, "subscribed")


@pytest.mark.parametrize("before", [N, NPO, T])
def test_outbound_subscribed_without_request_preapproves(before):
    outcome = outbound(State.from_name(before), "subscribed")
    assert outcome.state == State.from_name(before, approved=True)
    assert not outcome.passed_on


@pytest.mark.parametrize(("before", "after"), [(N, F), (NPO, FPO), (T, B)])
def test_preapproved_subscribe_is_granted_automatically(before, after):
    outcome = inbound(State.from_name(before, approved=True), "subscribe")
    assert outcome == (State.from_name(after), False, "subscribed")
    assert not outcome.state.approved


@pytest.mark.parametrize("before", [N, NPO, T])
def test_outbound_unsubscribed_cancels_preapproval(before):
    outcome = outbound(State.from_name(before, approved=True), "unsubscribed")
    assert outcome.state == State.from_name(before)


def test_approval_clears_preapproval_and_names_roundtrip():
    for name in STATE_NAMES:
        assert State.from_name(name).name == name
    # flags that cannot go with a subscription are ignored rather than crashing
    odd = State("both", pending_out=True, pending_in=True, approved=True)
    assert outbound(odd, "subscribe").state == State("both")
    with pytest.raises(ValueError):
        outbound(State(), "probe")
