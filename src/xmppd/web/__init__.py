"""Web transports: BOSH (XEP-0124/0206) framing, sans-IO."""
