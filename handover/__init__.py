"""Who speaks to the contact: control events, routing to agents, expiry, agent webhooks, the
agents' transcript.
"""
