"""The project's TSV tables: one writer and one reader, so any legal file name round-trips.

Every table maggotflow writes (the manifest, skipped.tsv, the screen summary's tables, the
evaluation's per_file.tsv and behaviour.tsv) is tab-separated text, UTF-8, one header line,
lines ending in "\\n". A cell that holds a tab, a line break (LF or CR) or a double quote is
written in double quotes, with its quotes doubled (`a"b` is written `"a""b"`): the
quoting of Python's csv module, `QUOTE_MINIMAL`, which pandas, R and spreadsheets read as
well. Every other cell is written as it is, so ordinary tables look exactly as before.
A track file called `a<TAB>b.spine` or `x<LF>y.spine` therefore stays one cell of one row.

Reading uses the csv module on text opened with `newline=""` (a CR inside a quoted cell
survives), accepts a UTF-8 byte-order mark (spreadsheets write one) and `\\r\\n` line ends,
and gives every row every header column ("" where a row is short; cells beyond the header
are dropped). Blank lines are skipped.

Writers (return text; callers write it atomically)::

    format_line(values)            one record, newline included
    format_rows(columns, rows)     header line + one record per row (dicts or sequences)

Readers::

    parse_rows(text) / read_rows(path)     header + records -> [{column: cell}]
    parse_lines(text) / read_lines(path)   records without a header -> [[cell, ...]]
    read_text(path)                        the text as stored (for a reader of its own)
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

# Characters that make a cell need quotes: the delimiter, line breaks, the quote itself.
# (csv.writer with lineterminator "\n" leaves a lone CR unquoted before Python 3.13, and a
# reader then splits the row there: hence this small writer instead of csv.writer.)
_SPECIAL = ("\t", "\n", "\r", '"')


def cell(value: Any) -> str:
    """One cell as written: None -> "", other values -> str(value), quoted when needed."""
    text = "" if value is None else str(value)
    if any(c in text for c in _SPECIAL):
        return '"' + text.replace('"', '""') + '"'
    return text


def format_line(values: Sequence[Any]) -> str:
    """One record: cells (see `cell`) joined by tabs, with its "\\n"."""
    if len(values) == 1 and cell(values[0]) == "":
        return '""\n'  # an empty line would be read as no record at all
    return "\t".join(cell(v) for v in values) + "\n"


def format_rows(columns: Sequence[str], rows: Iterable[Mapping[str, Any] | Sequence[Any]]) -> str:
    """A whole table: the header line, then one record per row.

    A row is a mapping (its values for `columns`, "" where missing) or a sequence of cells
    in column order.
    """
    lines = [format_line(columns)]
    for row in rows:
        values = [row.get(c, "") for c in columns] if isinstance(row, Mapping) else row
        lines.append(format_line(values))
    return "".join(lines)


def parse_lines(text: str) -> list[list[str]]:
    """The records of TSV text, without treating the first as a header. Blank lines are skipped."""
    if text.startswith("\ufeff"):
        text = text[1:]
    return [record for record in csv.reader(io.StringIO(text, newline=""), delimiter="\t") if record]


def parse_rows(text: str) -> list[dict[str, str]]:
    """The rows of TSV text with a header line: one dict per record, keys the header's columns."""
    records = parse_lines(text)
    if not records:
        return []
    header = records[0]
    return [{c: (record[k] if k < len(record) else "") for k, c in enumerate(header)} for record in records[1:]]


def read_text(path: str | Path) -> str:
    """A TSV file's text exactly as stored (line ends untranslated, a leading BOM removed).

    Raises OSError or UnicodeDecodeError as `open` does.
    """
    with open(path, encoding="utf-8-sig", newline="") as f:
        return f.read()


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """`parse_rows` of a file (see `read_text` for what it raises)."""
    return parse_rows(read_text(path))


def read_lines(path: str | Path) -> list[list[str]]:
    """`parse_lines` of a file (see `read_text` for what it raises)."""
    return parse_lines(read_text(path))


