"""Event sources: files and generators that become :class:`~schemas.InteractionEvent` streams."""
