"""The configured ``[accounts.NAME]``: settings, connections, state, back-off, hooks, checks."""
