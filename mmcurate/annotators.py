"""The annotator plugin API: subclass :class:`Annotator` and add it with :func:`register` (or
ship it in a package under the entry-point group ``mmcurate.annotators``); recipes then name it.
The built-ins live in :mod:`mmcurate.steps.annotators`."""

from .steps.annotators import Annotator, AnnotatorUnavailable, NoConfig, Row, get, names, register

__all__ = ["Annotator", "AnnotatorUnavailable", "NoConfig", "Row", "get", "names", "register"]
