"""Local stand-ins for the external services Callsight talks to (amoCRM, telephony recordings)."""
