"""Benchmark: time from clicking "Fit the model" to the Effects page, in a real browser.

Starts ``streamlit run app.py``, loads the bundled sample (one click), keeps the Model page's
defaults (all six factors, no intersections, 4 chains x 1000 warm-up x 1000 draws unless told
otherwise) and, for each run, sets a different random seed (so the fit cache cannot answer),
clicks Fit and waits until the Effects page shows its forest plot. The first run of a fresh
server needs the compiled sampler: the app compiles it in the background from the moment the
data are loaded, so what is left to wait for depends on how long the user spends before clicking
Fit (the script clicks as fast as it can: a few seconds). ``--cold`` gives the app an empty JAX
compilation cache (a fresh machine); ``--no-warm-up`` turns the background compilation off.
Finally it clicks Fit once more with unchanged choices: the cached answer.

    python bench/dashboard.py --cold          # 3 runs, default settings, nothing compiled yet
    python bench/dashboard.py --cold --no-warm-up
    python bench/dashboard.py --runs 5 --chains 2 --warmup 300 --draws 300

Prints each run and the median. Needs Chromium (apt-get install -y chromium) and Playwright.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.test_browser import (  # noqa: E402  (shared browser helpers)
    CHROMIUM,
    CHROMIUM_ARGS,
    go,
    running_app,
    type_number,
    wait_idle,
)

TIMEOUT_MS = 3_600_000


def fit_once(page, seed: int, settings: dict[str, int], loaded: float | None = None) -> float:
    """Set the seed (and settings), click Fit, return seconds until the forest plot shows.

    ``loaded``: when the data were loaded (perf_counter); prints how long before Fit was clicked.
    """
    go(page, "2 · Model")
    expander = page.get_by_text("Sampler settings (advanced)")
    if not page.get_by_role("spinbutton", name="Random seed").is_visible():
        expander.click()
    for label, value in {**settings, "Random seed": seed}.items():
        type_number(page, label, str(value))
    button = page.get_by_role("button", name="Fit the model")
    start = time.perf_counter()
    if loaded is not None:
        print(f"(Fit clicked {start - loaded:.1f} s after the sample was loaded)")
    button.click()
    page.get_by_role("heading", name="3 · Effects", exact=True).wait_for(timeout=TIMEOUT_MS)
    chart = page.locator('[data-testid="stPlotlyChart"]').first
    chart.locator("text=Everyone").first.wait_for(timeout=TIMEOUT_MS)
    seconds = time.perf_counter() - start
    wait_idle(page, TIMEOUT_MS)
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--cold", action="store_true",
                    help="start the app with an empty JAX compilation cache")
    ap.add_argument("--no-warm-up", action="store_true",
                    help="turn off the app's background compilation (HTE_WARM_UP=off)")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    settings = {"Chains": args.chains, "Warm-up iterations": args.warmup,
                "Draws per chain": args.draws}
    env = {"HTE_WARM_UP": "off" if args.no_warm_up else "on"}
    times: list[float] = []
    with contextlib.ExitStack() as stack:
        if args.cold:
            env["HTE_JAX_CACHE"] = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="hte-jax-"))
        url = stack.enter_context(running_app("bench-streamlit.log", **env))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(url)
            page.get_by_role("button", name="Use the sample experiment").click()
            page.get_by_text("Loaded the sample").wait_for()
            loaded = time.perf_counter()
            wait_idle(page)
            print(f"sample data, 6 factors, {args.chains} chains x {args.warmup} warm-up x "
                  f"{args.draws} draws; JAX cache {'empty' if args.cold else 'as found'}; "
                  f"background compilation {env['HTE_WARM_UP']}")
            for run in range(args.runs):
                seconds = fit_once(page, seed=1000 + run, settings=settings,
                                   loaded=loaded if run == 0 else None)
                times.append(seconds)
                note = " (fresh server: may include compiling)" if run == 0 else ""
                print(f"run {run + 1}: {seconds:6.1f} s from Fit to the effects page{note}",
                      flush=True)
            cached = fit_once(page, seed=1000 + args.runs - 1, settings=settings)
            browser.close()
    print(f"median of {len(times)} runs: {statistics.median(times):.1f} s")
    if len(times) > 1:
        print(f"median without the first run: {statistics.median(times[1:]):.1f} s")
    print(f"same choices again (fit cache): {cached:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
