"""One self-contained HTML page telling what a rollout run did and why.

:func:`render_report` takes a rollout's history records (``StateStore.history``)
and its series points (:mod:`nginx_canary.report.series`) and returns one HTML
document: inline CSS, inline SVG charts, no script, no font, image or link
that would be fetched (a Content-Security-Policy forbids it in any case).
Every string taken from the records is escaped.

What it shows, for the *last run* in the history (the records from the last
``start`` on, and the points from that moment on):

* the outcome and why: the final state and message, the reason of the
  rollback / promotion / abort, and for a rollback how long after the start
  and after the first failed check of the deciding streak it came, and how
  long the restore took;
* three charts on one time axis (:mod:`nginx_canary.report.charts`): the
  canary's weight, canary vs stable 5xx rate, canary vs stable p99;
* every check verdict in the history (failed ones highlighted with each
  failed check's reason; runs of passing / inconclusive checks folded into a
  ``<details>`` element) and every other event.

This module assembles the page: the outcome box, the check and event tables,
the style sheet. Pure: no I/O, no clock (``generated_at`` is given).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

from nginx_canary.domain import ACTIVE_STATES, State
from nginx_canary.report.charts import run_charts
from nginx_canary.report.formatting import (clock_text, duration_text, elapsed_text, esc, finite_number, ms_text,
                                            percent_label, rate_text)
from nginx_canary.report.run import Run, detail_of, last_run, summarize_run, verdict_of

#: A run of this many passing / inconclusive checks or more is folded.
FOLD_AT = 4


def _outcome(run: Run) -> str:
    state = run.state or "unknown"
    if state in ACTIVE_STATES + (State.IDLE,):
        css, title = "running", f"still {state}"
    elif state == State.PROMOTED:
        css, title = "good", "promoted"
    elif state == State.ABORTED:
        css, title = "warn", "aborted"
    else:
        css, title = "bad", state.replace("_", " ")
    lines = [f'<section class="outcome {css}" id="outcome"><h2>Outcome: {esc(title)}</h2>']
    if run.message:
        lines.append(f'<p class="message">{esc(run.message)}</p>')
    if run.reason and run.reason not in run.message:
        lines.append(f'<p><b>Why:</b> {esc(run.reason)}</p>')
    facts = []
    if run.rollback_at is not None and run.start is not None:
        facts.append(f"rolled back {duration_text(run.rollback_at - run.start)} after the start "
                     f"({esc(clock_text(run.rollback_at))})")
        if run.first_failure_at is not None:
            facts.append("the first failed check of the deciding streak was at "
                         f"{esc(clock_text(run.first_failure_at))}, "
                         f"{duration_text(run.rollback_at - run.first_failure_at)} before the rollback")
        if run.restored_at is not None:
            facts.append(f"original files restored {duration_text(run.restored_at - run.rollback_at)} "
                         "after the decision")
    if run.start is not None and run.end is not None:
        facts.append(f"run length {duration_text(run.end - run.start)}")
    facts.append(f"{run.checks} check records, {run.failed_checks} failed")
    lines.append("<ul>" + "".join(f"<li>{f}</li>" for f in facts) + "</ul></section>")
    return "".join(lines)


_CHECK_COLUMNS = ('<colgroup><col style="width:9%"><col style="width:8%"><col style="width:7%"><col style="width:9%">'
                  '<col style="width:35%"><col style="width:13%"><col style="width:13%"><col style="width:6%">'
                  '</colgroup>')
_CHECK_HEAD = ("<thead><tr><th>time</th><th>run</th><th>weight</th><th>verdict</th><th>reason</th>"
               "<th>canary req / 5xx / p99</th><th>stable req / 5xx / p99</th><th>streak</th></tr></thead>")


def _figures(summary: Any) -> str:
    if not isinstance(summary, dict):
        return "-"
    requests = summary.get("requests")
    return (f"{esc(requests if requests is not None else '-')} / "
            f"{rate_text(finite_number(summary.get('error_rate')))} / "
            f"{ms_text(finite_number(summary.get('p99')))}")


def _check_row(record: Dict[str, Any], start: float) -> str:
    verdict = verdict_of(record)
    outcome = str(verdict.verdict or "?")
    stamp = finite_number(record.get("time")) or 0.0
    reason = esc(verdict.reason)
    failed = [c for c in verdict.checks if c.verdict == "fail"]
    if failed:
        reason += "<ul class=\"failed\">" + "".join(
            f"<li><b>{esc(c.name)}</b>: {esc(c.reason)}</li>" for c in failed) + "</ul>"
    detail = detail_of(record)
    streak = detail.get("failure_streak")
    threshold = detail.get("failure_threshold")
    streak_text = ("" if streak is None
                   else f"{esc(streak)}/{esc(threshold)}" if threshold is not None else esc(streak))
    css = outcome if outcome in ("pass", "fail", "inconclusive") else "other"
    return (f'<tr class="check {css}"><td>{esc(clock_text(stamp))}</td><td>{elapsed_text(stamp - start)}</td>'
            f'<td>{esc(percent_label(record.get("canary_percent")))}</td><td class="verdict">{esc(outcome)}</td>'
            f'<td>{reason}</td><td>{_figures(verdict.canary)}</td><td>{_figures(verdict.stable)}</td>'
            f'<td>{streak_text}</td></tr>')


def _checks(run: Run) -> str:
    checks = [r for r in run.records if r.get("event") == "check"]
    start = run.start or 0.0
    if not checks:
        return '<section id="checks"><h2>Check verdicts</h2><p>No check was recorded in this run.</p></section>'
    groups: List[Tuple[bool, List[Dict[str, Any]]]] = []  # (quiet, records)
    for record in checks:
        quiet = not verdict_of(record).failed
        if groups and groups[-1][0] == quiet:
            groups[-1][1].append(record)
        else:
            groups.append((quiet, [record]))
    blocks: List[str] = []
    pending_rows: List[str] = []

    def close_table() -> None:
        if pending_rows:
            head = _CHECK_HEAD if not blocks else ""
            blocks.append(f'<table class="checks">{_CHECK_COLUMNS}{head}<tbody>{"".join(pending_rows)}</tbody></table>')
            pending_rows.clear()

    for quiet, records in groups:
        if quiet and len(records) >= FOLD_AT:
            close_table()
            if not blocks:
                blocks.append(f'<table class="checks">{_CHECK_COLUMNS}{_CHECK_HEAD}</table>')
            counts: Dict[str, int] = {}
            for record in records:
                name = str(verdict_of(record).verdict)
                counts[name] = counts.get(name, 0) + 1
            first, last = finite_number(records[0].get("time")) or 0.0, finite_number(records[-1].get("time")) or 0.0
            weights = sorted({percent_label(r.get("canary_percent")) for r in records},
                             key=lambda t: finite_number(t[:-2]) or 0)
            what = ", ".join(f"{n} {esc(k)}" for k, n in sorted(counts.items()))
            rows = "".join(_check_row(r, start) for r in records)
            blocks.append(f'<details class="quiet"><summary>{len(records)} checks without a failure ({what}), '
                          f'{esc(clock_text(first))} to {esc(clock_text(last))} at {esc(", ".join(weights))}</summary>'
                          f'<table class="checks">{_CHECK_COLUMNS}<tbody>{rows}</tbody></table></details>')
        else:
            pending_rows.extend(_check_row(r, start) for r in records)
    close_table()
    return (f'<section id="checks"><h2>Check verdicts ({len(checks)})</h2>'
            '<p class="note">The history keeps every failed check and every change of verdict; passing and '
            'inconclusive checks at most once a minute. Runs of checks without a failure are folded: click to open.</p>'
            + "".join(blocks) + "</section>")


def _events(run: Run) -> str:
    start = run.start or 0.0
    rows = []
    for record in run.records:
        if record.get("event") == "check":
            continue
        detail = detail_of(record)
        stamp = finite_number(record.get("time")) or 0.0
        text = detail.get("message") or ""
        extra = [f"{key}: {detail[key]}" for key in ("reason", "error", "outcome", "target")
                 if detail.get(key) and str(detail[key]) not in str(text)]
        if detail.get("changed_outside"):
            extra.append("changed outside nginx-canary: " + ", ".join(map(str, detail["changed_outside"])))
        css = "bad" if record.get("event") in ("rollback", "apply_failed", "restore_failed") else ""
        rows.append(f'<tr class="{css}"><td>{esc(clock_text(stamp))}</td><td>{elapsed_text(stamp - start)}</td>'
                    f'<td>{esc(record.get("event"))}</td><td>{esc(record.get("state"))}</td>'
                    f'<td>{esc(percent_label(record.get("canary_percent")))}</td>'
                    f'<td>{esc(text)}{"".join(f"<br><small>{esc(x)}</small>" for x in extra)}</td></tr>')
    if not rows:
        return ""
    return ('<section id="events"><h2>Events</h2><table class="events"><colgroup><col style="width:9%">'
            '<col style="width:8%"><col style="width:10%"><col style="width:10%"><col style="width:7%"><col>'
            '</colgroup><thead><tr><th>time</th><th>run</th><th>event</th><th>state</th><th>weight</th>'
            '<th>message</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table></section>")


_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1140px;
       padding: 16px 24px 40px; color: #212529; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 22px 0 8px; }
.meta { color: #495057; margin: 0 0 10px; }
.outcome { border-left: 6px solid #868e96; background: #f8f9fa; padding: 8px 14px; margin: 10px 0; }
.outcome h2 { margin: 4px 0; } .outcome ul { margin: 4px 0; padding-left: 20px; }
.outcome.good { border-color: #2b8a3e; background: #ebfbee; }
.outcome.bad { border-color: #c92a2a; background: #fff5f5; }
.outcome.warn { border-color: #f08c00; background: #fff9db; }
.outcome.running { border-color: #1c7ed6; background: #e7f5ff; }
.message { font-weight: 600; }
figure { margin: 8px 0 4px; } figcaption { margin: 0 0 2px; } .key { margin-left: 14px; color: #495057; }
.key svg { vertical-align: middle; margin-right: 4px; }
svg.chart { display: block; } svg text { font: 11px system-ui, sans-serif; fill: #495057; }
svg text.lbl { fill: #5f3dc4; font-weight: 600; } svg text.thr { fill: #c92a2a; }
svg text.empty { font-size: 14px; fill: #868e96; }
.note { color: #6c757d; font-size: 12px; margin: 2px 0 8px; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; font-size: 13px; }
th, td { text-align: left; vertical-align: top; padding: 3px 6px; border-bottom: 1px solid #e9ecef;
         overflow-wrap: anywhere; }
th { background: #f1f3f5; font-weight: 600; }
tr.fail td { background: #ffe3e3; } tr.fail td.verdict { color: #c92a2a; font-weight: 700; }
tr.inconclusive td.verdict { color: #868e96; } tr.pass td.verdict { color: #2b8a3e; }
tr.bad td { background: #fff5f5; }
ul.failed { margin: 2px 0 0; padding-left: 18px; color: #c92a2a; }
details.quiet { border-bottom: 1px solid #e9ecef; }
details.quiet summary { padding: 4px 6px; color: #495057; cursor: pointer; background: #f8f9fa; }
footer { margin-top: 24px; color: #868e96; font-size: 12px; }
"""


def render_report(name: str, history: Sequence[Dict[str, Any]], points: Sequence[Dict[str, Any]], *,
                  generated_at: float, source: Optional[str] = None) -> str:
    """The HTML report of rollout ``name``'s last run. Never raises on odd records: what cannot be read is left out.

    ``history`` are history records (any order, several runs: only the last
    run is shown), ``points`` series points (those before the run's start are
    left out), ``generated_at`` seconds since the epoch, ``source`` a line
    saying where the data came from.
    """
    records = last_run(history)
    run_start = finite_number(records[0].get("time")) if records and records[0].get("event") == "start" else None
    usable = [p for p in points if isinstance(p, dict) and finite_number(p.get("time")) is not None]
    if run_start is not None:
        usable = [p for p in usable if float(p["time"]) >= run_start - 1.0]
    usable.sort(key=lambda p: float(p["time"]))
    run = summarize_run(records, usable)
    title = f"nginx-canary rollout {name}"
    meta = []
    if run.start is not None:
        meta.append(f"run started {esc(clock_text(run.start, date=True))}")
    if run.end is not None and run.start is not None:
        meta.append(f"last record {esc(clock_text(run.end, date=True))} ({duration_text(run.end - run.start)})")
    if run.steps:
        meta.append("steps " + " → ".join(esc(percent_label(s)) for s in run.steps))
    if run.step_interval is not None:
        meta.append(f"bake time {duration_text(run.step_interval)} per step")
    if run.on_success:
        meta.append(f"on success: {esc(run.on_success)}")
    if not records and not usable:
        body = '<section class="outcome"><h2>No data</h2><p>Nothing was recorded for this rollout yet.</p></section>'
    else:
        body = (_outcome(run) + '<section id="charts"><h2>Weight, 5xx rate and p99 over the run</h2>'
                + run_charts(run, usable) + "</section>" + _checks(run) + _events(run))
    footer = [f"generated {esc(clock_text(generated_at, date=True))} by nginx-canary"]
    if source:
        footer.append(f"data: {esc(source)}")
    footer.append(f"{len(records)} history records, {len(usable)} series points")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Rollout <code>{esc(name)}</code></h1><p class=\"meta\">{' · '.join(meta)}</p>"
            f"{body}<footer>{' · '.join(footer)}</footer></body></html>\n")
