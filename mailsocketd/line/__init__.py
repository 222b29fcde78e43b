"""The line service: what telnet and netcat users talk to."""
