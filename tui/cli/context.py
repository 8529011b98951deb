"""Lazily-built settings and services for CLI handlers, plus output helpers."""

from __future__ import annotations

import json
import sys
from functools import cached_property
from typing import Any

from tui.services import Services, build_services
from tui.settings import Settings, load_settings
from tui.terminal_text import clean_line


class Context:
    """What a CLI handler receives: settings and services, built on first use."""

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self._overrides = overrides or {}

    @cached_property
    def settings(self) -> Settings:
        """Effective settings (env and config file read once); warnings go to stderr."""
        settings = load_settings(overrides=self._overrides)
        for warning in settings.warnings:
            self.err(f"modeldeck: warning: {warning}")
        return settings

    @cached_property
    def services(self) -> Services:
        """The service container."""
        return build_services(self.settings)

    def close(self) -> None:
        """Close services if they were built."""
        if "services" in self.__dict__:
            self.services.close()

    @staticmethod
    def print_json(data: Any) -> None:
        """Write ``data`` as JSON to stdout (ASCII only: every control character, C1 and bidi
        character in a string is a ``\\uXXXX`` escape, never raw)."""
        json.dump(data, sys.stdout, indent=2, default=str, ensure_ascii=True)
        sys.stdout.write("\n")

    @staticmethod
    def err(message: str) -> None:
        """One line on stderr (controls and newlines in it shown escaped)."""
        print(clean_line(message), file=sys.stderr)
