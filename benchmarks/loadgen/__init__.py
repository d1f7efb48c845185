"""End-to-end XMPP load generator (benchmark tool, not part of the product).

A deliberately minimal client: byte-level framing instead of XML parsing, so that the
generator's own cost per message stays far below the server's.
"""
