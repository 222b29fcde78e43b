"""The only bridge from the line service to the mail side: the mail commands, the input of
``send``, the login throttle."""
