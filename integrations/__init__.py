"""Adapters from the engine's ports to the outside world (LLMs, messaging)."""
