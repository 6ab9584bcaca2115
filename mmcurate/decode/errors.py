class DecodeError(ValueError):
    """A member that cannot be decoded; ``str(err)`` is the reason recorded for the sample."""
