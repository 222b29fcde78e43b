"""Prometheus metrics of the daemon on their own HTTP endpoint (``[metrics] listen``): the
numbers the line service, the mail bridge and the account checks already keep, read at each
scrape, plus a few counters kept as events happen."""
