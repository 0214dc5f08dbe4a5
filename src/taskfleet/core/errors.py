"""Domain errors. Each transport maps these to its own wire shape in exactly one place.

    Error
    ├── Invalid          the request is malformed or breaks a rule
    │   └── TooLarge     a body, line or chunk is over its configured limit
    ├── Unauthorized     no credentials, or wrong ones
    ├── Forbidden        valid credentials, but not allowed to do this
    ├── NotFound         no such account, agent, task, ...
    ├── Conflict         the state moved on (stale attempt, duplicate name, ...)
    └── Busy             the server cannot take this now (no database connection free in
                         time); nothing was done, and the same request may be sent again

The docstring of each class is its default message.
"""

from __future__ import annotations


class Error(Exception):
    """Something went wrong."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        super().__init__(self.message)


class Invalid(Error):
    """The request is invalid."""


class TooLarge(Invalid):
    """The request is too large."""


class Unauthorized(Error):
    """Missing or invalid credentials."""


class Forbidden(Error):
    """Not allowed."""


class NotFound(Error):
    """Not found."""


class Conflict(Error):
    """The request conflicts with the current state."""


class Busy(Error):
    """The server is too busy to take this now; try again."""
