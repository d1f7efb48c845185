"""The hot half of the cluster frame codec (STANZA records, frame decoding, the element a
STANZA record carries, whether its bytes may go to the recipient as they are, the
receiver's loop that writes a run of such records, the sender's record for a stanza to a
session on a peer): compiled when available, else the pure functions of
:mod:`xmppd.cluster.codec`, its specification.

The rest of the codec (BIND, UNBIND, SHARE and CONTROL records, :func:`codec.frame`) is
used from :mod:`~xmppd.cluster.codec` directly.
"""

from xmppd._impl import choose

_impl = choose("clustercodec", "xmppd.cluster.codec")
FrameDecoder = _impl.FrameDecoder
LinkBuffer = _impl.LinkBuffer
link_stanza = _impl.link_stanza
parse_records = _impl.parse_records
plain_stanza = _impl.plain_stanza
put_stanza = _impl.put_stanza
send_quiet = _impl.send_quiet
send_remote = _impl.send_remote
stanza_element = _impl.stanza_element

__all__ = ["FrameDecoder", "LinkBuffer", "link_stanza", "parse_records", "plain_stanza",
           "put_stanza", "send_quiet", "send_remote", "stanza_element"]
