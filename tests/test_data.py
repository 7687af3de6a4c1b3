"""Reading and validating the user's experiment table (hte.data)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hte.cells import BINARY, GAUSSIAN
from hte.data import (
    MISSING_LEVEL,
    PreparedData,
    Roles,
    SummaryRoles,
    as_text,
    bin_numeric,
    detect_family,
    prepare,
    prepare_summaries,
    read_table,
    suggest_roles,
)
from hte.errors import DataError, HteError, SpecError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def people() -> pd.DataFrame:
    """A small experiment: 200 people, continuous and binary outcomes, a few factors."""
    rng = np.random.default_rng(7)
    n = 200
    return pd.DataFrame({
        "support": rng.normal(50, 10, n).round(2),
        "voted": rng.choice(["yes", "no"], n),
        "arm": np.tile(["treatment", "control"], n // 2),
        "Gender": rng.choice(["F", "M"], n),
        "age": rng.integers(18, 91, n),
        "region": rng.choice(["North", "south", "East", "west"], n),
        "id": np.arange(n),
    })


def _csv(df: pd.DataFrame, sep: str = ",") -> bytes:
    return df.to_csv(index=False, sep=sep).encode("utf-8")


# --------------------------------------------------------------------------------------------
# read_table: formats, delimiters, encodings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_read_table_sniffs_delimiter(sep: str) -> None:
    data = f"y{sep}arm{sep}city\n1.5{sep}t{sep}Paris\n2.5{sep}c{sep}Lyon\n".encode()
    df = read_table(data, "upload.csv")
    assert list(df.columns) == ["y", "arm", "city"]
    assert df["y"].tolist() == [1.5, 2.5]
    assert df["city"].tolist() == ["Paris", "Lyon"]


def test_read_table_sniffs_delimiter_with_commas_inside_quotes() -> None:
    data = b'name;score;note\n"Smith, J";3;"a, b, c"\n"Doe, A";4;"d, e"\n'
    df = read_table(data, "x.txt")
    assert list(df.columns) == ["name", "score", "note"]
    assert df["name"].tolist() == ["Smith, J", "Doe, A"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16"])
def test_read_table_decodes_encodings(encoding: str) -> None:
    text = "name,city,y\nMüller,Bogotá,1\nRenée,Zürich,0\n"
    df = read_table(text.encode(encoding), "people.csv")
    assert list(df.columns) == ["name", "city", "y"]  # no BOM left on the first name
    assert df["name"].tolist() == ["Müller", "Renée"]
    assert df["city"].tolist() == ["Bogotá", "Zürich"]


def test_read_table_excel_sep_hint_line() -> None:
    df = read_table(b"sep=;\ny;arm\n1,5;t\n2;c\n", "excel.csv")
    assert list(df.columns) == ["y", "arm"] and df["y"].tolist() == [1.5, 2.0]


def test_read_table_decimal_comma_with_semicolons() -> None:
    data = "y;arm;w\n3,5;1;2\n4,25;0;3\n-0,5;1;4\n".encode("cp1252")
    df = read_table(data, "export.csv")
    assert pd.api.types.is_float_dtype(df["y"])
    assert df["y"].tolist() == [3.5, 4.25, -0.5]
    assert df["w"].tolist() == [2, 3, 4]


def test_read_table_strips_column_names_and_drops_empty_rows_and_columns() -> None:
    data = b" y ,  arm\t,\n1,t,\n,,\n2,c,\n"
    df = read_table(data, "x.csv")
    assert list(df.columns) == ["y", "arm"]
    assert len(df) == 2


def test_read_table_from_path_file_object_and_no_extension(tmp_path: Path) -> None:
    path = tmp_path / "table.tsv"
    path.write_bytes(b"y\tarm\n1\ta\n2\tb\n")
    assert read_table(path).shape == (2, 2)
    assert read_table(str(path)).shape == (2, 2)
    upload = io.BytesIO(b"y,arm\n1,a\n2,b\n")
    upload.name = "upload.csv"
    assert read_table(upload).shape == (2, 2)
    assert read_table(b"y,arm\n1,a\n2,b\n").shape == (2, 2)


def test_read_table_parquet_round_trip(tmp_path: Path, people: pd.DataFrame) -> None:
    path = tmp_path / "people.parquet"
    people.to_parquet(path)
    back = read_table(path)
    pd.testing.assert_frame_equal(back, people, check_dtype=False)
    # Bytes without a name are recognised by their magic bytes.
    assert read_table(path.read_bytes()).shape == people.shape


def test_read_table_excel_round_trip(tmp_path: Path, people: pd.DataFrame) -> None:
    path = tmp_path / "people.xlsx"
    people.to_excel(path, index=False)
    back = read_table(path)
    pd.testing.assert_frame_equal(back, people, check_dtype=False)
    assert read_table(path.read_bytes(), None).shape == people.shape


# --------------------------------------------------------------------------------------------
# read_table: unusable files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "words"),
    [
        (b"", "a.csv", ["'a.csv'", "empty"]),
        (b"  \n\n", "a.csv", ["empty"]),
        (b"y,arm\n", "a.csv", ["column names but no rows"]),
        (b"y;arm;age\r\n", None, ["column names but no rows"]),
        (b"dear reader this is a letter\nnot a table at all\n", "notes.txt",
         ["not a usable experiment table", "outcome and a treatment column"]),
        (b"outcome\n1\n2\n3\n", "one.csv", ["not a usable experiment table"]),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "photo.csv", ["PNG image", "not a table"]),
        (bytes(range(256)) * 4, "junk.csv", ["not a table", "binary"]),
        (b"y,arm,y\n1,2,3\n", "d.csv", ["more than one column named 'y'", "Rename"]),
        (b"y, arm ,arm\n1,2,3\n", "d.csv", ["more than one column named 'arm'"]),
        (b"y,arm\n1,t\n2,c,5\n", "ragged.csv", ["Line 3", "3 values", "2 column names", "quotes"]),
        (b"y,arm\n1,t,5\n2,c,6\n", "long.csv", ["Line 2", "3 values"]),
        (("y,arm\n" + "1,t\n" * 5000 + "2,c,6\n").encode(), "late.csv", ["Line 5002"]),
        (b'y,arm\n1,"open\n2,c\n', "quote.csv", ['quotation mark (") on line 2', "closed"]),
        (b"y,arm\n1,t\n", "data.json", ["'.json'", "not supported", "CSV"]),
        (b"\xd0\xcf\x11\xe0\xa1\xb1", "old.xls", [".xls", "save it as .xlsx or CSV"]),
        (b"PK\x03\x04not really a workbook", "broken.xlsx", ["Excel workbook", "save it again"]),
        (b"PAR1 not really parquet", "broken.parquet", ["Parquet file"]),
        (b"PAR1 not really parquet", None, ["Parquet file"]),
    ],
)
def test_read_table_refuses_unusable_files(data: bytes, name: str | None,
                                           words: list[str]) -> None:
    with pytest.raises(DataError) as info:
        read_table(data, name)
    for word in words:
        assert word in str(info.value)


def test_read_table_excel_duplicate_columns(tmp_path: Path) -> None:
    path = tmp_path / "dup.xlsx"
    pd.DataFrame([[1, 2, 3]], columns=["y", "arm", "arm"]).to_excel(path, index=False)
    with pytest.raises(DataError, match="more than one column named 'arm'"):
        read_table(path)


def test_read_table_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="folder"):
        read_table(tmp_path)


def test_read_table_header_only_excel(tmp_path: Path) -> None:
    path = tmp_path / "empty.xlsx"
    pd.DataFrame(columns=["y", "arm"]).to_excel(path, index=False)
    with pytest.raises(DataError, match="column names but no rows"):
        read_table(path)


# --------------------------------------------------------------------------------------------
# as_text, bin_numeric, detect_family
# --------------------------------------------------------------------------------------------


def test_as_text_normalizes_levels() -> None:
    assert as_text(pd.Series([1.0, 0.0, 2.5, np.nan])).tolist()[:3] == ["1", "0", "2.5"]
    assert as_text(pd.Series([True, False])).tolist() == ["True", "False"]
    assert as_text(pd.Series([3, None], dtype="Int64")).iloc[0] == "3"
    mixed = as_text(pd.Series([" a ", "", None, 7, 2.0, "1.0"], dtype=object, name="m"))
    assert mixed.iloc[0] == "a" and mixed.iloc[3] == "7" and mixed.iloc[4] == "2"
    assert mixed.iloc[5] == "1.0"  # text that looks like a number is kept as written
    assert mixed.iloc[1:3].isna().all()  # blank strings and None are missing
    assert mixed.name == "m"
    cat = as_text(pd.Series(["b", None, "a"], dtype="category"))
    assert cat.iloc[0] == "b" and pd.isna(cat.iloc[1])
    dates = as_text(pd.Series(pd.to_datetime(["2024-01-31", None])))
    assert dates.iloc[0] == "2024-01-31" and pd.isna(dates.iloc[1])


def test_as_text_keeps_index() -> None:
    s = pd.Series([1.0, 2.0], index=[10, 20])
    assert list(as_text(s).index) == [10, 20]


def test_bin_numeric_integer_labels_and_order() -> None:
    ages = pd.Series(np.arange(18, 91), name="age")
    binned = bin_numeric(ages, 4)
    cats = list(binned.cat.categories)
    assert cats == ["18-35", "36-53", "54-71", "72-90"]
    assert binned.cat.ordered
    assert binned.iloc[0] == "18-35" and binned.iloc[-1] == "72-90"
    counts = binned.value_counts(sort=False).to_numpy()
    assert counts.max() - counts.min() <= 1


def test_bin_numeric_float_labels_missing_and_negative() -> None:
    x = pd.Series([0.1234, 0.2, 0.3, 0.5678, 0.6, 0.7, np.nan, 0.9, 0.95], name="x")
    binned = bin_numeric(x, 2)
    assert list(binned.cat.categories) == ["0.123-0.568", "0.6-0.95"]
    assert pd.isna(binned.iloc[6])
    neg = bin_numeric(pd.Series([-5, -3, -1, 0, 2, 4]), 2)
    assert list(neg.cat.categories) == ["-5 to -1", "0 to 4"]


def test_bin_numeric_few_values_and_heavy_ties() -> None:
    few = bin_numeric(pd.Series([3, 1, 2, 2, np.nan]), 4)
    assert list(few.cat.categories) == ["1", "2", "3"]
    # A value held by most rows gets its own bin instead of swallowing the others.
    tied = bin_numeric(pd.Series([0] * 90 + list(range(1, 11))), 4)
    assert list(tied.cat.categories) == ["0", "1-3", "4-6", "7-10"]


def test_bin_numeric_accepts_decimal_comma_text_and_refuses_words() -> None:
    assert list(bin_numeric(pd.Series(["1,5", "2,5"]), 2).cat.categories) == ["1.5", "2.5"]
    with pytest.raises(SpecError, match="'colour' holds text"):
        bin_numeric(pd.Series(["red", "blue"], name="colour"))
    with pytest.raises(SpecError, match="at least 2"):
        bin_numeric(pd.Series([1, 2, 3], name="n"), 1)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 1, 1, 0], (BINARY, "1")),
        ([0.0, 1.0, np.nan], (BINARY, "1")),
        ([True, False, True], (BINARY, "True")),
        (["TRUE", "false"], (BINARY, "TRUE")),
        (["No", "Yes", "No"], (BINARY, "Yes")),
        (["n", "y"], (BINARY, "y")),
        (["failure", "success"], (BINARY, "success")),
        (["Negative", "Positive"], (BINARY, "Positive")),
        (["fail", "pass"], (BINARY, "pass")),
        ([1.5, 2.0, 3.25], (GAUSSIAN, None)),
        (["1,5", "2", "3,25"], (GAUSSIAN, None)),
    ],
)
def test_detect_family(values: list, expected: tuple) -> None:
    assert detect_family(pd.Series(values, name="y")) == expected


def test_detect_family_explicit_success_and_refusals() -> None:
    assert detect_family(pd.Series(["a", "b"], name="y"), "b") == (BINARY, "b")
    with pytest.raises(SpecError, match="'y' has two values, 'lost' and 'won'; choose which"):
        detect_family(pd.Series(["won", "lost"], name="y"))
    with pytest.raises(SpecError, match="success value 'maybe' does not occur"):
        detect_family(pd.Series(["yes", "no"], name="y"), "maybe")
    with pytest.raises(SpecError, match="holds text"):
        detect_family(pd.Series(["high", "low", "medium"], name="y"))
    with pytest.raises(SpecError, match="same value"):
        detect_family(pd.Series([4, 4, 4], name="y"))


# --------------------------------------------------------------------------------------------
# prepare: role problems
# --------------------------------------------------------------------------------------------


def test_prepare_unknown_column_suggests_near_match(people: pd.DataFrame) -> None:
    with pytest.raises(SpecError) as info:
        prepare(people, Roles("support", "arm", "treatment", ("gender",)))
    msg = str(info.value)
    assert "no column 'gender'" in msg and "Did you mean 'Gender'?" in msg
    assert "'support'" in msg and "'region'" in msg  # lists available columns


@pytest.mark.parametrize(
    ("roles", "words"),
    [
        (Roles("suport", "arm", "treatment"), ["outcome", "'suport'", "Did you mean 'support'?"]),
        (Roles("support", " ARM", "treatment"), ["treatment", "Did you mean 'arm'?"]),
        (Roles("support", "xyz", "treatment"), ["no column 'xyz'", "Available columns"]),
    ],
)
def test_prepare_unknown_roles(people: pd.DataFrame, roles: Roles, words: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        prepare(people, roles)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("roles", "words"),
    [
        (Roles("support", "support", "1"), ["'support'", "both the outcome and the treatment"]),
        (Roles("support", "arm", "treatment", ("arm",)), ["'arm' is the treatment", "Remove"]),
        (Roles("support", "arm", "treatment", ("support",)), ["'support' is the outcome"]),
        (Roles("support", "arm", "treatment", family="poisson"),
         ["'poisson'", "auto, gaussian, binary"]),
        (Roles("support", "region", "North"), ["'region' has 4 different values",
                                               "East, North, south, west", "exactly two",
                                               "Recode it or filter the table"]),
        (Roles("support", "arm", "treated"), ["treated value 'treated'",
                                              "'control' and 'treatment'"]),
        (Roles("support", "arm", ""), ["which value", "'control' or 'treatment'"]),
    ],
)
def test_prepare_refuses_bad_roles(people: pd.DataFrame, roles: Roles,
                                   words: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        prepare(people, roles)
    for word in words:
        assert word in str(info.value)


def test_prepare_treatment_with_one_value(people: pd.DataFrame) -> None:
    df = people.assign(arm="treatment")
    with pytest.raises(SpecError, match=r"every row is in the same group \('treatment'\), so "
                                        "there is nothing to compare"):
        prepare(df, Roles("support", "arm", "treatment"))


def test_prepare_needs_two_people_per_arm(people: pd.DataFrame) -> None:
    df = people.head(3).copy()
    df["arm"] = ["treatment", "treatment", "control"]
    with pytest.raises(SpecError, match=r"control group \('control' in 'arm'\) has only 1 "
                                        "person; each group needs at least 2"):
        prepare(df, Roles("support", "arm", "treatment"))


def test_prepare_treated_matches_numbers_and_case(people: pd.DataFrame) -> None:
    df = people.assign(z=(people["arm"] == "treatment").astype(float))
    for treated in ("1", 1, 1.0, True, "1.0"):
        prepared = prepare(df, Roles("support", "z", treated))
        assert (prepared.treated, prepared.control) == ("1", "0")
    assert prepare(people, Roles("support", "arm", "TREATMENT")).treated == "treatment"


@pytest.mark.parametrize("name", ["n", "z", "mean", "_y", "label", "by", "verdict"])
def test_prepare_refuses_reserved_factor_names(people: pd.DataFrame, name: str) -> None:
    with pytest.raises(SpecError, match=f"cannot be called '{name}'.*Rename the column"):
        prepare(people.assign(**{name: "x"}), Roles("support", "arm", "treatment", (name,)))


def test_every_results_column_is_a_reserved_name_and_loading_renames_them(people) -> None:
    from hte.data import RESERVED_NAMES, rename_reserved
    from hte.result import EFFECT_COLUMNS, MC_COLUMNS

    assert {"by", "label", *EFFECT_COLUMNS, *MC_COLUMNS} <= RESERVED_NAMES
    df = people.assign(label="a", by="b", by_group="taken")
    renamed, renames = rename_reserved(df, ["label", "by", "region", "label"])
    assert renames == {"label": "label_group", "by": "by_group2"}
    assert {"label_group", "by_group2", "by_group"} <= set(renamed.columns)
    assert "label" not in renamed.columns and "label" in df.columns  # the input is not changed
    prepared = prepare(renamed, Roles("support", "arm", "treatment", ("label_group",)))
    assert prepared.factors == ("label_group",)
    assert rename_reserved(people, ["region", "arm"])[1] == {"arm": "arm_group"}
    assert rename_reserved(people, ["region"])[1] == {}


def test_prepare_duplicate_factors_are_merged(people: pd.DataFrame) -> None:
    prepared = prepare(people, Roles("support", "arm", "treatment", ("Gender", "region", "Gender")))
    assert prepared.factors == ("Gender", "region")
    assert list(prepared.frame.columns) == ["Gender", "region", "_z", "_y"]


# --------------------------------------------------------------------------------------------
# prepare: outcome family
# --------------------------------------------------------------------------------------------


def test_prepare_outcome_text_with_many_values(people: pd.DataFrame) -> None:
    with pytest.raises(SpecError) as info:
        prepare(people, Roles("region", "arm", "treatment"))
    msg = str(info.value)
    assert "The outcome 'region' holds text" in msg
    assert "must be a number or have exactly two values" in msg


def test_prepare_constant_outcome(people: pd.DataFrame) -> None:
    with pytest.raises(SpecError, match=r"'flat' has the same value \('3'\) in every row"):
        prepare(people.assign(flat=3.0), Roles("flat", "arm", "treatment"))


def test_prepare_family_choices(people: pd.DataFrame) -> None:
    with pytest.raises(SpecError, match=r"'voted' holds text.*binary model"):
        prepare(people, Roles("voted", "arm", "treatment", family="gaussian"))
    with pytest.raises(SpecError, match=r"'support' has .* values, so it is not binary"):
        prepare(people, Roles("support", "arm", "treatment", family="binary"))
    with pytest.raises(SpecError, match="success value"):
        prepare(people, Roles("support", "arm", "treatment", success="1"))
    # A two-valued numeric outcome may be modelled as Gaussian (linear probability model).
    lpm = prepare(people.assign(v=(people["voted"] == "yes").astype(int)),
                  Roles("v", "arm", "treatment", family="GAUSSIAN"))
    assert lpm.family == GAUSSIAN and lpm.success is None
    assert set(lpm.frame["_y"]) == {0.0, 1.0}


def test_prepare_binary_outcome(people: pd.DataFrame) -> None:
    prepared = prepare(people, Roles("voted", "arm", "treatment", ("Gender",)))
    assert prepared.family == BINARY and prepared.success == "yes"
    y = prepared.frame["_y"].to_numpy()
    assert np.array_equal(y, (people["voted"] == "yes").to_numpy(dtype=float))
    assert prepared.cells.cells["successes"].sum() == (people["voted"] == "yes").sum()
    flipped = prepare(people, Roles("voted", "arm", "treatment", success="no"))
    assert flipped.success == "no"
    assert flipped.frame["_y"].sum() == (people["voted"] == "no").sum()
    with pytest.raises(SpecError, match="'maybe' does not occur in the outcome 'voted'"):
        prepare(people, Roles("voted", "arm", "treatment", success="maybe"))
    coded = people.assign(voted=people["voted"].map({"yes": "won", "no": "lost"}))
    with pytest.raises(SpecError, match="'lost' and 'won'; choose which one counts as a success"):
        prepare(coded, Roles("voted", "arm", "treatment"))


def test_prepare_numeric_text_outcome_with_decimal_comma(people: pd.DataFrame) -> None:
    text = people["support"].map(lambda v: f"{v:.2f}".replace(".", ","))
    prepared = prepare(people.assign(support=text), Roles("support", "arm", "treatment"))
    assert prepared.family == GAUSSIAN
    np.testing.assert_allclose(prepared.frame["_y"], people["support"], rtol=1e-12)


def test_prepare_from_semicolon_file_with_decimal_comma() -> None:
    rows = ["score;arm;sex"] + [f"{i},5;{'T' if i % 2 else 'C'};{'FM'[i % 3 % 2]}"
                                for i in range(20)]
    df = read_table("\n".join(rows).encode("cp1252"), "eu.csv")
    prepared = prepare(df, Roles("score", "arm", "T", ("sex",)))
    assert prepared.family == GAUSSIAN
    assert prepared.frame["_y"].iloc[0] == 0.5


# --------------------------------------------------------------------------------------------
# prepare: missing values, factors, binning
# --------------------------------------------------------------------------------------------


def test_prepare_drops_and_counts_missing(people: pd.DataFrame) -> None:
    df = people.copy()
    df.loc[[0, 1, 2], "support"] = np.nan
    df.loc[[2, 3], "arm"] = None  # row 2 is already counted for its outcome
    df.loc[[4, 5], "Gender"] = None
    prepared = prepare(df, Roles("support", "arm", "treatment", ("Gender",)))
    assert prepared.dropped == {"missing outcome": 3, "missing treatment": 1}
    assert prepared.n_input_rows == 200 and prepared.n_rows == 196
    assert prepared.cells.levels["Gender"] == ("F", "M", MISSING_LEVEL)
    assert (prepared.frame["Gender"] == MISSING_LEVEL).sum() == 2
    text = prepared.describe()
    assert "Using 196 of 200 rows" in text
    assert "3 rows were dropped because the outcome was missing" in text
    assert "1 because the treatment was missing" in text
    assert "'Gender' (3 levels)" in text


def test_prepare_no_rows_left(people: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="No row has both an outcome"):
        prepare(people.assign(support=np.nan), Roles("support", "arm", "treatment"))
    with pytest.raises(DataError, match="no rows"):
        prepare(people.head(0), Roles("support", "arm", "treatment"))


def test_prepare_level_order_is_natural() -> None:
    df = pd.DataFrame({"y": np.arange(12.0), "z": [0, 1] * 6,
                       "dose": [10, 2, 1, None, 10, 2] * 2,
                       "city": ["b", "A", "c", "B", None, "a"] * 2})
    prepared = prepare(df, Roles("y", "z", "1", ("dose", "city")))
    assert prepared.cells.levels["dose"] == ("1", "2", "10", MISSING_LEVEL)
    assert prepared.cells.levels["city"] == ("A", "a", "B", "b", "c", MISSING_LEVEL)
    assert prepared.cells.levels["dose"] == tuple(sorted(
        set(prepared.frame["dose"]), key=lambda s: (s == MISSING_LEVEL, float(s)
                                                     if s != MISSING_LEVEL else 0)))


def test_prepare_bins_numeric_factors(people: pd.DataFrame) -> None:
    df = people.copy()
    df.loc[0, "age"] = np.nan
    prepared = prepare(df, Roles("support", "arm", "treatment", ("age",), bins={"age": 4,
                                                                               "id": 3}))
    labels = prepared.binned["age"]
    assert len(labels) == 4
    assert prepared.cells.levels["age"] == (*labels, MISSING_LEVEL)
    lows = [int(lab.split("-")[0]) for lab in labels]
    assert lows == sorted(lows)
    assert prepared.frame.loc[0, "age"] == MISSING_LEVEL
    assert "binned into 4 groups" in prepared.describe()
    assert "id" not in prepared.binned  # bins for columns that are not factors are ignored


def test_prepare_refuses_binning_text(people: pd.DataFrame) -> None:
    with pytest.raises(SpecError, match=r"'region' holds text .* cannot be split"):
        prepare(people, Roles("support", "arm", "treatment", ("region",), bins={"region": 3}))


@pytest.mark.parametrize("bad", [1, 0, 2.5, "four"])
def test_prepare_refuses_bad_bin_counts(people: pd.DataFrame, bad: object) -> None:
    with pytest.raises(SpecError, match="'age' into must be a whole number of at least 2"):
        prepare(people, Roles("support", "arm", "treatment", ("age",), bins={"age": bad}))


def test_prepare_too_many_levels_numeric_suggests_binning(people: pd.DataFrame) -> None:
    with pytest.raises(SpecError) as info:
        prepare(people, Roles("support", "arm", "treatment", ("age",), max_levels=20))
    msg = str(info.value)
    assert "'age' has" in msg and "more than the limit of 20" in msg
    assert "bin it" in msg and "4 or 5" in msg


def test_prepare_too_many_levels_text_suggests_merging(people: pd.DataFrame) -> None:
    with pytest.raises(SpecError) as info:
        prepare(people, Roles("support", "arm", "treatment", ("region",), max_levels=3))
    msg = str(info.value)
    assert "'region' has 4 different values" in msg and "Merge rare values" in msg


def test_prepare_single_level_factor_is_allowed(people: pd.DataFrame) -> None:
    prepared = prepare(people.assign(site="only"), Roles("support", "arm", "treatment",
                                                          ("site",)))
    assert prepared.cells.levels["site"] == ("only",)


# --------------------------------------------------------------------------------------------
# prepare: results
# --------------------------------------------------------------------------------------------


def test_prepare_frame_and_cells(people: pd.DataFrame) -> None:
    prepared = prepare(people, Roles("support", "arm", "treatment", ("Gender", "region")))
    assert isinstance(prepared, PreparedData)
    frame = prepared.frame
    assert list(frame.columns) == ["Gender", "region", "_z", "_y"]
    assert pd.api.types.is_string_dtype(frame["Gender"])
    assert set(frame["_z"]) == {0, 1}
    assert (frame["_z"] == (people["arm"] == "treatment")).all()
    assert prepared.control == "control" and prepared.treated == "treatment"
    cells = prepared.cells.cells
    expected = (people.assign(z=(people["arm"] == "treatment").astype(int))
                .groupby(["Gender", "region", "z"])["support"].agg(["count", "mean"]))
    got = cells.set_index(["Gender", "region", "z"]).sort_index()
    np.testing.assert_array_equal(got["n"], expected["count"])
    np.testing.assert_allclose(got["mean"], expected["mean"], rtol=1e-12)
    assert prepared.cells.levels["region"] == ("East", "North", "south", "west")
    assert prepared.n_rows == 200 and prepared.dropped == {}
    text = prepared.describe()
    assert text.startswith("Using all 200 rows.")
    assert "Treated: 'treatment' (100 people); control: 'control' (100 people)." in text
    assert "continuous" in text


def test_prepare_fingerprint_is_stable_and_sensitive(people: pd.DataFrame) -> None:
    roles = Roles("support", "arm", "treatment", ("Gender",))
    first = prepare(people, roles).fingerprint
    assert len(first) == 64 and first == prepare(people.copy(), roles).fingerprint
    changed = people.copy()
    changed.loc[0, "support"] += 1
    assert prepare(changed, roles).fingerprint != first
    assert prepare(people, Roles("support", "arm", "control", ("Gender",))).fingerprint != first
    assert prepare(people, Roles("support", "arm", "treatment")).fingerprint != first


def test_prepare_fingerprint_is_the_same_in_another_process() -> None:
    code = (
        "import numpy as np, pandas as pd\n"
        "from hte.data import Roles, prepare\n"
        "df = pd.DataFrame({'y': np.arange(20) / 3, 'z': ['t', 'c'] * 10,"
        " 'g': list('abcde') * 4})\n"
        "print(prepare(df, Roles('y', 'z', 't', ('g',))).fingerprint)\n"
    )
    df = pd.DataFrame({"y": np.arange(20) / 3, "z": ["t", "c"] * 10, "g": list("abcde") * 4})
    here = prepare(df, Roles("y", "z", "t", ("g",))).fingerprint
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True, env=env)
    assert out.stdout.strip() == here


def test_prepare_million_rows() -> None:
    rng = np.random.default_rng(3)
    n = 1_000_000
    df = pd.DataFrame({
        "y": rng.normal(size=n),
        "arm": rng.choice(["treatment", "control"], n),
        "age": rng.integers(18, 90, n),
        "sex": rng.choice(["F", "M", None], n),
        "region": rng.choice(list("ABCDEFGH"), n),
    })
    prepared = prepare(df, Roles("y", "arm", "treatment", ("sex", "region", "age"),
                                 bins={"age": 5}))
    assert prepared.n_rows == n
    assert len(prepared.cells.cells) == 3 * 8 * 5 * 2


# --------------------------------------------------------------------------------------------
# prepare_summaries
# --------------------------------------------------------------------------------------------


def _summaries(people: pd.DataFrame, outcome: str, how: str) -> pd.DataFrame:
    grouped = people.groupby(["Gender", "region", "arm"])[outcome]
    if how == "gaussian":
        out = grouped.agg(mean="mean", sd=lambda s: s.std(ddof=1), n="count")
    else:
        out = grouped.agg(successes="sum", n="count")
    return out.reset_index()


def test_summaries_match_raw_rows_gaussian(people: pd.DataFrame) -> None:
    raw = prepare(people, Roles("support", "arm", "treatment", ("Gender", "region")))
    table = _summaries(people, "support", "gaussian")
    summary = prepare_summaries(table, SummaryRoles("arm", "treatment", ("Gender", "region"),
                                                    outcome_name="support"))
    a, b = raw.cells.cells, summary.cells.cells
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a[["Gender", "region", "z", "n"]],
                                  b[["Gender", "region", "z", "n"]], check_dtype=False)
    np.testing.assert_allclose(b["mean"], a["mean"], rtol=1e-9)
    np.testing.assert_allclose(b["ss"], a["ss"], rtol=1e-9)
    assert summary.family == GAUSSIAN and summary.frame is None and summary.success is None
    assert summary.n_input_rows == 200 and summary.n_rows == 200
    assert summary.cells.levels == raw.cells.levels
    assert (summary.treated, summary.control) == ("treatment", "control")
    assert "Using 200 people from a table of" in summary.describe()


def test_summaries_match_raw_rows_binary(people: pd.DataFrame) -> None:
    people = people.assign(v=(people["voted"] == "yes").astype(int))
    raw = prepare(people, Roles("v", "arm", "treatment", ("Gender", "region")))
    table = _summaries(people, "v", "binary")
    summary = prepare_summaries(table, SummaryRoles("arm", "treatment", ("Gender", "region"),
                                                    successes="successes", mean=None, sd=None))
    assert summary.family == BINARY
    pd.testing.assert_frame_equal(raw.cells.cells, summary.cells.cells, check_dtype=False)


def test_summaries_empty_cells_and_single_person_cells() -> None:
    table = pd.DataFrame({
        "g": ["a", "a", "b", "b", "c"],
        "arm": [1, 0, 1, 0, 1],
        "n": [3, 1, 2, 4, 0],
        "mean": [1.0, 2.0, 3.0, 4.0, np.nan],
        "sd": [0.5, np.nan, 1.0, 0.0, np.nan],
    })
    prepared = prepare_summaries(table, SummaryRoles("arm", "1", ("g",)))
    assert prepared.dropped == {"empty cells": 1}
    assert prepared.n_rows == 10
    assert prepared.cells.levels["g"] == ("a", "b")
    assert "1 cell with no people was skipped" in prepared.describe()
    cells = prepared.cells.cells.set_index(["g", "z"])
    assert cells.loc[("a", 1), "ss"] == pytest.approx(2 * 0.25)
    assert cells.loc[("a", 0), "ss"] == 0.0


@pytest.mark.parametrize(
    ("change", "roles_kw", "error", "words"),
    [
        ({"n": [3, -1]}, {}, DataError, ["count column 'n'", "whole numbers"]),
        ({"n": [3, 1.5]}, {}, DataError, ["whole numbers"]),
        ({"n": [3, None]}, {}, DataError, ["'n' is empty in 1 row."]),
        ({"n": [3, np.inf]}, {}, DataError, ["whole numbers"]),
        ({"n": ["three", "one"]}, {}, DataError, ["'n'", "holds text"]),
        ({"mean": [1.0, None]}, {}, DataError, ["mean column 'mean'"]),
        ({"sd": [0.5, None]}, {}, DataError, ["'sd' is empty", "n = 1"]),
        ({"sd": [-0.5, 1.0]}, {}, DataError, ["negative"]),
        ({"arm": [1, 1]}, {}, SpecError, ["every row is in the same group"]),
        ({}, {"mean": "avg"}, SpecError, ["no column 'avg'", "cell mean"]),
        ({}, {"factors": ("arm",)}, SpecError, ["'arm' is the treatment"]),
        ({"s": [1, 3]}, {"successes": "s"}, DataError, ["successes column 's'", "between 0"]),
    ],
)
def test_summaries_refuse_bad_tables(change: dict, roles_kw: dict, error: type,
                                     words: list[str]) -> None:
    table = pd.DataFrame({"arm": [1, 0], "n": [3, 2], "mean": [1.0, 2.0], "sd": [0.5, 1.0],
                          "s": [1, 1]})
    for col, values in change.items():
        table[col] = values
    kw = {"treatment": "arm", "treated": "1", **roles_kw}
    with pytest.raises(error) as info:
        prepare_summaries(table, SummaryRoles(**kw))
    for word in words:
        assert word in str(info.value)


def test_summaries_missing_treatment_counts_people() -> None:
    table = pd.DataFrame({"arm": ["t", "c", None], "n": [3, 2, 5], "mean": [1.0, 2.0, 3.0],
                          "sd": [0.5, 1.0, 1.0]})
    prepared = prepare_summaries(table, SummaryRoles("arm", "t"))
    assert prepared.dropped == {"missing treatment": 5}
    assert prepared.n_input_rows == 10 and prepared.n_rows == 5


# --------------------------------------------------------------------------------------------
# suggest_roles
# --------------------------------------------------------------------------------------------


def test_suggest_roles_on_typical_table(people: pd.DataFrame) -> None:
    s = suggest_roles(people)
    assert s.outcome == "support"
    assert s.treatment == "arm" and s.treated == "treatment"
    assert s.family == GAUSSIAN
    assert "Gender" in s.factors and "region" in s.factors and "voted" in s.factors
    assert "id" not in s.factors and "id" not in s.binnable
    assert s.binnable == ["age"]
    assert "age" not in s.factors


def test_suggest_roles_numeric_treatment() -> None:
    df = pd.DataFrame({"y": np.linspace(0, 1, 30), "z": [0, 1] * 15, "sex": list("MF") * 15})
    s = suggest_roles(df)
    assert (s.outcome, s.treatment, s.treated) == ("y", "z", "1")


def test_suggest_roles_binary_outcome_after_treatment() -> None:
    df = pd.DataFrame({"female": [0, 1] * 10, "party": list("DRI" * 6 + "DR"),
                       "treatment": ["control", "treatment"] * 10, "donated": [0, 0, 1, 1] * 5})
    s = suggest_roles(df)
    assert (s.outcome, s.family, s.treatment) == ("donated", BINARY, "treatment")
    assert s.factors == ["female", "party"]


def test_suggest_roles_on_sample_data() -> None:
    path = ROOT / "sample_data" / "experiment_binary.csv"
    if not path.exists():
        pytest.skip("sample data not present")
    s = suggest_roles(read_table(path))
    assert (s.outcome, s.treatment, s.treated) == ("donated", "treatment", "treatment")
    assert "gender" in s.factors and "id" not in s.factors


@pytest.mark.parametrize(
    "df",
    [
        pd.DataFrame(),
        pd.DataFrame({"a": [1, 2]}),
        pd.DataFrame({"a": [np.nan, np.nan], "b": [None, None]}),
        pd.DataFrame([[1, 2], [3, 4]], columns=["a", "a"]),
        pd.DataFrame({"a": [object(), object()], "b": [[1], [2]]}),
    ],
)
def test_suggest_roles_never_raises(df: pd.DataFrame) -> None:
    s = suggest_roles(df)
    assert s.treatment is None


def test_errors_are_hte_errors() -> None:
    assert issubclass(DataError, HteError) and issubclass(SpecError, HteError)
