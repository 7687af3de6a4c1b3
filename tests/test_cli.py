"""The command line: JSON output as documented, and plain errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, SAMPLE

TINY = ["--chains", "2", "--warmup", "300", "--draws", "300", "--seed", "1"]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "hte", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=600)


def test_fit_writes_the_documented_json(tmp_path):
    out = tmp_path / "effects.json"
    result = run("fit", str(SAMPLE / "experiment.csv"), "--outcome", "support", "--treatment",
                 "treatment", "--treated", "treatment", "--by", "gender", "race", "party",
                 "--interact", "gender:race", "--threshold", "0.2", "--json", str(out), *TINY)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["formula"] == ("support ~ treatment + (1 + treatment || gender) + "
                              "(1 + treatment || race) + (1 + treatment || party) + "
                              "(1 + treatment || gender:race)")
    assert set(doc["diagnostics"]) >= {"max_r_hat", "min_ess_bulk", "divergences", "seconds",
                                       "effects_max_r_hat", "attempts", "verdict", "unchecked"}
    assert doc["diagnostics"]["effects_checked"] == len(doc["effects"])
    assert [a["attempt"] for a in doc["diagnostics"]["attempts"]] == list(
        range(1, len(doc["diagnostics"]["attempts"]) + 1))
    effects = doc["effects"]
    fields = {"group", "n", "n_treated", "n_control", "mean", "sd", "lower", "upper", "p_above",
              "p_practically_zero", "p_below", "verdict", "extrapolated", "small_arm",
              "raw_mean", "raw_se", "r_hat", "ess_bulk", "ess_tail", "mcse_p_above",
              "mcse_p_practically_zero", "mcse_p_below"}
    assert all(set(e) == fields for e in effects)
    groups = [tuple(sorted(e["group"])) for e in effects]
    # Everybody, 2 + 4 + 3 levels, and 2x4 + 2x3 + 4x3 pairs.
    assert groups.count(()) == 1
    assert sum(len(g) == 1 for g in groups) == 9
    assert sum(len(g) == 2 for g in groups) == 8 + 6 + 12
    everyone = effects[0]
    assert everyone["group"] == {} and everyone["n"] == 4000
    assert everyone["lower"] < everyone["mean"] < everyone["upper"]
    black_men = next(e for e in effects if e["group"] == {"gender": "Male", "race": "Black"})
    assert black_men["p_above"] > 0.9
    assert "Black" in result.stdout and "likely positive" in result.stdout


def test_binary_effects_are_differences_in_probability(tmp_path):
    out = tmp_path / "binary.json"
    result = run("fit", str(SAMPLE / "experiment_binary.csv"), "--outcome", "donated",
                 "--treatment", "treatment", "--treated", "treatment", "--by", "gender",
                 "--threshold", "0.05", "--json", str(out), "--quiet", *TINY)
    assert result.returncode == 0, result.stderr
    doc = json.loads(out.read_text())
    assert doc["family"] == "binary"
    assert all(-1 <= e["mean"] <= 1 for e in doc["effects"])
    assert result.stdout == ""


@pytest.mark.parametrize(("args", "words"), [
    (["--outcome", "nope"], "nope"),
    (["--treated", "placebo"], "placebo"),
    (["--by", "treatment"], "treatment"),
    (["--interact", "gender:race"], "race"),
    (["--threshold", "-1"], "threshold"),
    (["--min-arm", "0"], "in each arm"),
])
def test_bad_input_exits_with_a_sentence_and_no_traceback(args, words):
    base = {"--outcome": "support", "--treatment": "treatment", "--treated": "treatment",
            "--by": "gender"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["fit", str(SAMPLE / "experiment.csv")]
    for flag, value in base.items():
        argv += [flag, value]
    result = run(*argv, "--quiet", *TINY)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_unreadable_file_is_reported_plainly(tmp_path):
    bad = tmp_path / "picture.csv"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    result = run("fit", str(bad), "--outcome", "y", "--treatment", "z", "--treated", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")


def test_min_arm_flags_in_json_and_a_note_for_a_factor_with_one_value(tmp_path):
    from conftest import extrapolation_experiment

    data = tmp_path / "experiment.csv"
    extrapolation_experiment().to_csv(data, index=False)
    out = tmp_path / "effects.json"
    result = run("fit", str(data), "--outcome", "outcome", "--treatment", "treatment",
                 "--treated", "treatment", "--by", "region", "size", "country",
                 "--threshold", "0.1", "--min-arm", "3", "--json", str(out), "--quiet", *TINY)
    assert result.returncode == 0, result.stderr
    assert ("note: 'country' has one value in these data ('NL'), so it cannot explain "
            "differences and was left out.") in result.stderr.splitlines()
    doc = json.loads(out.read_text())
    assert doc["decision"]["min_arm"] == 3
    assert "country" not in doc["formula"]
    region = {e["group"]["region"]: e for e in doc["effects"] if list(e["group"]) == ["region"]}
    assert region["E"]["extrapolated"] is True and region["E"]["verdict"] == "extrapolated"
    assert region["D"]["extrapolated"] is False and region["D"]["small_arm"] is True
    assert region["D"]["verdict"] != "extrapolated" and region["D"]["n_treated"] == 3
    assert region["A"]["small_arm"] is False
