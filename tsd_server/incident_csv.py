"""The affected devices as CSV: the CLI's ``--format csv`` and the admin page's download.

One writer for both, so the file an operator gets is the same either way: cells cleaned of
what a terminal acts on (a CSV is read with ``cat`` too) and safe to open in a spreadsheet.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable

from tsd_server.incident import COLUMNS, AffectedDevice
from tsd_server.printable_text import control_characters_marked


def to_csv(rows: Iterable[AffectedDevice]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([spreadsheet_safe(control_characters_marked(value))
                         for value in row.cells()])
    return buffer.getvalue()


def spreadsheet_safe(value: str) -> str:
    """A cell starting with = + - @ would run as a formula when the CSV is opened (a tab or
    carriage return in front is "?" by now)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@") else value
