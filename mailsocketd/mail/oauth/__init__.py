"""OAuth2 for configured accounts: access tokens (``tokens``), the refresh grant and enrolment."""
