"""Web transports (sans-IO where it can be): the WebSocket frame codec (RFC 6455, compiled
with a pure twin), XMPP over WebSocket (RFC 7395) framing and its stream shell, and BOSH
(XEP-0124/0206) framing."""
