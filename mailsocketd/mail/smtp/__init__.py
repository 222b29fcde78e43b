"""Sending: ``[smtp]`` and the submission (SMTP, or the local sendmail)."""
