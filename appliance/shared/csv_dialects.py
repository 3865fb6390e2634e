"""The CSV dialects the box writes its spreadsheet files in (the ``export_csv_dialect`` setting,
`venuebox export --csv-dialect`): what separates cells and what marks a number's decimals. Only
numbers change with the dialect, never text (appliance/core/tabulation.py writes the files)."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.shared.errors import DomainError


@dataclass(frozen=True)
class CsvDialect:
    """How the spreadsheet files are written: what separates cells, what marks a number's decimals."""

    name: str
    delimiter: str
    decimal: str
    says: str  # in words, for README.txt and the CLI's help


CSV_DIALECTS = {
    d.name: d
    for d in (
        CsvDialect("excel", ",", ".", "commas between cells, decimal points: 9.4"),
        # What a spreadsheet set to a European language (French, German, ...) opens directly.
        CsvDialect("excel-semicolon", ";", ",", "semicolons between cells, decimal commas: 9,4"),
    )
}
EXCEL = CSV_DIALECTS["excel"]


class UnknownCsvDialect(DomainError):
    """A CSV dialect venuebox does not write; the message lists the ones it does."""


def csv_dialect(name: str) -> CsvDialect:
    """The dialect called ``name``, or UnknownCsvDialect naming the choices."""
    found = CSV_DIALECTS.get(name)
    if found is None:
        choices = " or ".join(f"{d.name} ({d.says})" for d in CSV_DIALECTS.values())
        raise UnknownCsvDialect(f"unknown CSV dialect {name!r}: choose {choices}")
    return found
