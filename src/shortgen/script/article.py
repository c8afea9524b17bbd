"""`shortgen import`: an article of the series (its plain-text form or its Markdown equivalent) read
into an episode script. The article's sections are joined by concept name: the numbered concepts
(name, definition, detail, analogy), the References table and the Quick Reference table. What cannot be
found is reported as a warning naming the article's line, never made up.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ArticleError, OverwriteError, byte_position

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})
_CONCEPT = re.compile(r"^(?:#{1,6}\s*)?(\d{1,2})[.)]\s+(.+?)\s*#*$")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*$")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
FIVE = 5  # concepts in a part of the series
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


@dataclass
class Concept:
    number: int
    name: str
    line: int  # 1-based, in the article
    text: list[str] = field(default_factory=list)  # its paragraphs: definition, detail, analogy


@dataclass
class Article:
    path: Path
    title: str
    part: int | None
    next: str | None
    concepts: list[Concept]
    references: dict[str, tuple[str, int]]  # the table's concept name -> (reference, line)
    one_liners: dict[str, tuple[str, int]]
    warnings: list[str]


def _clean(text: str) -> str:
    """A line as prose: typographic quotes straightened, Markdown emphasis, links and code marks dropped."""
    text = _LINK.sub(lambda m: m.group(1), text.translate(_QUOTES))
    text = re.sub(r"(\*\*|__|`)", "", text)
    text = re.sub(r"(?<![\w*])\*(?!\s)([^*]+?)\*(?!\w)", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def _key(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", name.casefold())


def _keys(name: str) -> list[str]:
    """The ways a table may name a concept: in full, before its parenthesis, or inside it."""
    out = [_key(name)]
    m = re.fullmatch(r"(.+?)\s*\((.+)\)", name)
    if m:
        out += [_key(m.group(1)), _key(m.group(2))]
    return [k for k in out if k]


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") and not inner.endswith("\\|") else inner
    return [_clean(c.replace("\\|", "|")) for c in re.split(r"(?<!\\)\|", inner)]


def _section(line: str) -> str | None:
    """Which of the article's sections a heading line opens, if it is one."""
    m = _HEADING.match(line)
    text = _key(_clean(m.group(1) if m else line))
    if text in ("references", "reference"):
        return "references"
    if text in ("todaysfive", "thefive", "concepts", "todaysconcepts"):
        return "concepts"
    if text in ("quickreference",):
        return "quick"
    return None if not m else "other"


def parse(path: Path, text: str) -> Article:
    """Read an article. Raises ArticleError, in one line, where it is not one."""
    if not text.strip():
        raise ArticleError(f"{path}: the file is empty")
    lines = text.splitlines()
    warnings: list[str] = []
    title, part, nxt = "", None, None
    concepts: list[Concept] = []
    tables: list[tuple[list[str], list[tuple[list[str], int]]]] = []
    section = None
    table: list[tuple[list[str], int]] = []

    def close_table() -> None:
        if table:
            header, rows = table[0][0], [r for r in table[1:] if not all(re.fullmatch(r":?-{2,}:?", c) for c in r[0])]
            tables.append((header, rows))
            table.clear()

    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if line.startswith("|"):
            table.append((_cells(line), n))
            continue
        close_table()
        if not line or re.fullmatch(r"[-*_]{3,}", line):
            continue
        if not title:
            m = _HEADING.match(line)
            title = _clean(m.group(1) if m else line)
            continue
        m = _CONCEPT.match(line) if section == "concepts" else None
        if m:
            concepts.append(Concept(int(m.group(1)), _clean(m.group(2)), n))
            continue
        sec = _section(line)
        if sec:
            section = sec
            continue
        m = re.search(r"\bNext:\s*(.+?)\s*(?:\u2192|->|>)?\s*$", _clean(line))
        if m and section != "concepts":
            nxt = m.group(1).strip(" .|")
        if part is None:
            m = re.search(r"\bPart\s+(\d+)\s+of\b", _clean(line))
            part = int(m.group(1)) if m else None
        if section != "concepts":
            continue
        if concepts:
            concepts[-1].text.append(_clean(line))
    close_table()

    if not concepts:
        raise ArticleError(f'{path}: not an article of the series: no numbered concepts under a "Today\'s Five" heading')
    title, part = _numbered(path, title, part)

    refs, ones = _tables(path, tables, warnings)
    return Article(path, title, part, nxt, concepts, refs, ones, warnings)


def _numbered(path: Path, title: str, part: int | None) -> tuple[str, int]:
    """The title as "Name #N", and the part's number: from the title's "#N", else a "Part N of" line."""
    m = re.search(r"#\s*(\d+)\s*$", title)
    if m:
        part = int(m.group(1)) if part is None else part
        title = re.sub(r"\s*[-\u2013\u2014:]\s*#\s*(\d+)\s*$", r" #\1", title)
    if part is None:
        raise ArticleError(f"{path}:1: no part number: the title ends with '#N' or a line says 'Part N of the series'")
    return title, part


def _tables(path: Path, tables: list, warnings: list[str]) -> tuple[dict, dict]:
    """The article's tables of references and of one-liners, by concept name: (text, line). An empty cell
    is a warning, not a row."""
    refs: dict[str, tuple[str, int]] = {}
    ones: dict[str, tuple[str, int]] = {}
    for header, rows in tables:
        if len(header) < 2 or _key(header[0]) != "concept":
            continue
        kind = _key(header[1])
        into = (
            refs if kind in ("reference", "references", "paper", "source") else ones if kind in ("oneliner", "summary") else None
        )
        if into is None:
            continue
        for cells, n in rows:
            if len(cells) >= 2 and cells[0]:
                if not cells[1]:
                    warnings.append(f"{path}:{n}: the {header[1]} of '{cells[0]}' is empty")
                    continue
                into[cells[0]] = (cells[1], n)
    return refs, ones


def _same(table_name: str, concept_name: str) -> bool:
    """Whether a table's row names this concept: in full, or by a form of it (its acronym, its expansion)."""
    return bool(set(_keys(table_name)) & set(_keys(concept_name)))


def _find(table: dict[str, tuple[str, int]], concept: Concept) -> tuple[str, int] | None:
    """The concept's row: one naming it in full first, else one naming a form of it."""
    full = _key(concept.name)
    for name, value in table.items():
        if _key(name) == full:
            return value
    return next((value for name, value in table.items() if _same(name, concept.name)), None)


def spoken_name(name: str) -> str:
    """How the narration opens: the name as a sentence ("Activation functions."), an acronym spoken as
    what it stands for ("VLM (Vision-Language Models)" -> "Vision-language models.")."""
    m = re.fullmatch(r"(.+?)\s*\((.+)\)", name)
    if m:
        name = m.group(2) if m.group(1).replace("-", "").isupper() else m.group(1)

    def lower(word: str, first: bool) -> str:
        parts = word.split("-")
        out = []
        for i, p in enumerate(parts):
            titled = len(p) > 1 and p[0].isupper() and p[1:].islower()
            out.append(p.lower() if titled and not (first and i == 0) else p)
        return "-".join(out)

    words = name.split()
    text = " ".join(lower(w, i == 0) for i, w in enumerate(words))
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def segments(article: Article, per_part: int = 5) -> tuple[list[dict], list[str]]:
    """The script's segments, joined by concept name, and what could not be found (warnings)."""
    warnings = list(article.warnings)
    path = article.path
    concepts = article.concepts
    for c in concepts[per_part:]:
        warnings.append(f"{path}:{c.line}: concept {c.number} '{c.name}' left out: a part has {per_part} segments")
    concepts = concepts[:per_part]
    out = []
    for c in concepts:
        if not c.text:
            warnings.append(f"{path}:{c.line}: concept {c.number} '{c.name}' has no text to narrate")
            continue
        seg: dict = {"name": c.name, "narration": " ".join([spoken_name(c.name), *c.text])}
        for key, table, what in (
            ("one_liner", article.one_liners, "Quick Reference"),
            ("reference", article.references, "References"),
        ):
            got = _find(table, c)
            if got is None:
                warnings.append(f"{path}:{c.line}: concept {c.number} '{c.name}' has no row in the {what} table")
            else:
                seg[key] = got[0]
        out.append(seg)
    for table, what in ((article.references, "References"), (article.one_liners, "Quick Reference")):
        for name, (_, n) in table.items():
            if not any(_same(name, s["name"]) for s in out):
                warnings.append(f"{path}:{n}: the {what} table names '{name}', which is not one of the concepts")
    return out, warnings


def episode(article: Article, per_part: int = 5) -> tuple[dict, list[str]]:
    segs, warnings = segments(article, per_part)
    if not segs:
        raise ArticleError(f"{article.path}: no concept has text to narrate")
    data: dict = {"part": article.part, "title": article.title}
    if article.next:
        data["next"] = article.next
    data["segments"] = segs
    return data, warnings


# ---- writing the script -------------------------------------------------------------------------


def _scalar(text: str) -> str:
    plain = re.fullmatch(r"[A-Za-z][\w ,.()'&/+\u2014\u2013-]*", text) and not text.endswith(" ")
    if plain and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)  # a YAML double-quoted scalar


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])", text) if s]


def to_yaml(data: dict, source: str, schema_line: bool) -> str:
    """The script as the shipped ones are laid out: one sentence of narration per line (folded)."""
    out = ["# yaml-language-server: $schema=schema/episode.schema.json"] if schema_line else []
    out.append(f"# {data['title']}, imported from {source} by `shortgen import`.")
    out.append("# Each narration is the article's definition, detail and analogy, in its own words.")
    if "series" in data:
        out.append(f"series: {_scalar(data['series'])}")
    out.append(f"part: {data['part']}")
    out.append(f"title: {_scalar(data['title'])}")
    if "next" in data:
        out.append(f"next: {_scalar(data['next'])}")
    out.append("segments:")
    for i, seg in enumerate(data["segments"]):
        if i:
            out.append("")
        out.append(f"  - name: {_scalar(seg['name'])}")
        out.append("    narration: >")
        out += [f"      {s}" for s in _sentences(seg["narration"])]
        for key in ("one_liner", "reference"):
            if key in seg:
                out.append(f"    {key}: {_scalar(seg[key])}")
    return "\n".join(out) + "\n"


def write(out: Path, text: str, force: bool) -> None:
    """Write the script by atomic rename; an existing file only with `force`."""
    from ..cache import atomic_write_bytes

    if out.exists() and not force:
        raise OverwriteError(f"{out}: exists; pass --force to replace it")
    if out.is_dir():
        raise OverwriteError(f"{out}: is a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, text.encode("utf-8"))


def read(path: Path) -> Article:
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise ArticleError(f"{path}: is a directory, not an article") from None
    if b"\0" in raw[:4096]:
        line, col = byte_position(raw, raw.index(b"\0"))
        raise ArticleError(f"{path}:{line}:{col}: a binary file, not an article")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line, col = byte_position(raw, e.start)
        raise ArticleError(f"{path}:{line}:{col}: not UTF-8 text (byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None
    return parse(path, text)


def series_name(article: Article) -> str:
    return re.sub(r"\s*#\s*\d+\s*$", "", article.title).strip() or article.title


def script(article: Article, out: Path) -> tuple[str, list[str]]:
    """The script's text for `out`, and the warnings. Beside a series file that lists `out`, the part
    takes the series' settings (its segment count among them); elsewhere it names its series itself."""
    from ..settings import Settings
    from .load import find_series_for, load_series

    series = find_series_for(out) if out.parent.is_dir() else None
    per_part = Settings().segments_per_part
    if series is not None:
        per_part = load_series(series).settings_layer.get("segments_per_part", per_part)
    per_part = per_part or FIVE  # the series' format, where nothing says otherwise
    data, warnings = episode(article, per_part)
    found = len(data["segments"])
    if found < per_part:
        raise ArticleError(f"{article.path}: {found} concepts with text, and a part has {per_part}: not an article of the series")
    if series is None:
        data = {"series": series_name(article), **data}
    schema_line = (out.parent / "schema" / "episode.schema.json").is_file()
    return to_yaml(data, article.path.name, schema_line), warnings
