"""Curating transcripts: search, redaction, summaries, publishing, exports, metrics, erasure,
console users.
"""
