"""The package's own errors on bad input. Each message names the file or the value at fault (and,
where there is one, the valid choices), and each is raised before any work starts on it.

They subclass ValueError, so code that caught the ValueErrors of earlier versions still catches them.
A value from a file or the command line is shown in a message only through ``shorten``.
"""

import reprlib
from typing import Any


class AdaQPacknetError(ValueError):
    """Base of every error the package raises on bad input (a value, a file, data)."""


class ConfigError(AdaQPacknetError):
    """A config field, parameter file, profile or command-line value outside what the package accepts."""


class CorruptFileError(AdaQPacknetError):
    """A data, results, checkpoint, lock or packed file that cannot be trusted; the message names the file."""


class _ShortRepr(reprlib.Repr):
    """reprlib's abbreviations, and an int of thousands of digits shown by its size: its repr
    would fail (Python's 4300-digit limit) or fill the terminal."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 3, 6, 6, 6, 6
        self.maxstring, self.maxother, self.maxlong = 60, 60, 40

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # ~39 digits: beyond every bound the package has
            return f"<an int of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_SHORT = _ShortRepr()
TEXT_LIMIT = 60  # characters of a text shown with as_text=True


def shorten(value: Any, as_text: bool = False) -> str:
    """``value`` as an error message shows it, so that a huge or deeply nested value from a file
    never fills the message: its repr, abbreviated (a few dozen characters per item, a few items
    per container, three levels deep); with ``as_text``, its str (a file's text, an exception's
    message) cut to ``TEXT_LIMIT`` characters. The one way the package shows a bad value."""
    if not as_text:
        return _SHORT.repr(value)
    try:
        text = str(value)
    except ValueError:  # an int past Python's 4300-digit conversion limit
        return _SHORT.repr(value)
    return text if len(text) <= TEXT_LIMIT else f"{text[:TEXT_LIMIT]}... ({len(text)} characters)"
