"""CSV downloads (the inbox export, the activity log), streamed: any number of rows, constant memory."""
import csv
import itertools

from django.http import StreamingHttpResponse
from django.utils import timezone


class _Echo:
    """csv.writer writes into this and hands the line back (the documented streaming-CSV pattern)."""

    def write(self, value):
        return value


def csv_download(name: str, header: list[str], rows) -> StreamingHttpResponse:
    """``rows`` (an iterable of lists, consumed lazily) under ``header`` as ``<name>-<today>.csv``.
    Every text cell goes through ``cell``: names, subjects and tags come from customers too."""
    writer = csv.writer(_Echo())
    safe = ([cell(value) if isinstance(value, str) else value for value in row] for row in rows)
    lines = (writer.writerow(row) for row in itertools.chain([header], safe))
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{timezone.localdate().isoformat()}.csv"'
    return response


def cell(text):
    """A customer's text opened in a spreadsheet must not run as a formula (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
