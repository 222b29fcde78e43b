"""The mail side: IMAP4 checks of configured accounts, and the sessions behind mail commands."""
