"""Twilio Studio interop: step endpoints, the Executions API, import and export of Studio flows."""
