"""Read the user's experiment table and turn it into cells, with messages a person can act on.

Two entry points cover the two kinds of input:

- :func:`read_table` reads an uploaded CSV/TSV/TXT, Parquet or Excel file into a data frame,
  sniffing the text encoding and the delimiter;
- :func:`prepare` checks the chosen roles (outcome, treatment, factors) against one row per
  person and aggregates the rows into a :class:`~hte.cells.CellTable`;
  :func:`prepare_summaries` does the same for a table that is already one row per cell.

Every problem the user can cause raises :class:`~hte.errors.DataError` (the table) or
:class:`~hte.errors.SpecError` (the choices), with a sentence that names the column and the fix.
Level values are always compared as text, through :func:`as_text`, so ``1``, ``1.0`` and ``"1"``
are the same level.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from hte.cells import BINARY, GAUSSIAN, CellTable, aggregate, from_summaries
from hte.errors import DataError, HteError, SpecError

__all__ = [
    "MISSING_LEVEL",
    "RESERVED_NAMES",
    "PreparedData",
    "RoleSuggestion",
    "Roles",
    "SummaryRoles",
    "as_text",
    "bin_numeric",
    "detect_family",
    "prepare",
    "prepare_summaries",
    "read_table",
    "rename_reserved",
    "suggest_roles",
]

#: The level given to a missing factor value.
MISSING_LEVEL = "(missing)"
#: Accepted values of ``Roles.family``.
FAMILY_CHOICES = ("auto", GAUSSIAN, BINARY)

_TEXT_EXTENSIONS = {".csv", ".tsv", ".txt", ".tab", ".dat"}
_PARQUET_EXTENSIONS = {".parquet", ".pq"}
_EXCEL_EXTENSIONS = {".xlsx", ".xlsm"}
_DELIMITERS = (",", ";", "\t")
_DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs"}
_SNIFF_CHARS = 64_000
_SNIFF_RECORDS = 50

# Pairs of outcome values where one obviously means "success" (compared case-insensitively).
_SUCCESS_PAIRS: tuple[tuple[str, str], ...] = (
    ("1", "0"),
    ("true", "false"),
    ("yes", "no"),
    ("y", "n"),
    ("t", "f"),
    ("success", "failure"),
    ("positive", "negative"),
    ("pass", "fail"),
)
_TREATED_WORDS = ("1", "treatment", "treated", "treat", "yes", "true", "t", "y", "intervention",
                  "active", "exposed")
_CONTROL_WORDS = ("0", "control", "untreated", "no", "false", "f", "n", "placebo", "c",
                  "baseline", "comparison")

_DROP_PHRASES = {
    "missing outcome": "the outcome was missing",
    "missing treatment": "the treatment was missing",
    "outcome not a finite number": "the outcome was not a finite number",
}


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def read_table(source: str | os.PathLike[str] | bytes | BinaryIO,
               filename: str | None = None) -> pd.DataFrame:
    """Read an uploaded experiment table into a data frame.

    ``source`` is a path, the file's bytes, or an open binary file (such as a web upload).
    The format comes from the extension of ``filename`` (or of the path, or of the file object's
    ``name``): ``.csv``/``.tsv``/``.txt`` text, ``.parquet`` or ``.xlsx`` (first sheet). Without
    an extension the first bytes decide. Text files are decoded as UTF-8 (with or without a byte
    order mark), falling back to Windows-1252/Latin-1, and the delimiter is sniffed among comma,
    semicolon and tab; in semicolon- and tab-separated files, columns written with a decimal
    comma (``3,5``) are read as numbers.

    Column names are stripped of surrounding whitespace, entirely empty rows are dropped, and
    entirely empty unnamed columns (from trailing delimiters) are dropped. Values are kept as
    read. Raises :class:`DataError` with a plain-language message for anything unusable.
    """
    data, name = _read_source(source, filename)
    label = f"The file '{name}'" if name else "The file"
    if len(data) == 0:
        raise DataError(f"{label} is empty. Upload a table with a header row and one row per "
                        "person.")
    kind = _detect_format(data, name, label)
    if kind == "parquet":
        df = _read_parquet(data, label)
    elif kind == "excel":
        df = _read_excel(data, label)
    else:
        df = _read_text(data, label)
    return _finish_table(df, label)


def _read_source(source: Any, filename: str | None) -> tuple[bytes, str | None]:
    """The raw bytes of ``source`` and the file name to judge its format by."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source), filename
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        shown = filename or path.name
        try:
            exists = path.exists()
        except (OSError, ValueError):  # e.g. a name too long or with a NUL byte
            exists = False
        if not exists:
            raise DataError(f"The file '{path}' does not exist. Check the path and try again.")
        if path.is_dir():
            raise DataError(f"'{path}' is a folder, not a file. Choose the table file inside it.")
        try:
            return path.read_bytes(), shown
        except OSError as exc:
            raise DataError(f"The file '{shown}' could not be opened. "
                            "Check that it exists and that you may read it.") from exc
    if hasattr(source, "read"):
        shown = filename or _name_of(source)
        try:
            content = source.read()
        except Exception as exc:  # any failure of a foreign file object
            raise DataError("The uploaded file could not be read. Try uploading it again."
                            ) from exc
        if isinstance(content, str):
            content = content.encode("utf-8")
        if not isinstance(content, bytes | bytearray | memoryview):
            raise DataError("The uploaded file could not be read. Try uploading it again.")
        return bytes(content), shown
    raise DataError("Nothing readable was given as the table: pass a file path, the file's "
                    "bytes, or an uploaded file.")


def _name_of(source: Any) -> str | None:
    name = getattr(source, "name", None)
    if isinstance(name, str | os.PathLike):
        return Path(name).name
    return None


def _detect_format(data: bytes, name: str | None, label: str) -> str:
    """``"text"``, ``"parquet"`` or ``"excel"``, from the extension or else the first bytes."""
    magic = _magic_format(data)
    ext = Path(name).suffix.lower() if name else ""
    if ext in _PARQUET_EXTENSIONS:
        return "parquet"
    if ext in _EXCEL_EXTENSIONS:
        return "excel"
    if ext == ".xls":
        raise DataError(f"{label} is an old-style Excel .xls workbook, which cannot be read. "
                        "Open it in Excel and save it as .xlsx or CSV.")
    if ext in _TEXT_EXTENSIONS:
        # A mislabelled Parquet/Excel file is still read as what it is.
        return magic if magic in ("parquet", "excel") else "text"
    if ext:
        raise DataError(f"{label} has the extension '{ext}', which is not supported. Upload a "
                        "CSV, TSV or TXT text file, an Excel .xlsx workbook or a Parquet file.")
    return magic if magic in ("parquet", "excel") else "text"


def _magic_format(data: bytes) -> str | None:
    if data.startswith(b"PAR1"):
        return "parquet"
    if data.startswith(b"PK\x03\x04"):
        return "excel"
    return None


_BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"\xd0\xcf\x11\xe0", "an old-style Office file (such as an Excel .xls workbook)"),
    (b"PK\x03\x04", "a zip archive"),
)


def _read_text(data: bytes, label: str) -> pd.DataFrame:
    text = _decode(data, label)
    if not text.strip():
        raise DataError(f"{label} is empty. Upload a table with a header row and one row per "
                        "person.")
    hint = re.match(r"sep=([,;\t|])[ \t]*\r?\n", text)  # Excel's "sep=;" first line
    if hint:
        text = text[hint.end():]
    delimiter, header, sample_records = _sniff_delimiter(text)
    if hint and hint.group(1) in _DELIMITERS:
        recs = _records(text, hint.group(1))
        if recs and len(recs[0][1]) >= 2:
            delimiter, header, sample_records = hint.group(1), recs[0][1], recs[1:]
    if delimiter is None or len(header) < 2:
        raise DataError(f"{label} is not a usable experiment table: it has only one column, and "
                        "it needs at least an outcome and a treatment column. Save it with one "
                        "column per variable, separated by commas, semicolons or tabs.")
    names = [h.strip() for h in header]
    _check_duplicates([n for n in names if n], label)
    for line, rec in sample_records:
        if len(rec) > len(header) and not _trailing_empty(rec, len(header)):
            raise DataError(_too_many_message(label, delimiter, line, len(header), len(rec)))
    try:
        with warnings.catch_warnings():
            # index_col=False: a trailing delimiter must not turn the first column into the index
            warnings.simplefilter("ignore")
            df = pd.read_csv(io.StringIO(text), sep=delimiter, low_memory=False, index_col=False)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{label} is empty. Upload a table with a header row and one row per "
                        "person.") from exc
    except pd.errors.ParserError as exc:
        raise DataError(_parser_message(str(exc), label, delimiter)) from exc
    except Exception as exc:  # anything else pandas may raise on odd input
        raise DataError(f"{label} could not be read as a table. Check that it "
                        "is a CSV file with a header row.") from exc
    if len(df.columns) == len(names):
        df.columns = [n or str(c) for n, c in zip(names, df.columns, strict=True)]
    if delimiter in (";", "\t"):
        df = _convert_decimal_commas(df)
    return df


def _decode(data: bytes, label: str) -> str:
    """Decode text bytes: UTF-16 if it has a byte order mark, else UTF-8, else Windows-1252."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise DataError(f"{label} could not be decoded as text. Save it as a UTF-8 CSV "
                            "file and upload it again.") from exc
    head = data[:8192]
    for signature, what in _BINARY_SIGNATURES:
        if head.startswith(signature):
            raise DataError(f"{label} is {what}, not a table. Upload a CSV, Excel .xlsx or "
                            "Parquet file.")
    if b"\x00" in head:
        raise DataError(f"{label} is not a table: it holds binary data rather than text. "
                        "Upload a CSV, Excel .xlsx or Parquet file.")
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _records(text: str, delimiter: str) -> list[tuple[int, list[str]]]:
    """The first non-blank records of ``text`` split on ``delimiter`` (quotes respected), each
    with the line number it ends on."""
    sample = text[:_SNIFF_CHARS]
    truncated = len(text) > _SNIFF_CHARS
    if truncated:  # drop a record cut in half by the sample
        cut = sample.rfind("\n")
        sample = sample[:cut] if cut > 0 else sample
    out: list[tuple[int, list[str]]] = []
    try:
        reader = csv.reader(io.StringIO(sample), delimiter=delimiter)
        for rec in reader:
            if not rec or all(not v.strip() for v in rec):
                continue
            out.append((reader.line_num, rec))
            if len(out) > _SNIFF_RECORDS:
                break
    except csv.Error:
        return out
    return out


def _sniff_delimiter(text: str
                     ) -> tuple[str | None, list[str], list[tuple[int, list[str]]]]:
    """The delimiter among comma, semicolon and tab, the header record and the data records.

    ``csv.Sniffer`` (restricted to the three) is consulted first; its answer is kept only if it
    splits the header into at least two columns and the rows as consistently as any other
    candidate. Otherwise the candidate whose rows most often have as many fields as the header
    wins (ties: more columns, then comma, semicolon, tab).
    """
    scores: dict[str, tuple[float, int]] = {}
    parsed: dict[str, list[tuple[int, list[str]]]] = {}
    for d in _DELIMITERS:
        recs = _records(text, d)
        parsed[d] = recs
        if not recs or len(recs[0][1]) < 2:
            continue
        width = len(recs[0][1])
        body = [r for _, r in recs[1:]]
        consistent = (sum(len(r) == width or _trailing_empty(r, width) for r in body) / len(body)
                      if body else 1.0)
        scores[d] = (consistent, width)
    if not scores:
        return None, parsed[","][0][1] if parsed[","] else [], []
    best = max(scores.values())[0]
    try:
        sniffed = csv.Sniffer().sniff(text[:_SNIFF_CHARS // 4], delimiters="".join(_DELIMITERS))
        choice: str | None = sniffed.delimiter
    except csv.Error:
        choice = None
    if choice not in scores or scores[choice][0] < best:
        choice = max(scores, key=lambda d: (scores[d], -_DELIMITERS.index(d)))
    recs = parsed[choice]
    return choice, recs[0][1], recs[1:]


def _trailing_empty(record: list[str], width: int) -> bool:
    return len(record) > width and all(not v.strip() for v in record[width:])


def _too_many_message(label: str, delimiter: str, line: int | str, expected: int | str,
                      saw: int | str) -> str:
    return (f"Line {line} of {_lower_first(label)} has {saw} values but the header has "
            f"{expected} column names. Check that line for {_DELIMITER_NAMES[delimiter]} inside "
            "a value (put such values in quotes) or for a missing column name.")


def _parser_message(raw: str, label: str, delimiter: str) -> str:
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", raw)
    if m:
        expected, line, saw = m.groups()
        return _too_many_message(label, delimiter, line, expected, saw)
    m = re.search(r"EOF inside string starting at row (\d+)", raw)
    if m:
        return (f"A quotation mark (\") on line {int(m.group(1)) + 1} of {_lower_first(label)} "
                "is never closed. Close or remove it and upload the file again.")
    return (f"{label} could not be read as a table. Check that it is a CSV file with a header "
            "row and one row per person.")


_DECIMAL_COMMA = re.compile(r"^\s*[+-]?(\d+,\d+|\d+|,\d+)\s*$")


def _convert_decimal_commas(df: pd.DataFrame) -> pd.DataFrame:
    """Turn text columns written with a decimal comma (``3,5``) into numbers."""
    out = df
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_numeric_dtype(s.dtype) or isinstance(s.dtype, pd.CategoricalDtype):
            continue
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        if len(uniques) == 0:
            continue
        texts = [u for u in uniques if isinstance(u, str)]
        if len(texts) != len(uniques) or not all(_DECIMAL_COMMA.match(t) for t in texts):
            continue
        if not any("," in t for t in texts):
            continue
        values = np.array([float(t.strip().replace(",", ".")) for t in texts] + [np.nan])
        if out is df:
            out = df.copy()
        out[col] = values[codes]
    return out


def _read_parquet(data: bytes, label: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises many types on corrupt files
        raise DataError(f"{label} could not be read as a Parquet file. Check "
                        "that the upload finished and export the table again.") from exc


def _read_excel(data: bytes, label: str) -> pd.DataFrame:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = pd.read_excel(io.BytesIO(data), sheet_name=0, engine="openpyxl")
            header = pd.read_excel(io.BytesIO(data), sheet_name=0, engine="openpyxl",
                                   header=None, nrows=1)
    except Exception as exc:  # zipfile, openpyxl and pandas errors alike
        raise DataError(f"{label} could not be read as an Excel workbook. Open "
                        "it in Excel and save it again as .xlsx, or export the sheet as CSV."
                        ) from exc
    if not header.empty and header.shape[1] == df.shape[1]:
        names = ["" if pd.isna(v) else _canon_scalar(v) or "" for v in header.iloc[0]]
        filled = [n if n else str(c) for n, c in zip(names, df.columns, strict=True)]
        _check_duplicates([n for n in filled if n], label)
        df.columns = filled
    return df


def _finish_table(df: pd.DataFrame, label: str) -> pd.DataFrame:
    """Common clean-up and checks for every format."""
    df.columns = [str(c).strip() for c in df.columns]
    unnamed = [c for c in df.columns if (not c or c.startswith("Unnamed:"))]
    empty_unnamed = [c for c in unnamed if df[c].isna().all()]
    if empty_unnamed:
        df = df.drop(columns=empty_unnamed)
    _check_duplicates(list(df.columns), label)
    if df.shape[1] == 0:
        raise DataError(f"{label} is empty. Upload a table with a header row and one row per "
                        "person.")
    if df.shape[1] < 2:
        raise DataError(f"{label} is not a usable experiment table: it has only one column "
                        f"('{df.columns[0]}'), and it needs at least an outcome and a treatment "
                        "column. If it is a text file, separate the columns with commas, "
                        "semicolons or tabs.")
    if len(df) and df.isna().all(axis=1).any():
        df = df.loc[~df.isna().all(axis=1)]
    if len(df) == 0:
        raise DataError(f"{label} has column names but no rows. Upload the table with one row "
                        "per person under the header.")
    return df.reset_index(drop=True)


def _check_duplicates(names: Sequence[str], label: str) -> None:
    seen: set[str] = set()
    dupes: list[str] = []
    for n in names:
        if n in seen and n not in dupes:
            dupes.append(n)
        seen.add(n)
    if dupes:
        listed = ", ".join(f"'{d}'" for d in dupes[:10])
        several = len(dupes) > 1
        raise DataError(f"{label} has more than one column named {listed}. Rename the "
                        f"duplicate column{'s' if several else ''} so that every column name is "
                        "different.")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


# --------------------------------------------------------------------------------------------
# Text and numbers
# --------------------------------------------------------------------------------------------


def as_text(values: pd.Series) -> pd.Series:
    """Canonical text of each value, the form in which levels are compared and shown.

    Whole-number floats become ``"1"`` (not ``"1.0"``), booleans ``"True"``/``"False"``,
    dates at midnight ``"2024-01-31"``, and strings are stripped of surrounding whitespace
    (an empty or blank string counts as missing). Missing values stay missing (NaN). Text that
    merely looks like a number is kept as written. Returns a string Series with the same index
    and name.
    """
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = _canon_array(pd.Index(s.cat.categories))
        codes = s.cat.codes.to_numpy()
    else:
        codes, uniques = pd.factorize(s, use_na_sentinel=True)
        cats = _canon_array(uniques)
    return _text_from_codes(cats, np.asarray(codes), s.index, s.name)


_STR_DTYPE = pd.Series([""], dtype="str").dtype
_ARROW_STR = isinstance(_STR_DTYPE, pd.StringDtype) and _STR_DTYPE.storage == "pyarrow"


def _text_from_codes(cats: np.ndarray, codes: np.ndarray, index: pd.Index, name: Any
                     ) -> pd.Series:
    """A string Series whose value i is ``cats[codes[i]]`` (missing where the code is -1).

    With pandas' Arrow-backed strings the take happens in Arrow, which is several times faster
    than building Python strings for a million rows.
    """
    if _ARROW_STR:
        try:
            import pyarrow as pa

            dictionary = pa.array(cats.astype(object), from_pandas=True, type=pa.large_string())
            taken = dictionary.take(pa.array(codes, mask=codes < 0, type=pa.int64()))
            values = pd.arrays.ArrowStringArray(taken, dtype=_STR_DTYPE)
            return pd.Series(values, index=index, name=name)
        except Exception:  # any pyarrow/pandas version mismatch: use the plain path below
            pass
    lookup = np.append(cats.astype(object), np.nan)
    return pd.Series(lookup[codes], index=index, name=name, dtype="str")


def _canon_array(uniques: Any) -> np.ndarray:
    """Canonical text (object array; NaN for missing) of distinct non-missing values."""
    idx = pd.Index(uniques)
    dtype = idx.dtype
    if len(idx) == 0:
        return np.array([], dtype=object)
    if pd.api.types.is_bool_dtype(dtype):
        arr = idx.to_numpy(dtype=bool)
        return np.where(arr, "True", "False").astype(object)
    if pd.api.types.is_integer_dtype(dtype):
        return idx.to_numpy(dtype=np.int64).astype(str).astype(object)
    if pd.api.types.is_float_dtype(dtype):
        return _format_floats(idx.to_numpy(dtype=np.float64))
    return np.array([_canon_scalar(v) for v in idx], dtype=object)


def _format_floats(a: np.ndarray) -> np.ndarray:
    out = np.empty(len(a), dtype=object)
    whole = np.isfinite(a) & (np.abs(a) < 1e15)
    whole[whole] = a[whole] == np.round(a[whole])
    out[whole] = a[whole].astype(np.int64).astype(str)
    out[~whole] = a[~whole].astype(str)
    out[np.isnan(a)] = np.nan
    return out


def _canon_scalar(v: Any) -> Any:
    """Canonical text of one value, or NaN if it is missing."""
    if v is None or v is pd.NaT or v is pd.NA:
        return np.nan
    if isinstance(v, str):
        t = v.strip()
        return t if t else np.nan
    if isinstance(v, bool | np.bool_):
        return "True" if v else "False"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return np.nan
        if math.isfinite(f) and f == round(f) and abs(f) < 1e15:
            return str(int(f))
        return repr(f)
    if isinstance(v, pd.Timestamp):
        if v.tz is None and v == v.normalize():
            return v.strftime("%Y-%m-%d")
        return v.isoformat()
    try:
        if pd.isna(v):
            return np.nan
    except (TypeError, ValueError):
        pass
    t = str(v).strip()
    return t if t else np.nan


def _numeric_values(values: pd.Series) -> pd.Series | None:
    """``values`` as float64 if they are numbers or text that all reads as numbers, else None.

    Text is tried as written, then with a decimal comma (``"3,5"`` is 3.5). Booleans are not
    numbers here. Missing stays NaN.
    """
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return None
    if pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return values.astype("float64")
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if len(uniques) == 0:
        return None
    if isinstance(uniques, pd.Index) and pd.api.types.is_numeric_dtype(uniques.dtype):
        if pd.api.types.is_bool_dtype(uniques.dtype):
            return None
        nums = uniques.to_numpy(dtype=np.float64)
    else:
        items = list(uniques)
        if any(isinstance(u, bool | np.bool_) for u in items):
            return None
        texts = pd.Series([_canon_scalar(u) for u in items], dtype=object)
        present = texts.notna()
        parsed = pd.to_numeric(texts, errors="coerce")
        if (parsed.notna() != present).any():
            commas = texts.where(present, None).str.replace(",", ".", regex=False)
            parsed = pd.to_numeric(commas, errors="coerce")
            if (parsed.notna() != present).any():
                return None
        nums = parsed.to_numpy(dtype=np.float64)
    lookup = np.append(nums, np.nan)
    return pd.Series(lookup[codes], index=values.index, name=values.name, dtype="float64")


def _format_number(x: float, digits: int = 3) -> str:
    """A readable number: whole numbers as integers, others to ``digits`` significant digits."""
    if not math.isfinite(x):
        return str(x)
    if x == round(x) and abs(x) < 1e15:
        return str(int(x))
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    text = f"{x:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _natural_order(levels: Sequence[str]) -> tuple[str, ...]:
    """Numbers numerically if every level is a number, else case-insensitive alphabetical.

    ``MISSING_LEVEL`` goes last.
    """
    present = [lev for lev in levels if lev != MISSING_LEVEL]
    nums: list[float] = []
    for lev in present:
        try:
            nums.append(float(lev.replace(",", ".")))
        except ValueError:
            break
    if len(nums) == len(present) and not any(math.isnan(n) for n in nums):
        ordered = [lev for _, lev in sorted(zip(nums, present, strict=True))]
    else:
        ordered = sorted(present, key=lambda s: (s.casefold(), s))
    if len(present) != len(levels):
        ordered.append(MISSING_LEVEL)
    return tuple(ordered)


def _match_level(given: Any, levels: Sequence[str]) -> str | None:
    """The level in ``levels`` that ``given`` names: exactly, as the same number, or ignoring
    case. None if there is no such level."""
    text = _canon_scalar(given)
    if not isinstance(text, str):
        return None
    if text in levels:
        return text
    try:
        number = float({"true": "1", "false": "0"}.get(text.casefold(), text))
    except ValueError:
        number = None
    if number is not None:
        for lev in levels:
            try:
                if float(lev) == number:
                    return lev
            except ValueError:
                continue
    folded = [lev for lev in levels if lev.casefold() == text.casefold()]
    return folded[0] if len(folded) == 1 else None


def _quote_list(values: Sequence[Any], limit: int = 10) -> str:
    shown = [f"'{v}'" for v in list(values)[:limit]]
    more = len(values) - limit
    if more > 0:
        shown.append(f"and {more:,} more")
    if len(shown) == 1:
        return shown[0]
    if more > 0:
        return ", ".join(shown)
    return ", ".join(shown[:-1]) + " and " + shown[-1]


def _plain_list(values: Sequence[Any], limit: int = 10) -> str:
    shown = [str(v) for v in list(values)[:limit]]
    more = len(values) - limit
    text = ", ".join(shown)
    return text + (f", and {more:,} more" if more > 0 else "")


# --------------------------------------------------------------------------------------------
# Binning
# --------------------------------------------------------------------------------------------


def bin_numeric(values: pd.Series, n_bins: int = 4) -> pd.Series:
    """Cut a numeric column into (at most) ``n_bins`` groups of about equal size.

    Bins are quantile bins: each holds about the same number of rows, and equal values always
    share a bin. Unlike ``pd.qcut(..., duplicates="drop")``, a value repeated in many rows does
    not swallow its neighbours' bins: it gets a bin of its own and the remaining values are
    split among the remaining bins. Each bin is labelled by the smallest and largest value
    actually in it, e.g. ``"18-24"`` (whole numbers) or ``"0.12-0.57"`` (three significant
    digits); a bin holding one value is just that value, and ranges with negative numbers read
    ``"-5 to -1"``. If the column has no more distinct values than ``n_bins``, each value is its
    own group. Returns an ordered categorical Series of strings (ordered by bin) with the same
    index; missing (and infinite) values stay missing. Text that reads as numbers (including
    decimal commas) is accepted.
    """
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    name = s.name
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:
        raise SpecError(f"The number of groups to bin '{name}' into must be a whole number of "
                        f"at least 2, not {n_bins!r}. Choose, for example, 4 or 5.")
    nums = _numeric_values(s)
    if nums is None:
        sample = _quote_list(sorted(as_text(s).dropna().unique()[:3].tolist()), 3)
        raise SpecError(f"The column '{name}' holds text (e.g. {sample}), so it cannot be split "
                        "into numeric bins. Use it as a factor without binning.")
    v = nums.to_numpy(dtype=np.float64)
    present = np.isfinite(v)
    distinct, counts = np.unique(v[present], return_counts=True)
    codes = np.full(len(v), -1, dtype=np.int64)
    if len(distinct):
        ends = _equal_count_ends(counts, int(n_bins))
        codes[present] = np.searchsorted(distinct[ends], v[present], side="left")
        lows = distinct[np.concatenate([[0], ends[:-1] + 1])]
        highs = distinct[ends]
    else:
        lows = highs = distinct
    labels = _bin_labels(lows, highs)
    cat = pd.Categorical.from_codes(codes, categories=labels, ordered=True)
    return pd.Series(cat, index=s.index, name=name)


def _equal_count_ends(counts: np.ndarray, n_bins: int) -> np.ndarray:
    """Index of the last distinct value in each bin, for bins of about equal row counts.

    Bins are filled left to right; each aims at an equal share of the rows not yet binned, and
    ends at the value boundary nearest that target, leaving at least one value per later bin.
    """
    cum = np.cumsum(counts)
    d = len(counts)
    ends: list[int] = []
    start = 0
    done = 0
    for remaining in range(n_bins, 0, -1):
        if remaining == 1 or d - start <= 1:
            ends.append(d - 1)
            break
        if d - start <= remaining:  # too few values left: one bin each
            ends.extend(range(start, d))
            break
        target = done + (cum[-1] - done) / remaining
        j = int(np.searchsorted(cum, target, side="left"))
        if j > start and abs(cum[j - 1] - target) <= abs(cum[j] - target):
            j -= 1
        j = min(max(j, start), d - remaining)
        ends.append(j)
        done = int(cum[j])
        start = j + 1
    return np.asarray(ends, dtype=np.int64)


def _bin_labels(lows: np.ndarray, highs: np.ndarray) -> list[str]:
    """Labels ``"lo-hi"`` with as few significant digits (at least 3) as keep bins apart."""
    sep = " to " if len(lows) and float(np.min(lows)) < 0 else "-"
    for digits in range(3, 18):
        lo_text = [_format_number(float(x), digits) for x in lows]
        hi_text = [_format_number(float(x), digits) for x in highs]
        # Distinct bins must not look as if they touch or overlap.
        if all(hi_text[i] != lo_text[i + 1] for i in range(len(lows) - 1)):
            break
    return [a if lo == hi else f"{a}{sep}{b}"
            for a, b, lo, hi in zip(lo_text, hi_text, lows, highs, strict=True)]


# --------------------------------------------------------------------------------------------
# Roles and prepared data
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Roles:
    """Which columns play which part, for a table with one row per person.

    - ``outcome``: the column measured after treatment;
    - ``treatment``: the column saying who was treated; ``treated`` is its treated value,
      as text (``"1"``, ``"treatment"``, ``"yes"``); the other value is the control group;
    - ``factors``: pre-treatment columns the effect may vary by;
    - ``family``: ``"auto"`` (decide from the outcome), ``"gaussian"`` or ``"binary"``;
    - ``success``: for a binary outcome, the value that counts as 1 (guessed if not given);
    - ``bins``: numeric factor columns to cut into this many quantile groups;
    - ``max_levels``: the most levels a factor may have.
    """

    outcome: str
    treatment: str
    treated: str
    factors: tuple[str, ...] = ()
    family: str = "auto"
    success: str | None = None
    bins: Mapping[str, int] = field(default_factory=dict)
    max_levels: int = 50


@dataclass(frozen=True)
class SummaryRoles:
    """Which columns play which part, for a pre-aggregated table (one row per cell).

    Each row is one combination of factor levels and arm, with its number of people ``n`` and
    either (Gaussian outcome) the cell ``mean`` and sample standard deviation ``sd`` (which may
    be missing when ``n`` is 1), or (binary outcome) the number of ``successes``. Giving
    ``successes`` makes the outcome binary.
    """

    treatment: str
    treated: str
    factors: tuple[str, ...] = ()
    n: str = "n"
    mean: str | None = "mean"
    sd: str | None = "sd"
    successes: str | None = None
    outcome_name: str = "outcome"
    max_levels: int = 50


@dataclass(frozen=True)
class PreparedData:
    """The validated experiment: its cells plus what was decided on the way.

    ``dropped`` maps a reason to the number of rows dropped for it (only non-zero reasons; for
    a pre-aggregated table, ``"empty cells"`` counts rows with ``n`` = 0 and other reasons count
    people). ``frame`` holds the person rows used (factor columns as text, ``_z`` 0/1 and ``_y``)
    and is None for a pre-aggregated table. ``binned`` gives the bin labels of binned factors.
    ``fingerprint`` is a SHA-256 over the data used and the choices made.
    """

    cells: CellTable
    family: str
    outcome: str
    treatment: str
    treated: str
    control: str
    factors: tuple[str, ...]
    success: str | None
    n_input_rows: int
    dropped: dict[str, int]
    fingerprint: str
    frame: pd.DataFrame | None
    binned: dict[str, tuple[str, ...]]

    @property
    def n_rows(self) -> int:
        """Number of people used."""
        return self.cells.n_rows

    @property
    def arm_sizes(self) -> tuple[int, int]:
        """People in the (treated, control) arms."""
        c = self.cells.cells
        treated = int(c.loc[c["z"] == 1, "n"].sum())
        return treated, int(c["n"].sum()) - treated

    def describe(self) -> str:
        """A plain-language paragraph on what will be analysed and what was left out."""
        parts = [self._describe_rows()]
        n_t, n_c = self.arm_sizes
        parts.append(f"Treated: '{self.treated}' ({_people(n_t)}); control: '{self.control}' "
                     f"({_people(n_c)}).")
        parts.append(self._describe_outcome())
        parts.append(self._describe_factors())
        return " ".join(parts)

    def _describe_rows(self) -> str:
        used = self.n_rows
        if self.frame is None:
            n_cells = len(self.cells.cells)
            text = (f"Using {used:,} people from a table of {n_cells:,} pre-aggregated "
                    f"cell{'s' if n_cells != 1 else ''}")
            pieces = []
            for reason, count in self.dropped.items():
                if reason == "empty cells":
                    pieces.append(f"{count:,} cell{'s' if count != 1 else ''} with no people "
                                  f"{'were' if count != 1 else 'was'} skipped")
                else:
                    phrase = _DROP_PHRASES.get(reason, reason)
                    pieces.append(f"{_people(count)} {'were' if count != 1 else 'was'} left "
                                  f"out because {phrase}")
            return text + (": " + _join(pieces) + "." if pieces else ".")
        if not self.dropped:
            return f"Using all {used:,} row{'s' if used != 1 else ''}."
        pieces = []
        for i, (reason, count) in enumerate(self.dropped.items()):
            phrase = _DROP_PHRASES.get(reason, f"of {reason}")
            if i == 0:
                verb = "row was" if count == 1 else "rows were"
                pieces.append(f"{count:,} {verb} dropped because {phrase}")
            else:
                pieces.append(f"{count:,} because {phrase}")
        return f"Using {used:,} of {self.n_input_rows:,} rows: {_join(pieces)}."

    def _describe_outcome(self) -> str:
        if self.family == GAUSSIAN:
            return (f"Outcome '{self.outcome}' is treated as continuous: effects are differences "
                    "in its mean (Gaussian model).")
        if self.success is not None:
            return (f"Outcome '{self.outcome}' has two values; '{self.success}' counts as a "
                    "success, and effects are on the chance of success (binary model).")
        return (f"Outcome '{self.outcome}' is a count of successes out of n; effects are on the "
                "chance of success (binary model).")

    def _describe_factors(self) -> str:
        if not self.factors:
            return "No factors were chosen, so only the average effect is estimated."
        pieces = []
        for f in self.factors:
            levels = self.cells.levels[f]
            if f in self.binned:
                pieces.append(f"'{f}' (binned into {len(self.binned[f])} groups: "
                              f"{_plain_list(self.binned[f])})")
            else:
                pieces.append(f"'{f}' ({len(levels)} level{'s' if len(levels) != 1 else ''})")
        n_cells = len(self.cells.cells)
        return (f"The effect may vary by {_join(pieces)}, giving {n_cells:,} cells "
                "(combinations of factor levels and arm).")


def _rows(n: int | np.integer) -> str:
    return f"{int(n):,} {'row' if int(n) == 1 else 'rows'}"


def _people(n: int) -> str:
    return f"{n:,} {'person' if n == 1 else 'people'}"


def _join(pieces: Sequence[str]) -> str:
    if len(pieces) <= 1:
        return "".join(pieces)
    return ", ".join(pieces[:-1]) + " and " + pieces[-1]


@dataclass(frozen=True)
class RoleSuggestion:
    """Default role choices guessed from a table; any may be None (or empty) if unclear."""

    outcome: str | None = None
    treatment: str | None = None
    treated: str | None = None
    factors: list[str] = field(default_factory=list)
    binnable: list[str] = field(default_factory=list)
    family: str | None = None


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _column_key(df: pd.DataFrame, name: Any, role: str) -> Any:
    """The column of ``df`` named ``name``, or a SpecError naming it and what is available."""
    try:
        if name in df.columns:
            return name
    except TypeError:  # unhashable
        pass
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f"Choose a column for the {role}.")
    by_text = {str(c): c for c in df.columns}
    if name in by_text:
        return by_text[name]
    names = list(by_text)
    hint = _near_match(name, names)
    did_you_mean = f" Did you mean '{hint}'?" if hint else ""
    raise SpecError(f"There is no column '{name}' for the {role} in the table.{did_you_mean} "
                    f"Available columns: {_quote_list(names)}.")


def _near_match(name: str, names: Sequence[str]) -> str | None:
    def squash(s: str) -> str:
        return re.sub(r"[\s_.\-]+", "", s.casefold())

    target = squash(name)
    for n in names:
        if squash(n) == target:
            return n
    folded = {n.casefold(): n for n in names}
    close = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
    return folded[close[0]] if close else None


def _check_unique_columns(df: pd.DataFrame, keys: Sequence[Any]) -> None:
    dup = df.columns[df.columns.duplicated()]
    bad = [k for k in keys if k in set(dup)]
    if bad:
        raise DataError(f"The table has more than one column named {_quote_list(bad)}. Rename "
                        "the duplicates so that every column name is different.")


#: Column names hte.cells uses for its own statistics, and the columns of every effects table
#: (``by``, ``label``, :data:`hte.result.EFFECT_COLUMNS`, :data:`hte.result.MC_COLUMNS`), which a
#: factor therefore cannot have.
#: Columns only the results have: a table's own column of such a name is renamed on loading in
#: the dashboard (:func:`rename_reserved`), as it is unlikely to be the outcome or treatment.
RESULT_NAMES = frozenset({
    "by", "label", "median", "lower", "upper", "p_above", "p_practically_zero", "p_below",
    "verdict", "extrapolated", "small_arm", "raw_mean", "raw_se", "r_hat", "ess_bulk",
    "ess_tail", "mcse_p_above", "mcse_p_practically_zero", "mcse_p_below",
})
RESERVED_NAMES = frozenset({
    "z", "n", "mean", "ss", "sd", "successes", "arm", "n_treated", "n_control", "var", "_z",
    "_y", "_c2", "_sum", "_sq", "_gm", "_ss", *RESULT_NAMES,
})


def rename_reserved(df: pd.DataFrame, columns: Sequence[str]
                    ) -> tuple[pd.DataFrame, dict[str, str]]:
    """``df`` with each of ``columns`` named like a results column (:data:`RESERVED_NAMES`)
    renamed to ``<name>_group`` (``<name>_group2``... if taken), and the renames made.

    The dashboard applies it on loading to the columns named like :data:`RESULT_NAMES`, so
    such a column can still be a factor.
    """
    taken = {str(c) for c in df.columns}
    renames: dict[str, str] = {}
    for col in dict.fromkeys(columns):
        if isinstance(col, str) and col in RESERVED_NAMES and col in df.columns:
            new, i = f"{col}_group", 2
            while new in taken:
                new, i = f"{col}_group{i}", i + 1
            taken.add(new)
            renames[col] = new
    return (df.rename(columns=renames) if renames else df), renames


def _factor_list(factors: Any) -> tuple[str, ...]:
    """Factors as a tuple without repeats (a lone string is one factor)."""
    if factors is None:
        return ()
    if isinstance(factors, str):
        factors = (factors,)
    out: list[str] = []
    for f in factors:
        if f not in out:
            out.append(f)
    return tuple(out)


def _check_reserved(factors: Sequence[str]) -> None:
    for f in factors:
        if isinstance(f, str) and f in RESERVED_NAMES:
            raise SpecError(f"A factor cannot be called '{f}': that name is used for a column "
                            f"of the results. Rename the column (for example to '{f}_group') "
                            "and choose it again.")


def _check_max_levels(max_levels: Any) -> int:
    if isinstance(max_levels, bool) or not isinstance(max_levels, int | np.integer) \
            or max_levels < 1:
        raise SpecError(f"The largest number of levels a factor may have must be a positive "
                        f"whole number, not {max_levels!r}.")
    return int(max_levels)


def _treatment_arms(t: pd.Series, name: str, treated: Any) -> tuple[str, str]:
    """The (treated, control) levels of a treatment column given as text without missing."""
    levels = _natural_order(list(t.unique()))
    if len(levels) == 0:
        raise DataError(f"The treatment column '{name}' has no values in the rows that have an "
                        "outcome. Check that the right column was chosen.")
    if len(levels) == 1:
        raise SpecError(f"The treatment column '{name}' has only one value: every row is in the "
                        f"same group ('{levels[0]}'), so there is nothing to compare. Choose the "
                        "column that records who was treated and who was not.")
    if len(levels) > 2:
        raise SpecError(f"The treatment column '{name}' has {len(levels):,} different values "
                        f"({_plain_list(levels)}); it must have exactly two: one for treated "
                        "people and one for control. Recode it or filter the table first.")
    if treated is None or (isinstance(treated, str) and not treated.strip()):
        raise SpecError(f"Choose which value of the treatment column '{name}' means treated: "
                        f"'{levels[0]}' or '{levels[1]}'.")
    match = _match_level(treated, levels)
    if match is None:
        raise SpecError(f"The treated value '{treated}' does not occur in the treatment column "
                        f"'{name}', whose values are '{levels[0]}' and '{levels[1]}'. Choose one "
                        "of these two.")
    control = levels[1] if match == levels[0] else levels[0]
    return match, control


def _check_arm_sizes(name: str, treated: str, control: str, n_t: int, n_c: int) -> None:
    for level, n, arm in ((treated, n_t, "treated"), (control, n_c, "control")):
        if n < 2:
            raise SpecError(f"The {arm} group ('{level}' in '{name}') has only {_people(n)}; "
                            "each group needs at least 2. Check the treatment column and the "
                            "rows that were dropped.")


def _default_success(levels: Sequence[str]) -> str | None:
    folded = {lev.casefold(): lev for lev in levels}
    for yes, no in _SUCCESS_PAIRS:
        if set(folded) == {yes, no}:
            return folded[yes]
    return None


def _outcome_kind(values: pd.Series) -> tuple[pd.Series | None, pd.Series | None]:
    """(numbers, None) for a numeric outcome, else (None, canonical text)."""
    nums = _numeric_values(values)
    if nums is not None:
        return nums, None
    return None, as_text(values)


def _choose_family(name: str, nums: pd.Series | None, text: pd.Series | None, family: str,
                   success: Any) -> tuple[str, str | None, np.ndarray]:
    """Decide the likelihood family and success level; return the outcome as float array.

    ``nums``/``text`` hold only the rows used (no missing values).
    """
    if nums is not None:
        distinct = pd.unique(nums.to_numpy(dtype=np.float64))
        k = len(distinct)
        distinct = np.sort(distinct) if k <= 2 else distinct
        labels = list(_format_floats(distinct)) if k <= 2 else []
    else:
        assert text is not None
        labels = list(_natural_order(list(text.unique())))
        distinct = None
        k = len(labels)
    if k == 0:
        raise DataError(f"The outcome '{name}' has no values in the rows with a treatment. "
                        "Choose the column that holds the measured result.")
    if k == 1:
        raise SpecError(f"The outcome '{name}' has the same value ('{labels[0]}') in every row, "
                        "so there is nothing to model. Choose another outcome column.")
    if family == GAUSSIAN:
        if nums is None:
            raise SpecError(f"The outcome '{name}' holds text (e.g. {_quote_list(labels, 3)}), "
                            "so it cannot be modelled as a continuous number. Choose the binary "
                            "model if it has two values, or another outcome column.")
        return GAUSSIAN, None, nums.to_numpy(dtype=np.float64)
    if k > 2:
        if family == BINARY:
            raise SpecError(f"The outcome '{name}' has {k:,} different values, so it is not "
                            "binary (a binary outcome has exactly two, such as yes/no). Choose "
                            "the Gaussian model or recode the outcome into two values.")
        if nums is None:
            raise SpecError(f"The outcome '{name}' holds text (e.g. {_quote_list(labels, 3)}); "
                            "it must be a number or have exactly two values. Recode it or choose "
                            "another outcome column.")
        if success is not None:
            raise SpecError(f"A success value ('{success}') was given, but the outcome '{name}' "
                            f"has {k:,} different values, so it is not yes/no. Clear the success "
                            "value or choose a two-valued outcome.")
        return GAUSSIAN, None, nums.to_numpy(dtype=np.float64)
    # Exactly two values: binary.
    if success is not None and not (isinstance(success, str) and not success.strip()):
        chosen = _match_level(success, labels)
        if chosen is None:
            raise SpecError(f"The success value '{success}' does not occur in the outcome "
                            f"'{name}', whose values are '{labels[0]}' and '{labels[1]}'. Choose "
                            "one of these two.")
    else:
        chosen = _default_success(labels)
        if chosen is None:
            raise SpecError(f"The outcome '{name}' has two values, '{labels[0]}' and "
                            f"'{labels[1]}'; choose which one counts as a success.")
    if nums is not None:
        assert distinct is not None
        hit = distinct[labels.index(chosen)]
        y = (nums.to_numpy(dtype=np.float64) == hit).astype(np.float64)
    else:
        assert text is not None
        y = (text == chosen).to_numpy(dtype=np.float64)
    return BINARY, chosen, y


def detect_family(values: pd.Series, success: str | None = None) -> tuple[str, str | None]:
    """Guess the outcome's family: ``("binary", success level)`` or ``("gaussian", None)``.

    Two distinct values make a binary outcome (``success`` must then be one of them, or is
    guessed from pairs such as 0/1, yes/no, true/false); more numeric values make a Gaussian
    one. Missing and non-finite values are ignored. Raises :class:`SpecError` for text with more
    than two values, a constant outcome or a success level that cannot be settled.
    """
    s = values if isinstance(values, pd.Series) else pd.Series(values)
    name = str(s.name) if s.name is not None else "outcome"
    nums, text = _outcome_kind(s)
    if nums is not None:
        arr = nums.to_numpy(dtype=np.float64)
        nums = nums[np.isfinite(arr)]
    else:
        assert text is not None
        text = text.dropna()
    family, chosen, _ = _choose_family(name, nums, text, "auto", success)
    return family, chosen


def _factor_levels(col: pd.Series, name: str, n_bins: int | None, max_levels: int
                   ) -> tuple[pd.Series, tuple[str, ...], tuple[str, ...] | None]:
    """Text levels of a factor (missing as ``MISSING_LEVEL``), their order and bin labels."""
    bin_labels: tuple[str, ...] | None = None
    if n_bins is not None:
        binned = bin_numeric(col, n_bins)
        bin_labels = tuple(str(c) for c in binned.cat.categories)
        codes = binned.cat.codes.to_numpy().astype(np.int64)
        has_missing = bool((codes < 0).any())
        codes[codes < 0] = len(bin_labels)
        cats = np.array([*bin_labels, MISSING_LEVEL], dtype=object)
        text = _text_from_codes(cats, codes, col.index, col.name)
        order = bin_labels + ((MISSING_LEVEL,) if has_missing else ())
    else:
        text = as_text(col).fillna(MISSING_LEVEL)
        order = _natural_order(list(text.unique()))
    if len(order) > max_levels:
        if n_bins is None and _numeric_values(col) is not None:
            fix = ("It holds numbers, so bin it into a few groups (for example 4 or 5 "
                   "quantile groups) instead.")
        elif n_bins is not None:
            fix = "Choose fewer bins."
        else:
            fix = ("Merge rare values into broader groups (or an 'other' group), or choose "
                   "another factor.")
        raise SpecError(f"The factor '{name}' has {len(order):,} different values, more than "
                        f"the limit of {max_levels:,}. {fix}")
    return text, order, bin_labels


def _fingerprint(meta: Mapping[str, Any], frame: pd.DataFrame) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(meta, sort_keys=True, default=str).encode("utf-8"))
    for col in frame.columns:
        digest.update(b"\x00" + str(col).encode("utf-8") + b"\x00")
        hashed = pd.util.hash_pandas_object(frame[col], index=False)
        digest.update(hashed.to_numpy(dtype=np.uint64).tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------


def prepare(df: pd.DataFrame, roles: Roles) -> PreparedData:
    """Validate ``roles`` against a table of one row per person and aggregate it into cells.

    Rows with a missing outcome or treatment are dropped and counted in ``dropped``; a missing
    factor value becomes the level ``"(missing)"``. See :class:`Roles` for the choices.
    Raises :class:`SpecError` when the choices do not fit the data and :class:`DataError` when
    the table itself is unusable.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError("No table was given. Upload the experiment's data first.")
    if len(df) == 0:
        raise DataError("The table has no rows. Upload the experiment's data with one row per "
                        "person.")
    family = str(roles.family).strip().lower() if roles.family is not None else "auto"
    if family not in FAMILY_CHOICES:
        raise SpecError(f"Unknown outcome type '{roles.family}'. Choose one of: "
                        f"{', '.join(FAMILY_CHOICES)}.")
    max_levels = _check_max_levels(roles.max_levels)
    y_key = _column_key(df, roles.outcome, "outcome")
    t_key = _column_key(df, roles.treatment, "treatment")
    factors = _factor_list(roles.factors)
    f_keys = [_column_key(df, f, "factor") for f in factors]
    if y_key == t_key:
        raise SpecError(f"The column '{roles.outcome}' was chosen as both the outcome and the "
                        "treatment. Choose different columns for the two.")
    for f, key in zip(factors, f_keys, strict=True):
        if key in (y_key, t_key):
            role = "outcome" if key == y_key else "treatment"
            raise SpecError(f"The column '{f}' is the {role}, so it cannot also be a factor. "
                            "Remove it from the factors.")
    _check_reserved(factors)
    _check_unique_columns(df, [y_key, t_key, *f_keys])
    bins = _bins_for(roles.bins, factors)

    n_input = len(df)
    nums, text = _outcome_kind(df[y_key])
    if nums is not None:
        arr = nums.to_numpy(dtype=np.float64)
        miss_y = np.isnan(arr)
        nonfinite = np.isinf(arr)
    else:
        assert text is not None
        miss_y = text.isna().to_numpy()
        nonfinite = np.zeros(n_input, dtype=bool)
    t_text = as_text(df[t_key])
    miss_t = t_text.isna().to_numpy()
    dropped: dict[str, int] = {}
    counts = {
        "missing outcome": int(miss_y.sum()),
        "outcome not a finite number": int(nonfinite.sum()),
        "missing treatment": int((miss_t & ~miss_y & ~nonfinite).sum()),
    }
    for reason in ("missing outcome", "missing treatment", "outcome not a finite number"):
        if counts[reason]:
            dropped[reason] = counts[reason]
    keep = ~(miss_y | miss_t | nonfinite)
    if not keep.any():
        raise DataError(f"No row has both an outcome ('{roles.outcome}') and a treatment "
                        f"('{roles.treatment}'). Check that the right columns were chosen.")
    all_kept = bool(keep.all())

    def kept(s: pd.Series) -> pd.Series:
        return s if all_kept else s[keep]

    t_used = kept(t_text)
    treated, control = _treatment_arms(t_used, str(roles.treatment), roles.treated)
    z = (t_used == treated).to_numpy()
    n_t = int(z.sum())
    _check_arm_sizes(str(roles.treatment), treated, control, n_t, len(z) - n_t)

    fam, success, y = _choose_family(
        str(roles.outcome), kept(nums) if nums is not None else None,
        kept(text) if text is not None else None, family, roles.success)

    index = df.index if all_kept else df.index[keep]
    columns: dict[str, Any] = {}
    levels: dict[str, tuple[str, ...]] = {}
    binned: dict[str, tuple[str, ...]] = {}
    for f, key in zip(factors, f_keys, strict=True):
        values, order, labels = _factor_levels(kept(df[key]), f, bins.get(f), max_levels)
        columns[f] = values.array
        levels[f] = order
        if labels is not None:
            binned[f] = labels
    frame = pd.DataFrame(columns, index=index)
    frame["_z"] = z.astype(np.int64)
    frame["_y"] = y.astype(np.float64)
    cells = aggregate(frame, factors, fam, levels=levels)
    meta = {"outcome": str(roles.outcome), "treatment": str(roles.treatment),
            "treated": treated, "control": control, "family": fam, "success": success,
            "factors": list(factors), "binned": {k: list(v) for k, v in binned.items()}}
    return PreparedData(
        cells=cells, family=fam, outcome=str(roles.outcome), treatment=str(roles.treatment),
        treated=treated, control=control, factors=factors, success=success,
        n_input_rows=n_input, dropped=dropped, fingerprint=_fingerprint(meta, frame),
        frame=frame, binned=binned,
    )


def _bins_for(bins: Any, factors: Sequence[str]) -> dict[str, int]:
    """Bin counts for factors; entries for columns that are not factors are ignored."""
    if not bins:
        return {}
    if not isinstance(bins, Mapping):
        raise SpecError("The binning choice must map each numeric factor to a number of groups, "
                        "for example {'age': 4}.")
    out: dict[str, int] = {}
    for f, n in bins.items():
        if f not in factors:
            continue
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
            raise SpecError(f"The number of groups to bin '{f}' into must be a whole number of "
                            f"at least 2, not {n!r}. Choose, for example, 4 or 5.")
        out[f] = int(n)
    return out


# --------------------------------------------------------------------------------------------
# prepare_summaries
# --------------------------------------------------------------------------------------------


def prepare_summaries(df: pd.DataFrame, roles: SummaryRoles) -> PreparedData:
    """Validate a pre-aggregated table (one row per cell and arm) and build its cell table.

    Rows with ``n`` = 0 are skipped and counted as ``"empty cells"``; rows with a missing
    treatment are left out and their people counted as ``"missing treatment"``. Raises
    :class:`DataError` for impossible counts or statistics and :class:`SpecError` for choices
    that do not fit.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError("No table was given. Upload the table of cell summaries first.")
    if len(df) == 0:
        raise DataError("The table of cell summaries has no rows. Upload one row per "
                        "combination of factor levels and arm.")
    max_levels = _check_max_levels(roles.max_levels)
    binary = roles.successes is not None
    t_key = _column_key(df, roles.treatment, "treatment")
    factors = _factor_list(roles.factors)
    f_keys = [_column_key(df, f, "factor") for f in factors]
    n_key = _column_key(df, roles.n, "number of people per cell (n)")
    if binary:
        s_key = _column_key(df, roles.successes, "number of successes")
        stat_keys = [s_key]
    else:
        if roles.mean is None:
            raise SpecError("Choose the column with each cell's mean outcome, or the column "
                            "with its number of successes for a yes/no outcome.")
        m_key = _column_key(df, roles.mean, "cell mean")
        sd_key = _column_key(df, roles.sd, "cell standard deviation") \
            if roles.sd is not None else None
        stat_keys = [m_key] + ([sd_key] if sd_key is not None else [])
    special = {t_key: "treatment", n_key: "count (n)", **{k: "statistic" for k in stat_keys}}
    roles_used = [t_key, n_key, *stat_keys]
    if len(set(roles_used)) != len(roles_used):
        raise SpecError("The same column was chosen for two different roles (treatment, count, "
                        "mean, sd or successes). Choose a different column for each.")
    for f, key in zip(factors, f_keys, strict=True):
        if key in special:
            raise SpecError(f"The column '{f}' is the {special[key]} column, so it cannot also "
                            "be a factor. Remove it from the factors.")
    _check_reserved(factors)
    _check_unique_columns(df, [*roles_used, *f_keys])

    n = _summary_numbers(df[n_key], str(roles.n), "count of people")
    n_arr = n.to_numpy()
    if np.isnan(n_arr).any():
        raise DataError(f"The count column '{roles.n}' is empty in "
                        f"{_rows(np.isnan(n_arr).sum())}. Every cell needs its number of people.")
    if (n_arr < 0).any() or not np.isfinite(n_arr).all() or (n_arr != np.round(n_arr)).any():
        raise DataError(f"The count column '{roles.n}' must hold whole numbers of people (0 or "
                        "more), but some rows have negative or fractional values. Fix those "
                        "rows.")
    n_input = int(n_arr.sum())
    t_text = as_text(df[t_key])
    miss_t = t_text.isna().to_numpy()
    empty = n_arr == 0
    dropped: dict[str, int] = {}
    if int(empty.sum()):
        dropped["empty cells"] = int(empty.sum())
    missing_people = int(n_arr[miss_t & ~empty].sum())
    if missing_people:
        dropped["missing treatment"] = missing_people
    keep = ~(empty | miss_t)
    if not keep.any():
        raise DataError(f"No row of the summary table has both people (n > 0) and a treatment "
                        f"value ('{roles.treatment}'). Check the count and treatment columns.")

    t_used = t_text[keep]
    treated, control = _treatment_arms(t_used, str(roles.treatment), roles.treated)
    z = (t_used == treated).to_numpy()
    for level, arm, mask in ((treated, "treated", z), (control, "control", ~z)):
        if not mask.any():
            raise SpecError(f"The {arm} group ('{level}' in '{roles.treatment}') has no cells "
                            "with people. Each group needs at least one.")
    n_used = n_arr[keep]
    cells_df = pd.DataFrame(index=range(int(keep.sum())))
    levels: dict[str, tuple[str, ...]] = {}
    for f, key in zip(factors, f_keys, strict=True):
        values, order, _ = _factor_levels(df.loc[keep, key], f, None, max_levels)
        cells_df[f] = values.to_numpy()
        levels[f] = order
    cells_df["z"] = z.astype(np.int64)
    cells_df["n"] = n_used.astype(np.int64)

    if binary:
        succ = _summary_numbers(df[s_key], str(roles.successes), "count of successes")
        s_arr = succ.to_numpy()[keep]
        if np.isnan(s_arr).any():
            raise DataError(f"The successes column '{roles.successes}' is empty in "
                            f"{_rows(np.isnan(s_arr).sum())}. Every cell needs its number "
                            "of successes.")
        if (s_arr != np.round(s_arr)).any() or (s_arr < 0).any() or (s_arr > n_used).any():
            raise DataError(f"The successes column '{roles.successes}' must hold whole numbers "
                            f"between 0 and the cell's count '{roles.n}', but some rows do not. "
                            "Fix those rows.")
        cells_df["successes"] = s_arr.astype(np.int64)
        family = BINARY
    else:
        mean = _summary_numbers(df[m_key], str(roles.mean), "mean").to_numpy()[keep]
        bad_mean = ~np.isfinite(mean)
        if bad_mean.any():
            raise DataError(f"The mean column '{roles.mean}' is empty or not a finite number in "
                            f"{_rows(bad_mean.sum())} with people. Every such cell needs its "
                            "mean outcome.")
        if sd_key is not None:
            sd = _summary_numbers(df[sd_key], str(roles.sd), "standard deviation"
                                  ).to_numpy()[keep]
        else:
            sd = np.full(len(mean), np.nan)
        miss_sd = np.isnan(sd) & (n_used > 1)
        if miss_sd.any():
            what = (f"The standard deviation column '{roles.sd}' is empty in "
                    f"{_rows(miss_sd.sum())} with more than one person"
                    if sd_key is not None else
                    f"No standard deviation column was chosen, but {_rows(miss_sd.sum())} "
                    f"{'has' if int(miss_sd.sum()) == 1 else 'have'} more than one person")
            raise DataError(f"{what}. Every cell with n > 1 needs its within-cell standard "
                            "deviation (it may be empty only when n = 1).")
        if (sd[~np.isnan(sd)] < 0).any() or np.isinf(sd).any():
            raise DataError(f"The standard deviation column '{roles.sd}' has negative or "
                            "infinite values. A standard deviation is 0 or more; fix those rows.")
        cells_df["mean"] = mean
        cells_df["sd"] = np.where(n_used > 1, sd, 0.0)
        family = GAUSSIAN

    cells = from_summaries(cells_df, factors, family, levels=levels)
    meta = {"kind": "summaries", "treatment": str(roles.treatment), "treated": treated,
            "control": control, "family": family, "factors": list(factors),
            "outcome": roles.outcome_name}
    return PreparedData(
        cells=cells, family=family, outcome=str(roles.outcome_name),
        treatment=str(roles.treatment), treated=treated, control=control, factors=factors,
        success=None, n_input_rows=n_input, dropped=dropped,
        fingerprint=_fingerprint(meta, cells_df), frame=None, binned={},
    )


def _summary_numbers(values: pd.Series, name: str, what: str) -> pd.Series:
    nums = _numeric_values(values)
    if nums is None:
        sample = _quote_list(list(as_text(values).dropna().unique()[:3]), 3)
        raise DataError(f"The column '{name}' should hold the {what} of each cell as a number, "
                        f"but it holds text (e.g. {sample}). Choose the right column or fix "
                        "those values.")
    return nums


# --------------------------------------------------------------------------------------------
# suggest_roles
# --------------------------------------------------------------------------------------------

_OUTCOME_NAMES = ("outcome", "y", "response", "score", "support", "result", "target", "dv",
                  "value", "outcomes", "endpoint", "measure", "converted", "conversion",
                  "revenue", "spend", "voted", "turnout", "purchase", "click", "clicked")
_TREATMENT_NAMES = ("treatment", "treat", "treated", "z", "arm", "group", "condition",
                    "assigned", "assignment", "variant", "intervention", "w", "d", "tx")
_TREATMENT_PARTS = ("treat", "arm", "assign", "condition", "variant", "intervention")
_SUGGEST_SAMPLE = 100_000


def suggest_roles(df: pd.DataFrame, max_levels: int = 50) -> RoleSuggestion:
    """Guess sensible default roles for a table, for a form to start from.

    Never raises: anything unclear is left as None (or an empty list). Only the first
    100,000 rows are inspected.
    """
    try:
        return _suggest(df, max_levels)
    except Exception:  # a suggestion must never break the page
        return RoleSuggestion()


def _squash(name: Any) -> str:
    return re.sub(r"[^0-9a-z]+", "", str(name).casefold())


def _suggest(df: pd.DataFrame, max_levels: int) -> RoleSuggestion:
    if not isinstance(df, pd.DataFrame) or df.empty:
        return RoleSuggestion()
    sample = df.head(_SUGGEST_SAMPLE)
    dup = set(sample.columns[sample.columns.duplicated()])
    cols = [c for c in sample.columns if c not in dup]
    info: dict[Any, dict[str, Any]] = {}
    for c in cols:
        s = sample[c]
        nums = _numeric_values(s)
        if nums is not None:
            present = nums.dropna().to_numpy()
            k = len(pd.unique(present))
            levels = (list(_natural_order(list(as_text(s).dropna().unique())))
                      if k <= max_levels else [])
        else:
            text = as_text(s).dropna()
            present = text.to_numpy()
            levels = list(_natural_order(list(text.unique())))
            k = len(levels)
        info[c] = {
            "numeric": nums is not None, "k": k, "levels": levels, "present": len(present),
            "integer": nums is not None and bool(np.all(np.mod(present, 1) == 0)),
        }

    def id_named(c: Any) -> bool:
        return _squash(c) in ("id", "rowid", "index") or str(c).casefold().endswith(
            ("_id", " id"))

    def id_like(c: Any) -> bool:
        i = info[c]
        unique = i["present"] > 1 and i["k"] == i["present"] and (not i["numeric"]
                                                                  or i["integer"])
        return id_named(c) or unique

    # Treatment: a column named like one with exactly two values.
    treatment = None
    two = [c for c in cols if info[c]["k"] == 2]
    ranked = sorted(
        (c for c in two if _squash(c) in _TREATMENT_NAMES),
        key=lambda c: _TREATMENT_NAMES.index(_squash(c)))
    ranked += [c for c in two if c not in ranked
               and any(p in _squash(c) for p in _TREATMENT_PARTS)]
    ranked += [c for c in two if c not in ranked and {lev.casefold() for lev in
               info[c]["levels"]} & {"treatment", "treated", "control", "placebo"}]
    if ranked:
        treatment = ranked[0]
    treated = None
    if treatment is not None:
        levels = info[treatment]["levels"]
        folded = {lev.casefold(): lev for lev in levels}
        for word in _TREATED_WORDS:
            if word in folded:
                treated = folded[word]
                break
        if treated is None:
            controls = [lev for lev in levels if lev.casefold() in _CONTROL_WORDS]
            if len(controls) == 1:
                treated = next(lev for lev in levels if lev != controls[0])

    # Outcome: named like one, else the first continuous numeric column.
    named = [c for c in cols if c != treatment and not id_named(c) and info[c]["k"] >= 2
             and (info[c]["numeric"] or info[c]["k"] == 2)]
    outcome = next((c for name in _OUTCOME_NAMES for c in named if _squash(c) == name), None)
    if outcome is None:
        outcome = next((c for c in named if info[c]["numeric"] and info[c]["k"] > 2
                        and any(p in _squash(c) for p in ("outcome", "score", "response"))),
                       None)
    numeric = [c for c in named if info[c]["numeric"] and info[c]["k"] > 2 and not id_like(c)]
    if outcome is None:  # a continuous column: fractional values first, then many values
        outcome = next((c for c in numeric if not info[c]["integer"]), None)
    if outcome is None:
        outcome = next((c for c in numeric if info[c]["k"] > 12), None)
    if outcome is None:
        outcome = next(iter(numeric), None)
    if outcome is None:  # a yes/no outcome coded as numbers, usually after the treatment
        binary = [c for c in named if info[c]["numeric"] and info[c]["k"] == 2]
        after = [c for c in binary if treatment is not None
                 and cols.index(c) > cols.index(treatment)]
        outcome = (after or binary or [None])[-1]
    family = None
    if outcome is not None:
        try:
            family, _ = detect_family(sample[outcome])
        except HteError:
            family = None

    factors: list[Any] = []
    binnable: list[Any] = []
    for c in cols:
        if c in (outcome, treatment) or id_like(c):
            continue
        i = info[c]
        if i["numeric"] and i["k"] > 12:
            binnable.append(str(c))
        elif 2 <= i["k"] <= max_levels:
            factors.append(str(c))
    return RoleSuggestion(
        outcome=None if outcome is None else str(outcome),
        treatment=None if treatment is None else str(treatment),
        treated=treated, factors=factors, binnable=binnable, family=family,
    )
