"""Load test: report viewers changing δ and analysts fitting, at once, against a running server.

    python bench/load_test.py --viewers 50 --analysts 4 --minutes 3
    python bench/load_test.py --viewers 5 --analysts 1 --minutes 1 --verify   # small, + browser
    python bench/load_test.py --url http://host:8501 --reports-url sqlite:///path/reports.db

By default it starts its own ``streamlit run app.py`` on a free port, with a fresh temporary
SQLite report store (``HTE_REPORTS_URL``), publishes three reports from quick fits of the bundled
samples (two continuous, one yes/no), runs the load, checks that no report was lost, and stops
the server. With ``--url`` it targets a server that is already running: give the reports to view
with ``--reports TOKEN ...`` or the server's store with ``--reports-url`` (reports are then
published into it, and every report is also checked in the store at the end).

Users are simulated at the protocol level, as the browser's Streamlit frontend talks to the
server: one websocket per user on ``/_stcore/stream``, ``BackMsg.rerun_script`` with the query
string, the page and the widget states; the server's ``ForwardMsg`` deltas are read until
``script_finished``. Widgets are found by their label in the deltas, as a person finds them.

* Viewers open a report link (an HTTP GET of the page, then the first script run), then, after a
  pause of ``--think`` seconds (uniform), change something and wait for the page to be fully
  re-rendered: δ (70 % of changes), the interval level (15 %) or the factor of the density plot
  (15 %). Each change is checked on the page: the metric "Chance it is above +δ" shows the new δ,
  the interval metric the new level, the density plot the new factor.
* Analysts start together once every viewer has asked for its page (at the end of the
  ramp; pages still loading count as active viewers): each loads the sample ("Use the sample
  experiment"), goes to the Model page, sets the sampler settings and its own seed (so the
  server's fit cache cannot answer), clicks Fit and waits for the Effects page; then publishes a
  report of the fit on the Share page with a title of its own, and starts again until time is
  up (a fit under way at the end is waited for).
* Errors: an exception or an error message on the page, a script run that does not finish
  normally, a change the page does not show, a timeout, a closed websocket, an HTTP error.
* Lost reports: after the run every report (published before the run and by the analysts) is
  opened again in the store and as a page, and must show its own title.

Prints a table and writes ``bench/results_load.json``. ``--verify`` first checks the protocol
client against a real browser (Debian's Chromium via Playwright): both set the same δ on the
same report and must show the same headline and metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import resource
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results_load.json"
DELTA_LABEL = "Practically zero within"
INTERVAL_LABEL = "Credible interval"
DENSITY_LABEL = "Show the posterior of each group of"
CHANCE_LABEL = "Chance it is above +"
FINISHED = 0            # ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY
EARLY_FOR_RERUN = 2     # FINISHED_EARLY_FOR_RERUN (st.switch_page, st.rerun)
ALERT_ERROR = 1         # Alert.Format.ERROR
TOKEN = re.compile(r"report=([A-Za-z0-9_-]{43})")


class RunError(Exception):
    """An interaction that failed; ``kind`` classifies it for the report."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


# --------------------------------------------------------------------------------------------
# The protocol client
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """What one script run drew: every element (by delta path, latest wins) and its status."""

    status: int = -1
    page: str = ""
    elements: dict[tuple[int, ...], tuple[str, Any]] = field(default_factory=dict)
    exceptions: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)    # error messages (st.error)
    seconds: float = 0.0
    runs: int = 0                                       # script runs (a switch_page adds one)
    bytes: int = 0

    def find(self, kind: str, label: str = "", *, exact: bool = False) -> Any | None:
        for k, el in self.elements.values():
            if k != kind:
                continue
            text = getattr(el, "label", None) or getattr(el, "body", None) or ""
            if (text == label) if exact else text.startswith(label):
                return el
        return None

    def all(self, kind: str) -> list[Any]:
        return [el for k, el in self.elements.values() if k == kind]

    def texts(self, kind: str) -> list[str]:
        return [getattr(el, "body", "") for el in self.all(kind)]


class Session:
    """One browser tab's worth of Streamlit session, spoken in Streamlit's own protocol.

    Keeps the widget states the way the frontend does (every widget's latest value is sent on
    every run; a button's trigger only once) and the current page.
    """

    def __init__(self, base_url: str, query: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_url = "ws" + self.base_url[len("http"):] + "/_stcore/stream"
        self.query = query
        self.page = ""
        self.pages: dict[str, str] = {}       # page name -> page_script_hash
        self.states: dict[str, WidgetState] = {}
        self.last = Run()
        self.ws: Any = None

    async def connect(self) -> None:
        # No client pings (a browser sends none); the server's pings are answered.
        self.ws = await websockets.connect(self.ws_url, subprotocols=["streamlit"],
                                           max_size=None, ping_interval=None,
                                           open_timeout=60)

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()

    # -- widget states ------------------------------------------------------------------------
    def widget(self, kind: str, label: str) -> Any:
        el = self.last.find(kind, label)
        if el is None:
            raise RunError("missing", f"no {kind} labelled '{label}' on the page")
        return el

    def set_number(self, label: str, value: float) -> None:
        ws = WidgetState(id=self.widget("number_input", label).id)
        ws.double_value = float(value)
        self.states[ws.id] = ws

    def set_text(self, label: str, value: str) -> None:
        ws = WidgetState(id=self.widget("text_input", label).id)
        ws.string_value = value
        self.states[ws.id] = ws

    def set_option(self, kind: str, label: str, option: str) -> None:
        """A selectbox (or radio) by its shown option; a select_slider by its shown value."""
        el = self.widget(kind, label)
        ws = WidgetState(id=el.id)
        if kind == "slider":
            ws.string_array_value.data.append(option)
        else:
            ws.string_value = option
        self.states[ws.id] = ws

    def click(self, label: str) -> None:
        self.states["__click__"] = WidgetState(id=self.widget("button", label).id,
                                               trigger_value=True)

    # -- runs ---------------------------------------------------------------------------------
    async def rerun(self, page: str | None = None, timeout: float = 120.0,
                    until_page: str | None = None) -> Run:
        """Send a rerun with the current widget states; wait for the run to finish.

        ``page``: a page name to go to (its script hash). ``until_page``: keep reading through
        runs that end early (``st.switch_page``) until a run of this page finishes.
        """
        msg = BackMsg()
        rs = msg.rerun_script
        rs.query_string = self.query
        rs.page_script_hash = self.pages[page] if page else self.page
        rs.context_info.timezone = "UTC"
        rs.context_info.locale = "en-US"
        rs.context_info.url = self.base_url + "/" + (f"?{self.query}" if self.query else "")
        click = self.states.pop("__click__", None)
        for ws in [*self.states.values(), *([click] if click else [])]:
            rs.widget_states.widgets.append(ws)
        start = time.perf_counter()
        try:
            await self.ws.send(msg.SerializeToString())
            run = await asyncio.wait_for(self._read(until_page), timeout)
        except TimeoutError as err:
            raise RunError("timeout", f"no script_finished within {timeout:.0f} s") from err
        except websockets.ConnectionClosed as err:
            raise RunError("disconnected", f"websocket closed: {err}") from err
        run.seconds = time.perf_counter() - start
        self.last = run
        ids = {getattr(el, "id", "") for _, el in run.elements.values()}
        self.states = {k: v for k, v in self.states.items() if k in ids}   # as the frontend
        return run

    async def _read(self, until_page: str | None) -> Run:
        run = Run()
        want = self.pages.get(until_page) if until_page else None
        while True:
            data = await self.ws.recv()
            run.bytes += len(data)
            m = ForwardMsg()
            m.ParseFromString(data)
            kind = m.WhichOneof("type")
            if kind == "new_session":
                run.runs += 1
                run.elements.clear()
                self.page = run.page = m.new_session.page_script_hash
            elif kind == "navigation":
                self.pages.update({p.page_name: p.page_script_hash for p in m.navigation.app_pages})
                if m.navigation.page_script_hash:
                    self.page = run.page = m.navigation.page_script_hash
            elif kind == "delta" and m.delta.WhichOneof("type") == "new_element":
                el_kind = m.delta.new_element.WhichOneof("type")
                el = getattr(m.delta.new_element, el_kind)
                run.elements[tuple(m.metadata.delta_path)] = (el_kind, el)
                if el_kind == "exception":
                    run.exceptions.append(f"{el.type}: {el.message}"[:300])
                elif el_kind == "alert" and el.format == ALERT_ERROR:
                    run.alerts.append(el.body[:300])
            elif kind == "page_not_found":
                raise RunError("page_not_found", m.page_not_found.page_name)
            elif kind == "session_event" and m.session_event.HasField(
                    "script_compilation_exception"):
                raise RunError("exception", str(m.session_event.script_compilation_exception))
            elif kind == "script_finished":
                run.status = m.script_finished
                if run.status == EARLY_FOR_RERUN and (want is None or run.page != want):
                    continue                      # a switch_page: the next run follows
                if want is not None and run.page != want and run.status == FINISHED:
                    return run                    # ended elsewhere: the caller says why
                return run


def check(run: Run, what: str) -> None:
    """Raise the first problem the page shows."""
    if run.exceptions:
        raise RunError("exception", run.exceptions[0])
    if run.alerts:
        raise RunError("error_message", run.alerts[0])
    if run.status != FINISHED:
        raise RunError("bad_status", f"{what}: script_finished status {run.status}")


def unescape(markdown: str) -> str:
    """Text the app escaped for Markdown (``ui.md``), as the page shows it."""
    return re.sub(r"\\(.)", r"\1", markdown)


def number_in(text: str) -> float:
    m = re.search(r"[-+]?\d+(?:\.\d+)?", text.replace(",", ""))
    return float(m.group()) if m else float("nan")


# --------------------------------------------------------------------------------------------
# Recording
# --------------------------------------------------------------------------------------------


@dataclass
class Recorder:
    start: float = field(default_factory=time.perf_counter)
    samples: list[dict] = field(default_factory=list)    # role, action, t0, t1, ok
    errors: list[dict] = field(default_factory=list)
    fits: list[tuple[float, float]] = field(default_factory=list)
    published: dict[str, str] = field(default_factory=dict)   # token -> expected title

    def now(self) -> float:
        return time.perf_counter() - self.start

    def ok(self, role: str, action: str, t0: float, seconds: float, **extra: Any) -> None:
        self.samples.append({"role": role, "action": action, "t0": t0, "seconds": seconds,
                             **extra})

    def fail(self, role: str, who: str, action: str, err: Exception, t0: float) -> None:
        kind, detail = ((err.kind, err.detail) if isinstance(err, RunError)
                        else (type(err).__name__, str(err)))
        self.errors.append({"role": role, "who": who, "action": action, "kind": kind,
                            "detail": detail[:400], "t": round(t0, 2),
                            "after_s": round(self.now() - t0, 2)})
        print(f"  ! {role} {who} {action}: {kind}: {detail[:200]}", flush=True)


# --------------------------------------------------------------------------------------------
# Viewers
# --------------------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 60) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


async def viewer(i: int, base: str, token: str, rec: Recorder, deadline: float,
                 args: argparse.Namespace, ready: asyncio.Event) -> None:
    who, rng = f"v{i}", random.Random(1000 + i)
    s = Session(base, f"report={token}")
    t0 = rec.now()
    try:
        status = await asyncio.to_thread(http_get, f"{base}/?report={token}")
        if status != 200:
            raise RunError("http", f"GET /?report=… answered {status}")
        await s.connect()
        run = await s.rerun(timeout=args.timeout)
        check(run, "open")
        if s.last.find("number_input", DELTA_LABEL) is None:
            raise RunError("missing", "the report did not show (no δ input)")
        rec.ok("viewer", "open", t0, rec.now() - t0, bytes=run.bytes)
    except Exception as err:  # every failure is counted; none stops the test
        rec.fail("viewer", who, "open", err, t0)
        await s.close()
        ready.set()
        return
    ready.set()
    try:
        while True:
            await asyncio.sleep(rng.uniform(*args.think))
            if time.perf_counter() >= deadline:
                break
            roll = rng.random()
            action = "delta" if roll < 0.70 else "interval" if roll < 0.85 else "grouping"
            t0 = rec.now()
            try:
                expect = change(s, action, rng)
                run = await s.rerun(timeout=args.timeout)
                check(run, action)
                verify(run, action, expect)
                rec.ok("viewer", action, t0, run.seconds, bytes=run.bytes)
            except RunError as err:
                rec.fail("viewer", who, action, err, t0)
                if err.kind in ("disconnected", "timeout"):
                    await s.close()                 # a person would reload the page
                    s = Session(base, f"report={token}")
                    await s.connect()
                    check(await s.rerun(timeout=args.timeout), "reload")
    except Exception as err:
        rec.fail("viewer", who, "reload", err, rec.now())
    finally:
        await s.close()


def change(s: Session, action: str, rng: random.Random) -> Any:
    """Change one control as a reader would; returns what the page must then show."""
    if action == "delta":
        box = s.widget("number_input", DELTA_LABEL)
        current = box.value if box.HasField("value") else box.default
        base = box.default or current or 0.1
        options = sorted({round(base * f, 6) for f in (0.25, 0.5, 0.75, 1.25, 1.5, 2.0, 3.0)}
                         - {round(current, 6)})
        value = rng.choice(options)
        s.set_number(DELTA_LABEL, value)
        return value
    if action == "interval":
        slider = s.widget("slider", INTERVAL_LABEL)
        shown = slider.options[slider.value[0]] if len(slider.value) else ""
        option = rng.choice([o for o in slider.options if o != shown] or list(slider.options))
        s.set_option("slider", INTERVAL_LABEL, option)
        return option
    box = s.widget("selectbox", DENSITY_LABEL)
    shown = box.raw_value if box.HasField("raw_value") else box.options[box.default]
    option = rng.choice([o for o in box.options if o != shown] or list(box.options))
    s.set_option("selectbox", DENSITY_LABEL, option)
    return option


def verify(run: Run, action: str, expect: Any) -> None:
    """The page shows the change (else the run answered with a stale page)."""
    if action == "delta":
        metric = run.find("metric", CHANCE_LABEL)
        got = number_in(metric.label[len(CHANCE_LABEL):]) if metric else float("nan")
        text = metric.label[len(CHANCE_LABEL):] if metric else ""
        decimals = len(text.split(".")[1].split()[0]) if "." in text else 0
        if not abs(got - expect) <= 0.51 * 10 ** -decimals:
            raise RunError("stale", f"set δ = {expect}, the page shows "
                                    f"'{metric.label if metric else 'no metric'}'")
    elif action == "interval":
        if run.find("metric", f"{expect} interval", exact=True) is None:
            raise RunError("stale", f"set the interval to {expect}; no '{expect} interval' metric")
    else:
        charts = [c.spec for c in run.all("plotly_chart")]
        if not any(f"Effect by {expect}" in spec for spec in charts):
            raise RunError("stale", f"chose {expect}; no density plot 'Effect by {expect}'")


# --------------------------------------------------------------------------------------------
# Analysts
# --------------------------------------------------------------------------------------------


async def analyst(i: int, base: str, rec: Recorder, deadline: float,
                  args: argparse.Namespace) -> None:
    who = f"a{i}"
    s = Session(base)
    k = 0
    t0 = rec.now()
    try:
        await s.connect()
        check(await s.rerun(timeout=args.timeout), "open")
        rec.ok("analyst", "open", t0, rec.now() - t0)
        t0 = rec.now()
        s.click("Use the sample experiment")
        run = await s.rerun(timeout=args.timeout)
        check(run, "load sample")
        if not any("Loaded the sample" in b for b in s.last.texts("alert")):
            raise RunError("missing", "no 'Loaded the sample' message after loading")
        rec.ok("analyst", "load_sample", t0, run.seconds)
    except Exception as err:
        rec.fail("analyst", who, "load_sample", err, t0)
        await s.close()
        return
    while time.perf_counter() < deadline:
        k += 1
        seed = 1000 * (i + 1) + k
        action = "navigate"
        t0 = rec.now()
        try:
            run = await s.rerun(page=args.model_page, timeout=args.timeout)
            check(run, "model page")
            rec.ok("analyst", "page", t0, run.seconds)
            for label, value in (("Chains", args.chains), ("Warm-up iterations", args.warmup),
                                 ("Draws per chain", args.draws), ("Random seed", seed)):
                s.set_number(label, value)
            action = "settings"
            t0 = rec.now()
            run = await s.rerun(timeout=args.timeout)
            check(run, "settings")
            rec.ok("analyst", "page", t0, run.seconds)
            action = "fit"
            s.click("Fit the model")
            t0 = rec.now()
            run = await s.rerun(timeout=args.fit_timeout, until_page=args.effects_page)
            check(run, "fit")
            if run.page != s.pages.get(args.effects_page):
                raise RunError("missing", "Fit did not open the Effects page")
            if not run.all("plotly_chart"):
                raise RunError("missing", "the Effects page has no chart after the fit")
            rec.ok("analyst", "fit", t0, run.seconds, seed=seed)
            rec.fits.append((t0, rec.now()))
            print(f"  {who} fit {k} (seed {seed}): {run.seconds:.1f} s", flush=True)
            if args.no_publish:
                continue
            action = "publish"
            t0 = rec.now()
            run = await s.rerun(page=args.share_page, timeout=args.timeout)
            check(run, "share page")
            rec.ok("analyst", "page", t0, run.seconds)
            title = f"Load test: analyst {i}, fit {k}"
            s.set_text("Title (optional)", title)
            t0 = rec.now()
            run = await s.rerun(timeout=args.timeout)
            check(run, "title")
            rec.ok("analyst", "page", t0, run.seconds)
            s.click("Publish report")
            t0 = rec.now()
            run = await s.rerun(timeout=args.timeout)
            check(run, "publish")
            found = [m.group(1) for c in run.all("code") for m in [TOKEN.search(c.code_text)] if m]
            if not found:
                raise RunError("missing", "no report link after Publish")
            rec.published[found[0]] = title
            rec.ok("analyst", "publish", t0, run.seconds)
        except Exception as err:
            rec.fail("analyst", who, action, err, t0)
            if isinstance(err, RunError) and err.kind in ("disconnected", "timeout"):
                break
    await s.close()


# --------------------------------------------------------------------------------------------
# Reports: publishing before, checking after
# --------------------------------------------------------------------------------------------


def publish_reports(store_url: str) -> dict[str, str]:
    """Three reports from quick fits of the bundled samples; returns token -> title."""
    import pandas as pd

    import hte
    from hte.report_store import ReportStore
    from hte.reports import Snapshot

    quick = {"chains": 2, "warmup": 300, "draws": 300, "seed": 1}
    cont = pd.read_csv(ROOT / "sample_data" / "experiment.csv")
    yes_no = pd.read_csv(ROOT / "sample_data" / "experiment_binary.csv")
    fit_c = hte.fit(cont, outcome="support", treatment="treatment", treated="treatment",
                    by=["gender", "race", "party"], interactions=["gender:race"], **quick)
    fit_b = hte.fit(yes_no, outcome="donated", treatment="treatment", treated="treatment",
                    by=["gender", "race"], interactions=["gender:race"], **quick)
    snaps = [Snapshot.from_fit(fit_c, title="Load test report A (continuous)", threshold=0.2),
             Snapshot.from_fit(fit_c, title="Load test report B (continuous, δ 0.1, 95%)",
                               threshold=0.1, interval=0.95),
             Snapshot.from_fit(fit_b, title="Load test report C (yes/no)", threshold=0.02)]
    with ReportStore(store_url) as store:
        return {store.publish(snap)[0]: snap.title for snap in snaps}


async def check_reports(base: str, reports: dict[str, str], store_url: str | None,
                        timeout: float) -> list[dict]:
    """Every report opens, in the store and as a page, with its own title."""
    lost = []
    store = None
    if store_url:
        from hte.report_store import ReportStore
        store = ReportStore(store_url)
    for token, title in reports.items():
        problem = None
        try:
            if store is not None and store.open(token).title != title:
                problem = "the store returns another report's title"
            s = Session(base, f"report={token}")
            await s.connect()
            try:
                run = await s.rerun(timeout=timeout)
            finally:
                await s.close()
            check(run, "open")
            heading = [unescape(h.body) for h in run.all("heading")]
            if title and title not in heading:
                problem = problem or f"the page's title is {heading[:1]}"
        except Exception as err:
            problem = f"{type(err).__name__}: {err}"
        if problem:
            lost.append({"token": token[:8] + "…", "title": title, "problem": problem})
    if store is not None:
        store.close()
    return lost


# --------------------------------------------------------------------------------------------
# The server and the machine
# --------------------------------------------------------------------------------------------


def proc_stats(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system, with waited-for children) and resident memory in bytes."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = sum(int(x) for x in fields[11:15]) / ticks
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    return cpu, rss


async def monitor(pid: int | None, rec: Recorder, stop: asyncio.Event,
                  out: dict[str, Any]) -> None:
    """Every 2 s: server CPU and memory, load average, and this client's event-loop lag."""
    series, lags = [], []
    last = proc_stats(pid) if pid else None
    last_t = time.perf_counter()
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.25)
        lags.append(time.perf_counter() - t - 0.25)
        if time.perf_counter() - last_t < 2:
            continue
        now = time.perf_counter()
        point = {"t": round(rec.now(), 1), "load1": os.getloadavg()[0]}
        if pid:
            with contextlib.suppress(OSError):
                cpu, rss = proc_stats(pid)
                point["server_cpu_pct"] = round(100 * (cpu - last[0]) / (now - last_t), 1)
                point["server_rss_mb"] = round(rss / 2**20, 1)
                last = (cpu, rss)
        last_t = now
        series.append(point)
    out["series"] = series
    out["loop_lag_ms"] = {"p50": round(1000 * float(np.percentile(lags, 50)), 1),
                          "p95": round(1000 * float(np.percentile(lags, 95)), 1),
                          "max": round(1000 * max(lags), 1)} if lags else {}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((ln.split(":", 1)[1].strip() for ln in lines
                    if ln.startswith("model name")), cpu)
    mem = 0
    with contextlib.suppress(OSError):
        mem = next(int(line.split()[1]) for line in
                   Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    import streamlit

    return {"cores": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem / 2**20, 1),
            "python": platform.python_version(), "streamlit": streamlit.__version__,
            "load_before": [round(x, 2) for x in os.getloadavg()]}


# --------------------------------------------------------------------------------------------
# The browser cross-check
# --------------------------------------------------------------------------------------------


async def verify_with_browser(base: str, token: str, deltas: list[float]) -> dict[str, Any]:
    """Set δ in Chromium and with the protocol client on one report: same page, both ways."""
    from playwright.async_api import async_playwright

    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    idle = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
    checks = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                          args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(120_000)
        await page.goto(f"{base}/?report={token}")
        box = page.get_by_role("spinbutton", name=DELTA_LABEL)
        await box.wait_for()
        await page.wait_for_timeout(300)
        await page.wait_for_function(idle)
        s = Session(base, f"report={token}")
        await s.connect()
        check(await s.rerun(), "open")
        for value in deltas:
            await box.fill(str(value))
            t = time.perf_counter()
            await box.press("Enter")
            label = page.locator('[data-testid="stMetricLabel"]').filter(
                has_text=re.compile(rf"above \+{re.escape(str(value))}\b"))
            await label.first.wait_for()
            await page.wait_for_function(idle)
            browser_s = time.perf_counter() - t
            await page.wait_for_timeout(200)
            b_labels = [x.strip() for x in
                        await page.locator('[data-testid="stMetricLabel"]').all_inner_texts()]
            b_values = [x.strip() for x in
                        await page.locator('[data-testid="stMetricValue"]').all_inner_texts()]
            b_head = (await page.locator("h4").filter(has_text="chance the treatment")
                      .first.inner_text()).strip()
            s.set_number(DELTA_LABEL, value)
            run = await s.rerun()
            check(run, "delta")
            metrics = run.all("metric")
            p_labels = [m.label for m in metrics]
            p_values = [m.body for m in metrics]
            heads = [b for b in run.texts("markdown") if "chance the treatment" in b]
            p_head = unescape(heads[0].removeprefix("#### ")) if heads else ""
            p_head = p_head.replace("**", "")
            checks.append({"delta": value, "same_metrics": (b_labels, b_values)
                           == (p_labels, p_values), "same_headline": b_head == p_head,
                           "browser_s": round(browser_s, 3), "protocol_s": round(run.seconds, 3),
                           "browser": {"labels": b_labels, "values": b_values, "headline": b_head},
                           "protocol": {"labels": p_labels, "values": p_values,
                                        "headline": p_head}})
        await s.close()
        await browser.close()
    return {"report": token[:8] + "…", "checks": checks,
            "all_same": all(c["same_metrics"] and c["same_headline"] for c in checks)}


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def stats(seconds: list[float]) -> dict[str, Any]:
    if not seconds:
        return {"n": 0}
    a = np.asarray(seconds)
    return {"n": len(a), "p50_s": round(float(np.percentile(a, 50)), 3),
            "p95_s": round(float(np.percentile(a, 95)), 3), "max_s": round(float(a.max()), 3)}


def overlaps(sample: dict, fits: list[tuple[float, float]]) -> bool:
    a, b = sample["t0"], sample["t0"] + sample["seconds"]
    return any(a < f1 and f0 < b for f0, f1 in fits)


def summarize(rec: Recorder) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for role in ("viewer", "analyst"):
        mine = [s for s in rec.samples if s["role"] == role]
        actions = sorted({s["action"] for s in mine})
        out[role] = {a: stats([s["seconds"] for s in mine if s["action"] == a]) for a in actions}
        if role == "viewer":
            changes = [s for s in mine if s["action"] != "open"]
            out[role]["all_changes"] = stats([s["seconds"] for s in changes])
            out[role]["changes_while_a_fit_ran"] = stats(
                [s["seconds"] for s in changes if overlaps(s, rec.fits)])
            out[role]["changes_with_no_fit_running"] = stats(
                [s["seconds"] for s in changes if not overlaps(s, rec.fits)])
        errs = [e for e in rec.errors if e["role"] == role]
        kinds: dict[str, int] = {}
        for e in errs:
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        out[role]["errors"] = {"total": len(errs), "by_kind": kinds}
    return out


def print_table(summary: dict[str, Any], lost: list[dict], n_reports: int) -> None:
    print(f"\n{'role':8} {'interaction':28} {'n':>6} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    for role in ("viewer", "analyst"):
        for action, st in summary[role].items():
            if action == "errors" or not st.get("n"):
                continue
            print(f"{role:8} {action:28} {st['n']:>6} {st['p50_s']:>8.3f} {st['p95_s']:>8.3f} "
                  f"{st['max_s']:>8.3f}")
    for role in ("viewer", "analyst"):
        e = summary[role]["errors"]
        print(f"{role} errors: {e['total']} {e['by_kind'] or ''}")
    print(f"lost reports: {len(lost)} of {n_reports}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


async def run_load(args: argparse.Namespace, base: str, reports: dict[str, str],
                   store_url: str | None, pid: int | None) -> dict[str, Any]:
    rec = Recorder()
    result: dict[str, Any] = {}
    if args.verify:
        print("checking the protocol client against Chromium…", flush=True)
        result["browser_check"] = await verify_with_browser(base, next(iter(reports)),
                                                            [0.3, 0.15, 0.45])
        print(f"  same page both ways: {result['browser_check']['all_same']}; "
              + ", ".join(f"δ {c['delta']}: browser {c['browser_s']:.2f} s, protocol "
                          f"{c['protocol_s']:.2f} s" for c in result["browser_check"]["checks"]),
              flush=True)
    tokens = list(reports)
    stop, mon = asyncio.Event(), {}
    monitor_task = asyncio.create_task(monitor(pid, rec, stop, mon))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    rec.start = time.perf_counter()
    deadline = rec.start + 60 * args.minutes
    print(f"{args.viewers} viewers (ramp {args.ramp:.0f} s) and {args.analysts} analysts for "
          f"{args.minutes:g} min against {base}", flush=True)
    tasks, ready = [], []
    for i in range(args.viewers):
        ev = asyncio.Event()
        ready.append(ev)
        tasks.append(asyncio.create_task(
            viewer(i, base, tokens[i % len(tokens)], rec, deadline, args, ev)))
        await asyncio.sleep(args.ramp / max(args.viewers, 1))
    analysts_at = rec.now()     # every viewer has asked for its page; some still wait for it
    opened = sum(ev.is_set() for ev in ready)
    print(f"all viewers in at {analysts_at:.1f} s ({opened} pages shown so far); analysts "
          "start", flush=True)
    tasks += [asyncio.create_task(analyst(i, base, rec, deadline, args))
              for i in range(args.analysts)]
    await asyncio.gather(*tasks)
    ended = rec.now()
    stop.set()
    await monitor_task
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    print(f"load over at {ended:.0f} s; checking every report…", flush=True)
    everything = {**reports, **rec.published}
    lost = await check_reports(base, everything, store_url, args.timeout)
    summary = summarize(rec)
    print_table(summary, lost, len(everything))
    series = mon.get("series", [])
    rss = [p["server_rss_mb"] for p in series if "server_rss_mb" in p]
    cpu = [p["server_cpu_pct"] for p in series if "server_cpu_pct" in p]
    result.update({
        "summary": summary,
        "reports": {"before_run": len(reports), "published_by_analysts": len(rec.published),
                    "checked": len(everything), "lost": lost},
        "errors": rec.errors,
        "fits": [{"start_s": round(a, 1), "end_s": round(b, 1)} for a, b in rec.fits],
        "timing": {"analysts_started_s": round(analysts_at, 1), "ended_s": round(ended, 1),
                   "viewer_pages_shown_when_analysts_started": opened},
        "server": {"rss_mb_first": rss[0] if rss else None, "rss_mb_last": rss[-1] if rss
                   else None, "rss_mb_max": max(rss) if rss else None,
                   "cpu_pct_mean": round(float(np.mean(cpu)), 1) if cpu else None,
                   "cpu_pct_max": max(cpu) if cpu else None},
        "client": {"cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime
                                  - cpu0.ru_stime, 1), "loop_lag_ms": mon.get("loop_lag_ms")},
        "series": series,
    })
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--viewers", type=int, default=50)
    ap.add_argument("--analysts", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--url", help="a running server (default: start one)")
    ap.add_argument("--reports", nargs="*", default=[], help="report tokens to view (--url)")
    ap.add_argument("--reports-url", help="the report store of the server (--url): reports are "
                                          "published into it and looked up in it afterwards")
    ap.add_argument("--server-pid", type=int,
                    help="with --url: the server's process id, to record its CPU and memory")
    ap.add_argument("--think", type=float, nargs=2, default=(2.0, 5.0), metavar=("MIN", "MAX"),
                    help="a viewer's pause between changes, seconds (uniform; default 2 5)")
    ap.add_argument("--ramp", type=float, default=15.0, help="seconds to bring viewers in")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--no-publish", action="store_true", help="analysts only fit")
    ap.add_argument("--timeout", type=float, default=120.0, help="per page change, seconds")
    ap.add_argument("--fit-timeout", type=float, default=1200.0)
    ap.add_argument("--verify", action="store_true",
                    help="first check the protocol client against Chromium (Playwright)")
    ap.add_argument("--json", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    args.model_page, args.effects_page, args.share_page = "2 · Model", "3 · Effects", "7 · Share"
    args.think = tuple(sorted(args.think))

    info = machine()
    with contextlib.ExitStack() as stack:
        pid = None
        if args.url:
            base, store_url = args.url.rstrip("/"), args.reports_url
            pid = args.server_pid
            if not (args.reports or store_url):
                ap.error("with --url, give --reports TOKEN ... or --reports-url")
        else:
            from tests.test_browser import running_app

            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hte-load-")))
            store_url = f"sqlite:///{tmp / 'reports.db'}"
            print(f"starting streamlit (reports in {store_url})…", flush=True)
            base = stack.enter_context(running_app("load-streamlit.log",
                                                   HTE_REPORTS_URL=store_url))
            pid = server_pid()
        t = time.perf_counter()
        reports = {tok: "" for tok in args.reports}
        if store_url and not args.reports:
            print("publishing three reports from quick fits of the samples…", flush=True)
            reports = publish_reports(store_url)
            print(f"  done in {time.perf_counter() - t:.0f} s", flush=True)
        result = asyncio.run(run_load(args, base, reports, store_url, pid))
    info["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result = {"config": {k: v for k, v in vars(args).items() if k != "json"} | {
        "json": str(args.json), "url": args.url or "own server"}, "machine": info, **result}
    if not args.url:
        result["server_log"] = log_problems(ROOT / "test-artifacts" / "load-streamlit.log")
    args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {args.json}")
    ok = (not result["errors"] and not result["reports"]["lost"]
          and result.get("browser_check", {}).get("all_same", True))
    return 0 if ok else 1


def server_pid() -> int | None:
    """The pid of the streamlit process this script started (a child of this process)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes()
            if ppid == os.getpid() and b"streamlit" in cmd:
                return int(stat.parent.name)
    return None


def log_problems(path: Path) -> dict[str, Any]:
    """Tracebacks and warnings in the server's log."""
    if not path.exists():
        return {}
    lines = path.read_text(errors="replace").splitlines()
    bad = [ln for ln in lines if re.search(r"Traceback|ERROR|Error|WARNING|Exception", ln)]
    return {"lines": len(lines), "problem_lines": len(bad), "first": bad[:20]}


if __name__ == "__main__":
    sys.exit(main())
