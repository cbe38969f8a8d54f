"""FAQ pairs out of a spreadsheet saved as CSV: the builder's "Import FAQ pairs".

Columns: a header naming the question and answer columns (``question`` / ``answer``, ``q`` /
``a``, ``faq`` / ``reply``, any case) or, without one, the first two columns. Spreadsheets save
CSV in their own ways, so: UTF-8 with or without a byte-order mark, else Windows-1252 (Excel's
"CSV" on Windows); commas, semicolons (Excel in much of Europe) or tabs. Every failure is an
``FaqImportError`` with a sentence for the form — nothing is saved unless the whole file reads.
"""
import csv
import io

from .knowledge import folded
from .services import storable

MAX_BYTES = 1024 * 1024
MAX_ROWS = 500
MAX_QUESTION = 200  # KnowledgeItem.title
MAX_ANSWER = 5_000
QUESTION_NAMES = {"question", "questions", "q", "faq", "title"}
ANSWER_NAMES = {"answer", "answers", "a", "reply", "response", "body"}


class FaqImportError(ValueError):
    pass


def _text(raw: bytes) -> str:
    if b"\x00" in raw[:4096]:
        raise FaqImportError("That is not a CSV file (save the spreadsheet as CSV first).")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
    return storable(text)  # a NUL past the first 4 KB: kept in a cell, refused by PostgreSQL


# in the order that settles a tie: the rarer separators first ("Q?;9,99 €" is split at its semicolon:
# Excel writes semicolons where the comma is the decimal mark)
DELIMITERS = ("\t", ";", ",")


def _delimiter(text: str) -> str:
    """The separator of a sample's cells. Of those splitting every row into two or more cells, the
    one that leaves the fewest quote characters in the cells (the right one takes away the quotes
    around a cell holding it: split on ";", 'Sundays?,"No; we deliver…"' keeps them), then the one
    least often followed by a space (prose writes "Yes, from 15 €" and "No; we deliver", a
    spreadsheet its separator with none; csv.Sniffer picks the comma in "Q?;Yes, from 15 €"), then
    one giving every row as many cells, then a tab, a semicolon, a comma. If none splits every row:
    the one splitting the most."""
    sample = text[:16384]
    if len(text) > len(sample):
        sample = sample[:sample.rfind("\n") + 1] or sample
    fitting, best, most = [], ",", -1
    for rank, delimiter in enumerate(DELIMITERS):
        try:
            rows = [row for row in csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter) if any(row)]
        except csv.Error:
            continue
        widths = [len(row) for row in rows]
        if widths and min(widths) >= 2:
            quotes = sum(cell.count('"') for row in rows for cell in row)
            spaced = sample.count(delimiter + " ") / sample.count(delimiter)
            fitting.append(((quotes, spaced, len(set(widths)) > 1, rank), delimiter))
        elif sum(width >= 2 for width in widths) > most:
            best, most = delimiter, sum(width >= 2 for width in widths)
    return min(fitting)[1] if fitting else best


def pairs(raw: bytes) -> list[tuple[str, str]]:
    """[(question, answer)] in the file's order, blank rows skipped; FaqImportError otherwise."""
    if len(raw) > MAX_BYTES:
        raise FaqImportError(f"That file is too large: the limit is {MAX_BYTES // 1024} KB.")
    text = _text(raw)
    try:
        rows = [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text))]
    except csv.Error as error:
        raise FaqImportError(f"That file cannot be read as CSV: {error}.") from None
    numbered = [(n, row) for n, row in enumerate(rows, 1) if any(row)]
    if not numbered:
        raise FaqImportError("That file has no rows.")
    q, a = 0, 1
    header = [cell.lower() for cell in numbered[0][1]]
    if any(cell in QUESTION_NAMES for cell in header) and any(cell in ANSWER_NAMES for cell in header):
        q = next(i for i, cell in enumerate(header) if cell in QUESTION_NAMES)
        a = next(i for i, cell in enumerate(header) if cell in ANSWER_NAMES)
        numbered = numbered[1:]
    if len(numbered) > MAX_ROWS:
        raise FaqImportError(f"That file has {len(numbered)} rows: at most {MAX_ROWS} can be imported at once.")
    found, incomplete, too_long, asked = [], [], [], {}
    for n, row in numbered:
        question = row[q] if len(row) > q else ""
        answer = row[a] if len(row) > a else ""
        if not question or not answer:
            incomplete.append(n)
        elif len(question) > MAX_QUESTION or len(answer) > MAX_ANSWER:
            too_long.append(n)
        else:
            found.append((question, answer))
            asked.setdefault(folded(question), []).append(n)  # as the import matches questions (any case)
    if incomplete:
        raise FaqImportError(f"Rows without both a question and an answer: {_rows(incomplete)}. "
                             "Each row needs the question in one column and the answer in the next.")
    if too_long:
        raise FaqImportError(f"Rows too long (a question at most {MAX_QUESTION} characters, an answer "
                             f"{MAX_ANSWER:,}): {_rows(too_long)}.")
    if not found:
        raise FaqImportError("That file has a header but no FAQ rows.")
    repeated = [rows for rows in asked.values() if len(rows) > 1]
    if repeated:  # one answer would silently replace the other
        others = "".join(f"; so do rows {_listed(rows)}" for rows in repeated[1:5])
        more = f"; and {len(repeated) - 5} more questions" if len(repeated) > 5 else ""
        raise FaqImportError(f"Rows {_listed(repeated[0])} ask the same question{others}{more}. "
                             "Keep one row, with the answer you want, for each question.")
    return found


def _listed(numbers: list[int]) -> str:
    """"2 and 3", "1, 3 and 5"."""
    return ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"


def _rows(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
