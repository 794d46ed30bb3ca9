"""The HTTP adapter (raw ASGI)."""
