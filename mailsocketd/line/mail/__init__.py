"""The only bridge from the line service to the mail side: the mail commands and the logged-in
users' IMAP sessions (``MailBridge``, a Service), the input of ``send``, the login throttle."""
