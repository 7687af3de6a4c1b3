"""Report snapshots: summaries from stored draws, small-cell protection, no raw rows, exports."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import struct
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hte.errors import HteError, ReportError
from hte.reports import (
    MIN_CELL,
    Snapshot,
    as_expiry,
    forest_figure,
    report_csv,
    report_html,
    safe_csv,
    thin_index,
)
from hte.result import MC_COLUMNS

# -- a tiny fit with everything a report must not leak or trust --------------------------------

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = "</script><script>alert(2)</script>"
HYPERLINK = '=HYPERLINK("http://evil.example","click")'
LONG = "L" * 5000
F_SCRIPT = SCRIPT                      # factor names (column names)
F_FORMULA = "@SUM(1+1)*cmd"
F_LONG = "+" + "N" * 4999
HOSTILE_LEVELS = {
    F_SCRIPT: [HYPERLINK, "Zoë 🚀", "+cmd|' /C calc'!A0", 'say "hi" & \'bye\''],
    F_FORMULA: [BREAKOUT, "-2+3", LONG],
    F_LONG: ["@SUM(A1:A9)", "plain"],
}
SECRET = "XYZZY-PLANTED-7781"
PLANTED_Y = 4.2424242424
SMALL, FILLER = "Island", "Mainland"   # a level of 6 people, and the next-smallest level


def hostile_table() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    sizes = [110, 100, 95, 90, 30, 6]
    f1 = np.repeat(np.array([*HOSTILE_LEVELS[F_SCRIPT], FILLER, SMALL], dtype=object), sizes)
    n = len(f1)
    z = rng.integers(0, 2, n)
    z[-6:] = [0, 1, 0, 1, 0, 1]
    y = 5 + 0.3 * z + rng.normal(0, 1, n)
    y[17] = PLANTED_Y
    table = pd.DataFrame({
        F_SCRIPT: f1,
        F_FORMULA: rng.choice(np.array(HOSTILE_LEVELS[F_FORMULA], dtype=object), n),
        F_LONG: rng.choice(np.array(HOSTILE_LEVELS[F_LONG], dtype=object), n),
        "arm": np.where(z == 1, "treat", "ctrl"), "y": y, "secret_note": ""})
    table.loc[42, "secret_note"] = SECRET
    return table


@pytest.fixture(scope="module")
def tiny_fit():
    import hte

    return hte.fit(hostile_table(), outcome="y", treatment="arm", treated="treat",
                   by=[F_SCRIPT, F_FORMULA, F_LONG], chains=1, warmup=100, draws=100, seed=3)


@pytest.fixture(scope="module")
def hostile(tiny_fit) -> Snapshot:
    return Snapshot.from_fit(tiny_fit, title=f"Title {SCRIPT} {HYPERLINK}",
                             note=f"Note {BREAKOUT}\n=1+1 & <b>bold</b>", threshold=0.2)


@pytest.fixture(scope="module")
def snapshot(gaussian_fit) -> Snapshot:
    return Snapshot.from_fit(gaussian_fit, title="Sample", note="A note.", threshold=0.1)


# -- summaries from the stored draws -----------------------------------------------------------


def test_effects_recomputed_from_stored_draws_match_the_fit(gaussian_fit, snapshot):
    assert snapshot.draws.dtype == np.float32 and not snapshot.draws.flags.writeable
    for threshold, interval in [(0.0, 0.9), (0.1, 0.8), (0.25, 0.5)]:
        got = snapshot.effects(threshold, interval)
        # (a report keeps thinned draws without chains: no Monte Carlo columns)
        want = gaussian_fit.effect_table(threshold, interval).drop(columns=MC_COLUMNS)
        pd.testing.assert_frame_equal(got, want, rtol=1e-5, atol=1e-6)


def test_effects_default_to_the_published_rule(snapshot):
    pd.testing.assert_frame_equal(snapshot.effects(), snapshot.effects(0.1, 0.9, 0.9))
    assert snapshot.rule().threshold == 0.1


def test_effects_by_grouping(snapshot):
    assert snapshot.groupings == ["Everyone", "gender", "race", "party", "gender × race",
                                  "gender × party", "race × party"]
    assert snapshot.effects(by=[])["label"].tolist() == ["Everyone"]
    assert snapshot.effects(by="gender")["label"].tolist() == ["gender = Female", "gender = Male"]
    pairs = snapshot.effects(by=["race", "gender"])
    pd.testing.assert_frame_equal(pairs, snapshot.effects(by="gender × race"))
    assert len(pairs) == 8 and set(pairs["by"]) == {"gender × race"}
    with pytest.raises(ReportError, match="not a grouping"):
        snapshot.effects(by="age")
    with pytest.raises(ReportError, match="not one of the report's factors"):
        snapshot.effects(by=["gender", "age"])
    with pytest.raises(HteError, match="interval level"):
        snapshot.effects(interval=1.5)
    only_everyone = dataclasses.replace(snapshot, groups=snapshot.groups.iloc[:1],
                                        draws=snapshot.draws[:, :1])
    empty = only_everyone.effects(by="gender")
    assert empty.empty and list(empty.columns) == list(snapshot.effects().columns)


def test_contrast_is_computed_draw_by_draw(gaussian_fit, snapshot):
    row, diff = snapshot.contrast("gender = Female", {"gender": "Male"}, threshold=0.05)
    want, want_diff = gaussian_fit.contrast({"gender": "Female"}, {"gender": "Male"},
                                            threshold=0.05)
    np.testing.assert_allclose(diff, want_diff, atol=1e-6)
    assert row["a"] == "gender = Female" and row["b"] == "gender = Male"
    assert row["verdict"] == want["verdict"]
    for key in ("mean", "sd", "lower", "upper", "p_above", "p_below"):
        assert row[key] == pytest.approx(want[key], abs=1e-6)
    np.testing.assert_array_equal(snapshot.draws_of("Everyone"), snapshot.draws[:, 0])
    with pytest.raises(ReportError, match="no group"):
        snapshot.contrast("gender = Other", "Everyone")


def test_draws_are_thinned_evenly(gaussian_fit):
    small = Snapshot.from_fit(gaussian_fit, max_draws=100)
    assert small.draws.shape == (100, 36)
    full = gaussian_fit.effect_draws([{}])[:, 0]
    np.testing.assert_allclose(small.draws_of("Everyone"), full[thin_index(600, 100)],
                               rtol=1e-6)
    np.testing.assert_array_equal(thin_index(600, 100), np.arange(0, 600, 6))
    np.testing.assert_array_equal(thin_index(50, 100), np.arange(50))


def test_payload_round_trip(snapshot):
    meta, blob = snapshot.to_payload()
    back = Snapshot.from_payload(json.loads(json.dumps(meta)), blob)
    pd.testing.assert_frame_equal(back.groups, snapshot.groups)
    pd.testing.assert_frame_equal(back.effects(0.2, 0.5), snapshot.effects(0.2, 0.5))
    np.testing.assert_array_equal(back.draws, snapshot.draws)
    for f in ("title", "note", "created", "expires", "formula", "family", "outcome", "treated",
              "control", "factors", "data", "diagnostics", "min_cell", "withheld", "threshold"):
        assert getattr(back, f) == getattr(snapshot, f), f
    with pytest.raises(ReportError, match="damaged"):
        Snapshot.from_payload(meta, blob[: len(blob) // 2])
    with pytest.raises(ReportError, match="damaged"):
        Snapshot.from_payload({**meta, "format": 99}, blob)


def test_binary_outcome_report(binary_fit):
    snap = Snapshot.from_fit(binary_fit, threshold=0.02)
    pd.testing.assert_frame_equal(snap.effects(),
                                  binary_fit.effect_table(0.02).drop(columns=MC_COLUMNS),
                                  rtol=1e-5, atol=1e-6)
    assert "percentage points" in report_html(snap)


def test_settings_are_validated(gaussian_fit):
    with pytest.raises(ReportError, match="title is too long"):
        Snapshot.from_fit(gaussian_fit, title="x" * 301)
    with pytest.raises(ReportError, match="already passed"):
        Snapshot.from_fit(gaussian_fit, expires=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(ReportError, match="at least 1"):
        Snapshot.from_fit(gaussian_fit, min_cell=0)
    with pytest.raises(HteError, match="threshold"):
        Snapshot.from_fit(gaussian_fit, threshold=-1)
    assert as_expiry(date(2030, 5, 1)) == datetime(2030, 5, 2, tzinfo=UTC)
    assert as_expiry(datetime(2030, 5, 1, 12)) == datetime(2030, 5, 1, 12, tzinfo=UTC)
    snap = Snapshot.from_fit(gaussian_fit, expires=date.today() + timedelta(days=30))
    assert snap.expires is not None and snap.expires.tzinfo is not None


# -- small-cell protection (the rule itself is tested in test_disclosure.py) -------------------


def test_small_groups_are_not_in_the_snapshot(tiny_fit, hostile):
    full = tiny_fit.effect_table()
    assert (full["n"] < MIN_CELL).any()  # the data do have small groups
    levels = hostile.groups[list(hostile.factors)].to_numpy().ravel().tolist()
    assert SMALL not in levels and FILLER not in levels  # small, and its complement
    assert not hostile.groups["label"].str.contains(SMALL).any()
    assert (hostile.groups[["n_treated", "n_control"]] >= MIN_CELL).all().all()
    assert hostile.draws.shape[1] == len(hostile.groups) and hostile.withheld > 0
    shown = [{f: v for f, v in zip(hostile.factors, row, strict=True) if v is not None}
             for row in hostile.groups[list(hostile.factors)].itertuples(index=False,
                                                                          name=None)]
    np.testing.assert_allclose(hostile.draws, tiny_fit.effect_draws(shown), rtol=1e-6)
    small_arm = (hostile.groups["n_treated"] < MIN_CELL) | (hostile.groups["n_control"] < MIN_CELL)
    assert hostile.groups.loc[small_arm, "raw_mean"].isna().all()
    with pytest.raises(ReportError, match="fewer than"):
        Snapshot.from_fit(tiny_fit, min_cell=10_000)


def forbidden(text_too: bool = True) -> list[bytes]:
    """Byte patterns of the planted row values, as text and as binary floats."""
    out = [struct.pack("<d", PLANTED_Y), struct.pack("<f", PLANTED_Y)]
    if text_too:
        out += [SECRET.encode(), b"4.2424242424", SMALL.encode(), FILLER.encode()]
    return out


def test_no_raw_row_in_the_payload(hostile):
    meta, blob = hostile.to_payload()
    text = json.dumps(meta).encode() + json.dumps(meta, ensure_ascii=False).encode()
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert set(arrays) == {"draws", "n", "n_treated", "n_control", "raw_mean", "raw_se"}
    assert all(a.shape[-1] == len(hostile.groups) for a in arrays.values())
    raw = b"".join(a.tobytes() for a in arrays.values())
    for pattern in forbidden():
        assert pattern not in text and pattern not in blob and pattern not in raw, pattern
    assert "secret_note" not in json.dumps(meta)
    assert hostile.draws[0].tobytes() in raw  # the scan does see the stored numbers


def test_no_raw_row_in_the_database_file(hostile, tmp_path: Path):
    from hte.report_store import ReportStore

    marker = "CANARY-TITLE-4242"
    with ReportStore(f"sqlite:///{tmp_path / 'r.db'}") as store:
        token, _ = store.publish(dataclasses.replace(hostile, title=marker))
        opened = store.open(token)
    files = sorted(tmp_path.glob("r.db*"))
    stored = b"".join(p.read_bytes() for p in files)
    assert marker.encode() in stored  # the scan sees stored text
    for pattern in forbidden():
        assert pattern not in stored, pattern
    assert token.encode() not in stored
    assert SMALL not in opened.groups["label"].str.cat()


# -- exports -----------------------------------------------------------------------------------


def test_html_escapes_every_user_string(hostile):
    page = report_html(hostile)
    assert SCRIPT not in page and BREAKOUT not in page and "</script><script>" not in page
    assert "<b>bold</b>" not in page and HYPERLINK not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Zoë" in page and html_escaped('say "hi" & \'bye\'') in page
    assert html_escaped(LONG) in page  # the full name is in the table
    # Self-contained: Plotly is inlined, nothing is fetched.
    assert not re.search(r"<script[^>]*\ssrc=", page) and "<link" not in page
    assert "Plotly.newPlot" in page and len(page) > 1_000_000


def html_escaped(s: str) -> str:
    import html

    return html.escape(s, quote=True)


def parsed_csv(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_csv_neutralizes_formulas(hostile):
    rows = parsed_csv(report_csv(hostile))
    header, body = rows[0], rows[1:]
    assert len(body) == len(hostile.groups)
    cells = [c for row in rows for c in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")]
    text_cells = [c for c in cells if c and not _is_number(c)]
    assert not [c for c in text_cells if c.startswith("-")]
    assert f"'{F_FORMULA}" in header and f"'{F_LONG}" in header and F_SCRIPT in header
    assert f"'{HYPERLINK}" in cells and "'-2+3" in cells and "Zoë 🚀" in cells
    assert any(c.startswith("'+cmd") for c in cells)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def test_safe_csv_keeps_numbers_and_quotes_formulas():
    frame = pd.DataFrame({"=name": ["=1+1", "+1", "-1", "@x", "\tx", "\rx", "ok", None],
                          "value": [-1.5, 2.0, -3.0, 0.0, 1.0, 2.0, 3.0, 4.0]})
    rows = parsed_csv(safe_csv(frame))
    assert rows[0] == ["'=name", "value"]
    assert [r[0] for r in rows[1:]] == ["'=1+1", "'+1", "'-1", "'@x", "'\tx", "'\rx", "ok", ""]
    assert [float(r[1]) for r in rows[1:]] == frame["value"].tolist()


def test_forest_figure_from_a_hand_made_table():
    table = pd.DataFrame({"label": ["Everyone", "<i>x</i> = a", "b"],
                          "mean": [0.2, -0.3, 0.0], "lower": [0.1, -0.5, -0.1],
                          "upper": [0.3, -0.1, 0.1],
                          "verdict": ["likely positive", "likely negative", "practically zero"]})
    fig = forest_figure(table, threshold=0.15, title="<b>T</b>", outcome="y")
    assert [t.name for t in fig.data] == ["likely positive", "practically zero",
                                          "likely negative"]
    band = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(band) == 1 and (band[0].x0, band[0].x1) == (-0.15, 0.15)
    assert list(fig.layout.yaxis.ticktext) == ["Everyone", "&lt;i&gt;x&lt;/i&gt; = a", "b"]
    assert fig.layout.title.text == "&lt;b&gt;T&lt;/b&gt;"
    neg = fig.data[2]
    assert list(neg.error_x.array) == pytest.approx([0.2]) and list(
        neg.error_x.arrayminus) == pytest.approx([0.2])
    binary = forest_figure(table, threshold=0.05, binary=True)
    assert list(binary.data[0].x) == pytest.approx([20.0])


def test_formulas_hidden_behind_spaces_nul_or_full_width_signs_are_neutralized():
    hostile = ["\x00=1+1", " =HYPERLINK(\"http://x\")", "\u3000+1", "\uff1dSUM(A1)",
               "\uff0b1", "\uff0d1", "\uff20x", "\n=1", "a\x00b", "plain - text", "e=mc2"]
    rows = parsed_csv(safe_csv(pd.DataFrame({"label": hostile})))
    got = [r[0] for r in rows[1:]]
    assert got[:8] == ["'" + h.replace("\x00", "") for h in hostile[:8]]
    assert got[8:] == ["ab", "plain - text", "e=mc2"]  # NUL dropped; formulas only at the start
    from hte import plots

    back = plots.csv_bytes(pd.DataFrame({" =x": ["\uff1d1", 1.5]})).decode("utf-8")
    assert back.splitlines()[:2] == ["' =x", "'\uff1d1"]
