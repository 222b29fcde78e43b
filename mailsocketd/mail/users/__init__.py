"""A line user's own IMAP session: ``[imap]``, the session and its watch."""
