"""Decoders for sample members. Each raises :class:`DecodeError` with a short reason."""

from .errors import DecodeError

__all__ = ["DecodeError"]
