"""Getting replies out: queued turns, the outbox and REST sends, status callbacks, the WhatsApp
24-hour window, opt-outs.
"""
