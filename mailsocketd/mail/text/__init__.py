"""Mail as text, pure (no Twisted): charsets, headers, list summaries, rendering, composing."""
