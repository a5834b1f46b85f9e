"""Services: the code paths that tie the engine, the store and the integrations."""
