"""The turn service and what runs around it: responders, timers, flow versions,
conversation tests.
"""
