"""Reading the environment variables the template sets: each error names the variable and the expected form."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import TypeVar

from job.core.errors import ConfigError

E = TypeVar("E", bound=Enum)
T = TypeVar("T")


class Environment:
    """Typed access to a mapping of environment variables (os.environ in Lambda, a dict in tests)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def required(self, name: str) -> str:
        value = self.env.get(name, "").strip()
        if not value:
            raise ConfigError(f"environment variable {name} is not set")
        return value

    def optional(self, name: str, default: str = "") -> str:
        return self.env.get(name, default).strip() or default

    def prefix(self, name: str, default: str = "") -> str:
        """An S3 key prefix: '' or ending with '/', never starting with '/'."""
        value = self.optional(name, default)
        if value.startswith("/"):
            raise ConfigError(f"environment variable {name}={value!r}: a key prefix does not start with '/'")
        return value if not value or value.endswith("/") else value + "/"

    def positive(self, name: str, default: str) -> float:
        raw = self.optional(name, default)
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r}: expected a number") from None
        if not value > 0:
            raise ConfigError(f"environment variable {name}={raw!r}: expected a positive number")
        return value

    def choice(self, name: str, kind: type[E], default: E) -> E:
        raw = self.optional(name, str(default.value))
        try:
            return kind(raw)
        except ValueError:
            expected = ", ".join(repr(member.value) for member in kind)
            raise ConfigError(f"environment variable {name}={raw!r}: expected one of {expected}") from None

    def parsed(self, name: str, parse: Callable[[str], T], default: str = "") -> T:
        """A value checked by a core validator; its neutral message gets the variable's name in front."""
        raw = self.optional(name, default)
        try:
            return parse(raw)
        except ConfigError as exc:
            raise ConfigError(f"environment variable {name}: {exc}", exc.setting) from exc
