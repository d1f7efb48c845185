"""placeholder until the JID module lands"""
