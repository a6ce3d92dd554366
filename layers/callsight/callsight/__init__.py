"""Callsight shared layer: domain logic and adapters."""
