class DecodeError(ValueError):
    """A member that cannot be decoded; ``str(err)`` is the reason recorded for the sample."""


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception message on one short line (FFmpeg and decord messages carry dumps)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
