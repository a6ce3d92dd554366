"""Transcription helpers: making recordings uploadable (``audio``) and telling the speakers apart (``speakers``)."""
