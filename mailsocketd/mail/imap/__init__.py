"""Everything that speaks IMAP: the client, its commands and parser, connecting, logging in,
IDLE."""
