"""Typed errors and the exit-status table. The library raises these; each class carries its status,
and `status_of` maps any exception to one (the CLI and the batch both use it); only the CLI prints."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class ExitStatus(enum.IntEnum):
    OK = 0
    ERROR = 1
    BAD_INPUT = 2  # schema, voice, font, text that does not fit, no scripts found
    OVER_BUDGET = 3
    TTS_FAILED = 4
    ENCODE_FAILED = 5
    BAD_RENDER = 6  # a rendered file is broken or disagrees with its plan
    DISK_FULL = 7
    INTERRUPTED = 130


class ShortgenError(Exception):
    """Base class: str(error) is the one-line message a user sees."""

    exit_code = ExitStatus.ERROR


def status_of(err: BaseException) -> ExitStatus:
    """The exit status for an exception: its class's, disk full for ENOSPC, interrupted for Ctrl-C."""
    if isinstance(err, ShortgenError):
        return ExitStatus(err.exit_code)
    if isinstance(err, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    if isinstance(err, OSError) and err.errno == 28:
        return ExitStatus.DISK_FULL
    return ExitStatus.ERROR


def describe(err: BaseException) -> str:
    """The one line a user sees for an exception (an OSError names its file)."""
    if isinstance(err, ShortgenError):
        return str(err)
    if isinstance(err, OSError):
        if err.errno == 28:
            return disk_full(err.filename) if err.filename else "disk full"
        return f"{err.strerror or err}: {err.filename or ''}"
    return str(err)


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

    exit_code = ExitStatus.BAD_INPUT

    def __init__(self, where: Where, field: str, message: str):
        self.where, self.field, self.message = where, field, message
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")


class VoiceError(ScriptError):
    """The configured voice is not one the TTS engine has."""


class FontError(ShortgenError):
    exit_code = ExitStatus.BAD_INPUT


class TextOverflowError(ShortgenError):
    """Text does not fit its box even at the smallest allowed size.

    `source` says which script field the text came from, for the stage that knows the file to name its
    line and column: ("segment", plan index, field), ("series",), ("next",) or ("outro_text",)."""

    exit_code = ExitStatus.BAD_INPUT

    def __init__(self, message: str, source: tuple = (), detail: str = ""):
        super().__init__(message)
        self.source, self.detail = source, detail or message


class PortError(ShortgenError):
    """`shortgen preview --port N`: nothing can listen there (in use, or not allowed)."""

    exit_code = ExitStatus.BAD_INPUT


class ArticleError(ShortgenError):
    """`shortgen import`: the file is not an article of the series (empty, binary, another structure)."""

    exit_code = ExitStatus.BAD_INPUT


class OverwriteError(ShortgenError):
    """A file the command would write exists, and replacing it was not asked for (--force)."""

    exit_code = ExitStatus.BAD_INPUT


class NothingRenderedError(ShortgenError):
    """`shortgen gallery` pointed at a folder that does not exist."""

    exit_code = ExitStatus.BAD_INPUT


class MediaReadError(ShortgenError):
    """A picture or clip that passed its checks at load failed while being read (changed since, or
    broken past its first frames): the message names the script's place for it."""

    exit_code = ExitStatus.BAD_INPUT


class BudgetError(ShortgenError):
    """One or more segments run over the series' time budget."""

    exit_code = ExitStatus.OVER_BUDGET

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(problems[0] if len(problems) == 1 else f"{len(problems)} budget problems:\n  " + "\n  ".join(problems))


class TTSError(ShortgenError):
    exit_code = ExitStatus.TTS_FAILED


class EncodeError(ShortgenError):
    exit_code = ExitStatus.ENCODE_FAILED


class ProbeError(ShortgenError):
    """A rendered file is missing, truncated or not what the plan says."""

    exit_code = ExitStatus.BAD_RENDER


class DiskFullError(ShortgenError):
    exit_code = ExitStatus.DISK_FULL


def byte_position(data: bytes, at: int) -> tuple[int, int]:
    """The 1-based line and column (in characters) of byte `at` of a file, for messages."""
    start = data.rfind(b"\n", 0, at) + 1
    return data.count(b"\n", 0, at) + 1, len(data[start:at].decode("utf-8", errors="replace")) + 1


def disk_full(path, need: int = 0) -> str:
    """'disk full' with what a user can act on: the folder, what is free there, about what was needed."""
    import shutil
    from pathlib import Path

    folder = Path(path).parent
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:.0f} MB free there"
    except OSError:
        free = "its free space unknown"
    return f"disk full writing {Path(path).name} in {folder} ({free}{f'; about {need / 1e6:.0f} MB needed' if need else ''})"


def quiet_libraries() -> None:
    """No library chatter on stderr: what moviepy, Pillow, pydub or numpy warn about is either folded into
    our own one line (an error) or not the user's business. SHORTGEN_WARNINGS=1 shows them again."""
    import os
    import warnings

    if not os.environ.get("SHORTGEN_WARNINGS"):
        warnings.simplefilter("ignore")
