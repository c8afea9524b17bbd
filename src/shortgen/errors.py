"""Typed errors. The library raises these; only the CLI turns them into messages and exit codes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class ShortgenError(Exception):
    """Base class: str(error) is the one-line message a user sees."""

    exit_code = 1


@dataclass
class Where:
    """A position in a source file, printed as file:line:col (1-based)."""

    file: Path | str
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        out = str(self.file)
        if self.line is not None:
            out += f":{self.line}"
            if self.col is not None:
                out += f":{self.col}"
        return out


class ScriptError(ShortgenError):
    """The episode or series file is malformed or fails validation."""

    exit_code = 2

    def __init__(self, where: Where, field: str, message: str):
        self.where, self.field, self.message = where, field, message
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")


class VoiceError(ScriptError):
    """The configured voice is not one the TTS engine has."""


class FontError(ShortgenError):
    exit_code = 2


class TextOverflowError(ShortgenError):
    """Text does not fit its box even at the smallest allowed size.

    `source` says which script field the text came from, for the stage that knows the file to name its
    line and column: ("segment", plan index, field), ("series",), ("next",) or ("outro_text",)."""

    exit_code = 2

    def __init__(self, message: str, source: tuple = (), detail: str = ""):
        super().__init__(message)
        self.source, self.detail = source, detail or message


class BudgetError(ShortgenError):
    """One or more segments run over the series' time budget."""

    exit_code = 3

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(problems[0] if len(problems) == 1 else
                         f"{len(problems)} budget problems:\n  " + "\n  ".join(problems))


class TTSError(ShortgenError):
    exit_code = 4


class EncodeError(ShortgenError):
    exit_code = 5


class ProbeError(ShortgenError):
    """A rendered file is missing, truncated or not what the plan says."""

    exit_code = 6


class DiskFullError(ShortgenError):
    exit_code = 7


class Interrupted(ShortgenError):
    exit_code = 130
