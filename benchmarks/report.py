"""Results as JSON, a markdown report (the tables the README shows) and a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.scenarios import LABELS

GOALS = (
    # (text, scenario, value of the results, threshold, higher is better[, divided by this value]):
    # issue #14's goals first, then the earlier ones still reported
    ("stepflow + SQLite >= 0.9x raw loop (workflows/s)", "throughput", ("sqlite", "to_raw"), 0.9, True),
    ("stepflow + PostgreSQL >= 0.8x raw loop (workflows/s)", "throughput", ("postgres", "to_raw"), 0.8, True),
    ("stepflow + SQLite job gap p50 <= 3x the raw loop's at half load (ratio)", "latency",
     ("sqlite", "handler_gap_ms", "p50"), 3.0, False, ("raw", "handler_gap_ms", "p50")),
    ("stepflow + SQLite job gap p99 < 25 ms at half load", "latency", ("sqlite", "handler_gap_ms", "p99"), 25.0, False),
    ("stepflow + PostgreSQL job gap p99 < 40 ms at half load", "latency", ("postgres", "handler_gap_ms", "p99"),
     40.0, False),
    ("HTTP starts >= 600 workflows/s (one start a request, SQLite)", "starts", ("single", "workflows_per_s"), 600.0,
     True),
    ("step chain (400 by default), stepflow + SQLite, start-up excluded <= 2.5 s", "chain", ("sqlite", "seconds"), 2.5, False),
    ("cost per job, longest history <= 1.5x shortest", "history", ("longest_to_shortest",), 1.5, False),
    ("stepflow + SQLite >= 1.2x Celery chains (workflows/s)", "throughput", ("sqlite", "to_celery"), 1.2, True),
    ("stepflow + SQLite step-to-step p99 < 20 ms at half load", "latency", ("sqlite", "step_latency_ms", "p99"),
     20.0, False),
    ("stepflow + PostgreSQL step-to-step p99 < 20 ms at half load", "latency",
     ("postgres", "step_latency_ms", "p99"), 20.0, False),
)


def write(results: dict[str, Any], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(results, indent=1))
    paths["markdown"].write_text(markdown(results))
    chart(results, paths["png"])
    return paths


# --- markdown ----------------------------------------------------------------------------


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pcts(summary: dict[str, float] | None) -> str:
    if not summary:
        return "–"
    return f"{summary['p50']:,.1f} / {summary['p95']:,.1f} / {summary['p99']:,.1f}"


def _dig(data: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def machine_line(m: dict[str, Any]) -> str:
    parts = [f"{m.get('cpus')} cores ({m.get('cpu_model', '?')})", f"{m.get('memory_gib', '?')} GiB",
             f"Python {m.get('python')}", f"RabbitMQ {m.get('rabbitmq', '?')}", f"PostgreSQL {m.get('postgresql', '?')}",
             f"SQLite {m.get('sqlite', '?')}", f"aio-pika {m.get('aio-pika', '?')}", f"Celery {m.get('celery', '?')}",
             f"eventsourcing {m.get('eventsourcing', '?')}"]
    return ", ".join(parts)


def markdown(results: dict[str, Any]) -> str:
    sc = results["scenarios"]
    lines = [
        (f"Machine: {machine_line(results['machine'])}. Broker, store, backends and workers share it, and "
         "other work ran on it too: read the ratios (measured in the same run), not the absolute numbers."),
        f"Command: `{results['command']}` ({results['duration_s']:.0f} s, {results['started_at']}).", "",
    ]
    t = sc.get("throughput")
    if t and t.get("ok"):
        load = t["load"]
        celery_pool = _dig(t, ("results", "celery", "extra", "pool"))
        lines += [
            (f"**Throughput**: {load['workflows']:,} workflows x {load['steps']} sequential no-op steps, all started "
             f"at once, 2 worker processes per contender (Celery: `{celery_pool}`); {t['rounds']} interleaved "
             "round(s): the best round's rates, and the median over rounds of the ratios measured within a round. "
             "CPU: user + system of the contender's processes (not the broker's) per job."),
            "",
            "| contender | workflows/s | jobs/s | x raw | x Celery | CPU ms/job | backend RSS peak MiB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for c, r in t["results"].items():
            lines.append(f"| {LABELS[c]} | {_f(r['workflows_per_s'])} | {_f(r['jobs_per_s'])} | "
                         f"{_f(r['to_raw'], 2)} | {_f(r['to_celery'], 2)} | {_f(r['cpu_ms_per_job'], 2)} | "
                         f"{_f(_dig(r, ('rss_summary', 'peak')))} |")
        lines.append("")
    f = sc.get("fanout")
    if f and f.get("ok"):
        lines += [
            (f"**Fan-out/fan-in**: 1 workflow, a step of {f['load']['fan_out']:,} jobs then a join step (Celery: a "
             "chord, which needs a result backend: its database backend on the same PostgreSQL)."),
            "",
            "| contender | seconds | jobs/s | speed x raw |",
            "| --- | ---: | ---: | ---: |",
        ]
        for c, r in f["results"].items():
            lines.append(f"| {LABELS[c]} | {_f(r['seconds'], 2)} | {_f(r['jobs_per_s'])} | {_f(r['to_raw'], 2)} |")
        lines.append("")
    la = sc.get("latency")
    if la and la.get("ok"):
        offered = (f"at {la['share_of_max']:.0%} of each contender's maximum (its median throughput round)"
                   if la.get("share_of_max") is not None else "at the same offered rate for every contender")
        lines += [
            (f"**Latency** {offered}: "
             f"{la['steps']}-step "
             f"workflows started at a steady rate for {la['seconds']:.0f} s"
             + (f", {la['rounds']} interleaved rounds: each contender's median round by job gap p50"
                if la.get("rounds", 1) > 1 else "")
             + "; p50 / p95 / p99 in ms. "
             "Step-to-step: in the backend, completion received -> next order confirmed (Celery has no backend). "
             "Job gap: one job's end -> the next job's start, seen in the workers (both broker hops included). "
             "End-to-end: workflow start -> completion."),
            "",
            "| contender | offered wf/s (jobs/s) | step-to-step | job gap | end-to-end | job gap p50 / p99 by round |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for c, r in la["results"].items():
            by_round = ", ".join(f"{_f(g['p50'], 1)} / {_f(g['p99'], 1)}" for g in r.get("rounds_handler_gap_ms", []))
            lines.append(f"| {LABELS[c]} | {_f(r['offered_workflows_per_s'])} ({_f(r['offered_jobs_per_s'], 0)}) | "
                         f"{_pcts(r['step_latency_ms'])} | {_pcts(r['handler_gap_ms'])} | {_pcts(r['e2e_ms'])} | "
                         f"{by_round} |")
        lines.append("")
        staged = {c: r["extra"]["stages"] for c, r in la["results"].items() if (r.get("extra") or {}).get("stages")}
        if staged:
            lines += [
                ("Where a stepflow step's time goes in the backend (p50 / p99 ms; \"answer sent until received\": "
                 "a worker's job end to its answer's arrival in the backend (one broker hop, and the backend's "
                 "event loop getting to it); \"received until published\": "
                 "a completion's arrival to the start of the publish of the order it caused, split at the inbox: "
                 "\"received until taken\" (the batch before it, and the batch window) and \"received until "
                 "stored\" (its batch's commit too); the job gap less \"answer sent until "
                 "received\" and \"received until published\" is the order's hop to the next worker; \"wait\" is the time "
                 "queued for the thread, \"run\" the call itself, \"run cpu\" the CPU the thread used in it (the "
                 "rest it waited: for the GIL, a core, the disk or a lock); `execute` commits an inbound batch, "
                 "`execute_and_start` one with the starts that waited for it (they ride on its commit), "
                 "`start_workflows` the starts committed on their own (the harness starts each workflow at the "
                 "offered rate with `Backend.start_workflow`, as an embedding service would), `next_batch` "
                 "reads the log, `advance` writes the outbox's position):"),
                "",
                "| contender | stage | calls | p50 | p99 |",
                "| --- | --- | ---: | ---: | ---: |",
            ]
            for c, stages in staged.items():
                for stage, v in stages.items():
                    if v["count"] < 10:  # start-up calls, not a step's path
                        continue
                    lines.append(f"| {LABELS[c]} | {stage} | {v['count']:,} | {_f(v['p50'], 2)} | {_f(v['p99'], 2)} |")
            lines.append("")
    s = sc.get("scale")
    if s and (s.get("by_workflows") or s.get("by_history")):
        lines += [
            ("**Scale** (stepflow + SQLite, all started at once): time against the number of workflows, and the "
             "backend's RSS (sampled every 0.25 s from 1 s in; growth over the second half of the run)."),
            "",
            "| workflows x steps | jobs | seconds | workflows/s | jobs/s | RSS start / peak / end MiB | RSS growth, 2nd half |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in s["by_workflows"]:
            rss = r["rss_summary"] or {}
            env = r["extra"].get("backend_env") or {}
            note = "".join(f", {k}={v}" for k, v in env.items())
            lines.append(f"| {r['workflows']:,} x {r['load']['steps']}{note} | {r['jobs']:,} | {_f(r['seconds'], 2)} | "
                         f"{_f(r['workflows_per_s'])} | {_f(r['jobs_per_s'])} | {_f(rss.get('start'))} / "
                         f"{_f(rss.get('peak'))} / {_f(rss.get('end'))} | {_f(rss.get('growth_second_half_pct'))} % |")
        lines.append("")
    h = sc.get("history")
    if h and h.get("by_history"):
        lines += [
            ("**History length** (stepflow + SQLite, chains all started at once): cost per job against steps per "
             f"workflow (3 events each); longest / shortest: {_f(h.get('longest_to_shortest'), 2)}x."),
            "",
            "| workflows x steps | events per workflow | seconds | jobs/s | ms per job | CPU ms/job | RSS peak MiB |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in h["by_history"]:
            lines.append(f"| {r['workflows']:,} x {r['load']['steps']:,} | {r['events_per_workflow']:,} | "
                         f"{_f(r['seconds'], 2)} | {_f(r['jobs_per_s'])} | {_f(r['ms_per_job'], 2)} | "
                         f"{_f(r['cpu_ms_per_job'], 2)} | {_f(_dig(r, ('rss_summary', 'peak')))} |")
        lines.append("")
    ch = sc.get("chain")
    if ch and ch.get("ok"):
        published = ", ".join(f"{k} {v} s" for k, v in ch["published_s"].items())
        lines += [
            (f"**Chain**: one workflow of {ch['load']['steps']} sequential no-op steps, one worker process, over "
             f"RabbitMQ; best of {ch['rounds']} round(s). Start-up excluded: first start -> last completion. "
             "Included: the first process spawned (store opened, worker and backend started, the harness "
             "waiting for the worker's consumer) -> last completion. x raw: time over the raw loop's (lower is "
             f"better). Published for a comparable test on another machine (context only): {published}."),
            "",
            "| contender | seconds | ms per step | x raw | with start-up s | rounds s |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for c, r in ch["results"].items():
            lines.append(f"| {LABELS[c]} | {_f(r['seconds'], 2)} | {_f(r['ms_per_step'], 2)} | {_f(r['to_raw'], 2)} | "
                         f"{_f(r['with_startup_s'], 2)} | {', '.join(_f(x, 2) for x in r['rounds_seconds'])} |")
        lines.append("")
    st = sc.get("starts")
    if st and st.get("ok"):
        lines += [
            (f"**HTTP starts** (`stepflow serve --http`, SQLite, {st['clients']} client threads with keep-alive, "
             "one-step workflows, no worker): a start counts when its 201 came (committed; the views follow "
             "within a pass); every answered id is checked in the store. \"views behind\": after the last answer, "
             "how long a listing with `?after=` took to show every start."),
            "",
            "| variant | workflows/s | requests | request p50 / p95 / p99 ms | server CPU ms per workflow | views behind ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, r in st["results"].items():
            variant = f"batch of {r['batch']}" if r["batch"] else "one start a request"
            lines.append(f"| {variant} | {_f(r['workflows_per_s'])} | {r['requests']:,} | {_pcts(r['request_ms'])} | "
                         f"{_f(r['server_cpu_ms_per_workflow'], 2)} | {_f(r.get('views_behind_ms'))} |")
        lines.append("")
    r = sc.get("replay")
    if r and r.get("ok"):
        lines += [
            "**Replay** (benchmarks/bench_rebuild.py): rebuild of every view from a generated log, SQLite.",
            "",
            "| events | generate events/s | raw log read events/s | rebuild events/s | rebuild s | rebuild x raw read |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
            (f"| {r['events']:,} | {_f(r['generate_events_per_s'], 0)} | {_f(r['raw_read_events_per_s'], 0)} | "
             f"{_f(r['rebuild_events_per_s'], 0)} | {_f(r['rebuild_s'], 2)} | {_f(r['rebuild_to_raw_read'], 2)} |"),
            "",
        ]
    goals = goal_rows(results)
    if goals:
        lines += ["**Goals** (reported, not asserted):", "", "| goal | measured | met |", "| --- | ---: | :---: |"]
        for text, value, met in goals:
            lines.append(f"| {text} | {_f(value, 2)} | {'yes' if met else 'no'} |")
        lines.append("")
    again = sorted({f"{name}/{row['contender']}" for name, data in sc.items()
                    for row in _rows(data) if (row.get("extra") or {}).get("run_again_after")})
    if again:
        lines += [(f"Run again once because the broker restarted under them (other work on the machine): "
                  f"{', '.join(again)}."), ""]
    failed = [name for name, data in sc.items() if not data.get("ok")]
    for name in failed:
        lines += [f"**{name} FAILED**: {sc[name].get('error', '?')}", ""]
    return "\n".join(lines)


def _rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = list((data.get("results") or {}).values())
    return rows + list(data.get("by_workflows") or []) + list(data.get("by_history") or [])


def goal_rows(results: dict[str, Any]) -> list[tuple[str, float, bool]]:
    rows = []
    for text, scenario, keys, threshold, higher, *per in GOALS:
        data = results["scenarios"].get(scenario)
        if not data or not data.get("ok"):
            continue
        value = _dig(data.get("results", data), keys)
        if per:
            divisor = _dig(data.get("results", data), per[0])
            value = value / divisor if value is not None and divisor else None
        if value is None:
            continue
        rows.append((text, value, value >= threshold if higher else value <= threshold))
    return rows


# --- chart -------------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = results["scenarios"]
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    colors = {"raw": "#7f7f7f", "celery": "#2ca02c", "sqlite": "#1f77b4", "postgres": "#ff7f0e"}

    ax = axes[0][0]
    t = sc.get("throughput")
    if t and t.get("ok"):
        names = list(t["results"])
        values = [t["results"][c]["workflows_per_s"] for c in names]
        bars = ax.bar([LABELS[c] for c in names], values, color=[colors[c] for c in names])
        for bar, c in zip(bars, names, strict=True):
            ratio = t["results"][c]["to_raw"]
            ax.annotate(f"{ratio:.2f}x raw" if ratio is not None else "", (bar.get_x() + bar.get_width() / 2,
                        bar.get_height()), ha="center", va="bottom")
        ax.set_title(f"Throughput: {t['load']['workflows']:,} wf x {t['load']['steps']} steps (workflows/s)")
        ax.tick_params(axis="x", labelrotation=15)
    _empty(ax, t)

    ax = axes[0][1]
    f = sc.get("fanout")
    if f and f.get("ok"):
        names = list(f["results"])
        ax.bar([LABELS[c] for c in names], [f["results"][c]["seconds"] for c in names],
               color=[colors[c] for c in names])
        ax.set_title(f"Fan-out {f['load']['fan_out']:,} jobs + join: seconds (lower is better)")
        ax.tick_params(axis="x", labelrotation=15)
    _empty(ax, f)

    ax = axes[0][2]
    la = sc.get("latency")
    if la and la.get("ok"):
        names = list(la["results"])
        series = [("step-to-step", "step_latency_ms"), ("job gap", "handler_gap_ms")]
        bars = [(c, label, key) for c in names for label, key in series if la["results"][c][key]]
        width = 0.8 / max(1, len(bars))
        for n, (c, label, key) in enumerate(bars):
            summary = la["results"][c][key]
            j = 0 if key == "step_latency_ms" else 1
            xs = [k + (n - (len(bars) - 1) / 2) * width for k in range(3)]
            ax.bar(xs, [summary["p50"], summary["p95"], summary["p99"]], width,
                   color=colors[c], alpha=1.0 if j == 0 else 0.5, label=f"{LABELS[c]}: {label}")
        ax.set_xticks(range(3), ["p50", "p95", "p99"])
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        share = la.get("share_of_max")
        ax.set_title(f"Latency at {share:.0%} of max (ms, log)" if share is not None else "Latency (ms, log)")
        ax.legend(fontsize=6, loc="upper left", framealpha=0.6)
    _empty(ax, la)

    s = sc.get("scale")
    if s and not s.get("by_workflows"):
        s = {"ok": False}
    ax = axes[1][0]
    if s and s.get("by_workflows"):
        rows = [r for r in s["by_workflows"] if not r["extra"].get("backend_env")]
        variants = [r for r in s["by_workflows"] if r["extra"].get("backend_env")]
        ax.plot([r["workflows"] for r in rows], [r["seconds"] for r in rows], "o-", color=colors["sqlite"],
                label="seconds")
        for r in variants:
            ax.plot([r["workflows"]], [r["seconds"]], "x", color="black", label="seconds, bigger cache")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("workflows (all started at once)")
        ax.set_ylabel("seconds")
        twin = ax.twinx()
        twin.plot([r["workflows"] for r in rows], [r["workflows_per_s"] for r in rows], "s--", color="#d62728",
                  label="workflows/s")
        twin.set_ylabel("workflows/s")
        twin.set_ylim(bottom=0)
        ax.legend(loc="upper left", fontsize=7)
        ax.set_title(f"Scale: stepflow + SQLite, {rows[0]['load']['steps']} step(s) per workflow")
    _empty(ax, s)

    ax = axes[1][1]
    if s and s.get("by_workflows"):
        for r in s["by_workflows"]:
            points = [p for p in r["rss_mb"] if p[1] > 0]  # 0: the process had exited
            env = r["extra"].get("backend_env") or {}
            label = f"{r['workflows']:,} wf" + "".join(f", {k}={v}" for k, v in env.items())
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=label)
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("backend RSS (MiB)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
        ax.set_title("Backend RSS over the scale runs")
    _empty(ax, s)

    ax = axes[1][2]
    h = sc.get("history")
    if h and h.get("by_history"):
        rows = h["by_history"]
        ax.plot([r["events_per_workflow"] for r in rows], [r["ms_per_job"] for r in rows], "o-",
                color=colors["sqlite"])
        ax.set_xscale("log")
        ax.set_xlabel(f"events per workflow ({rows[0]['workflows']} workflows)")
        ax.set_ylabel("ms per job")
        ax.set_ylim(bottom=0)
        title = "History length"
        r = sc.get("replay")
        if r and r.get("ok"):
            title += f"   |   replay: {r['events']:,} events rebuilt at {r['rebuild_events_per_s']:,.0f}/s"
        ax.set_title(title)
    _empty(ax, h)

    fig.suptitle(f"stepflow benchmarks - {machine_line_short(results['machine'])}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def machine_line_short(m: dict[str, Any]) -> str:
    return (f"{m.get('cpus')} cores, {m.get('memory_gib', '?')} GiB, RabbitMQ {m.get('rabbitmq', '?')}, "
            f"PostgreSQL {m.get('postgresql', '?')}, Python {m.get('python')}")


def _empty(ax: Any, data: dict[str, Any] | None) -> None:
    if not data:
        ax.axis("off")
    elif not data.get("ok") and not (data.get("results") or data.get("by_workflows")):
        ax.text(0.5, 0.5, "FAILED", ha="center", va="center", color="red", fontsize=20, transform=ax.transAxes)
