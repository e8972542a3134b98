"""Build a cost report for a stack and render it as a table, Markdown, JSON or self-contained HTML."""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra.config import StackConfig
from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.cost.estimate import Estimate, price_eks, price_gke
from mlops.cost.managed import MANAGED, ServingCost, managed_engine, serving_costs
from mlops.cost.needs import Needs, needs_of
from mlops.cost.onprem import BreakEven, Tco, break_even, curves, load_tco, price_onprem
from mlops.cost.prices import Target, managed_price_file, price_file
from mlops.cost.usage import Usage, load_usage

DISCLAIMER = ("List prices (on-demand, USD) exclude discounts, taxes, committed-use discounts, Savings Plans and "
              "Reserved Instances; state yours under `discounts:` in a usage file to see their effect.")
OWN_TARGET = {"gke": "gke", "eks": "eks", "existing": "onprem", "minikube": "onprem"}
TARGETS: tuple[Target, ...] = ("gke", "eks", "onprem")


@dataclass
class Report:
    stack: str
    platform: str
    environment: str
    estimates: list[Estimate]
    assumptions: list[tuple[str, Any]]
    prices: dict[str, dict[str, Any]]  # per target: region, date taken, unverified entries
    break_even: list[BreakEven] = field(default_factory=list)
    curves: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)
    node_vcpu: float = 0.0
    utilisation: float = 0.6
    serving: list[ServingCost] = field(default_factory=list)  # the served models in-cluster vs managed
    serving_engine: str = "sagemaker"  # the managed engine they are compared with (mlops/cost/managed.py)


def load_config(stack: str, stacks_dir: Path | None = None) -> StackConfig:
    from mlops.plan import stack_config

    values, secret_keys = stack_config(stack, stacks_dir)
    raw, secret_top = raw_from_pulumi_config(values, secret_keys)
    return parse_stack_config(raw, secret_top, stack=stack)


def plan_requests(stack: str, stacks_dir: Path | None = None) -> dict[str, int]:
    """Summed requests of the offline plan (in-cluster platforms), jobs' peak included."""
    from mlops.plan import run_program, stack_config

    summary = run_program(stack, stack_config(stack, stacks_dir)).summary("")
    running, peak = summary["requests"], summary["job_requests_peak"]
    return {"cpu_m": running["cpu_m"] + peak["cpu_m"], "memory_mib": running["memory_mib"] + peak["memory_mib"]}


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [item for key, sub in value.items() for item in _flatten(f"{prefix}.{key}" if prefix else key, sub)]
    return [(prefix, value)]


def pricer(target: Target, usage: Usage, tco: Tco):
    return {"gke": lambda n: price_gke(n, usage), "eks": lambda n: price_eks(n, usage),
            "onprem": lambda n: price_onprem(n, usage, tco)}[target]


def build_report(stack: str, compare: list[Target] | None = None, usage_path: Path | None = None,
                 stacks_dir: Path | None = None, config: StackConfig | None = None,
                 requests: dict[str, int] | None = None) -> Report:
    usage = load_usage(usage_path)
    tco = load_tco(usage)
    config = config or load_config(stack, stacks_dir)
    own = OWN_TARGET[config.platform]
    if own == "onprem" and requests is None:
        requests = plan_requests(stack, stacks_dir)
    if config.gcp is not None and config.gcp.autopilot and requests is None:
        from mlops.cost.autopilot import plan_billed_requests

        requests = plan_billed_requests(stack, stacks_dir)
    needs = needs_of(stack, config, usage, requests, tco.sizing.target_utilisation)
    targets = [own, *[t for t in (compare or []) if t != own]]
    estimates = [pricer(t, usage, tco)(needs) for t in targets]
    if config.platform == "minikube":
        estimates[0].notes.append("platform minikube runs on a workstation: 'onprem' prices the same needs on "
                                  "servers of pricing/onprem.yaml, as a shared dev cluster would need")
    assumptions = _flatten("", usage.model_dump(by_alias=True, exclude={"onprem"}))
    assumptions += _needs_assumptions(needs)
    if "onprem" in targets:
        assumptions += [(f"onprem.{k}", v) for k, v in _flatten("", tco.model_dump(by_alias=True))
                        if k not in ("provider", "currency")]
    prices = {t: _price_info(t, tco) for t in targets}
    report = Report(stack, config.platform, config.environment, estimates, assumptions, prices,
                    node_vcpu=needs.vcpu, utilisation=tco.sizing.target_utilisation)
    if config.serving.models:
        engine = managed_engine(config)
        report.serving = serving_costs(config, usage.hours_per_month, tco.sizing.target_utilisation, engine)
        report.serving_engine = engine
        managed = managed_price_file(engine)
        report.prices[engine] = {"file": f"pricing/{managed.file}", "region": managed.region,
                                 "taken": managed.taken, "unverified": managed.unverified}
    clouds = {t: pricer(t, usage, tco) for t in targets if t != "onprem"}
    if "onprem" in targets and clouds:
        report.break_even = break_even(needs, usage, tco, clouds)
        report.curves = curves(needs, usage, tco, clouds)
    return report


def _needs_assumptions(needs: Needs) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("needs.source", f"stack {needs.stack} ({needs.platform}, {needs.environment})"),
                                   ("needs.zones", needs.zones), ("needs.ha", needs.ha)]
    for pool in needs.pools:
        rows.append((f"needs.pool.{pool.name}", f"{pool.nodes:g} node(s) × {pool.vcpu:g} vCPU / "
                                                f"{pool.memory_gib:g} GiB" + (" (spot)" if pool.spot else "")))
    db = needs.database
    rows.append(("needs.database", f"{db.vcpu:g} vCPU / {db.memory_gib:g} GiB, {db.storage_gib} GiB storage, "
                                   f"HA {db.ha}, backups {db.backups}"))
    rows += [("needs.objectGib", needs.object_gib), ("needs.monitoringGib", needs.monitoring_gib),
             ("needs.loadBalancers", needs.load_balancers), ("needs.registryGib", needs.registry_gib)]
    return rows


def _price_info(target: Target, tco: Tco) -> dict[str, Any]:
    if target == "onprem":
        sections = (tco.server, tco.power, tco.rack, tco.storage, tco.support, tco.staff)
        return {"file": "pricing/onprem.yaml", "region": "own data centre", "taken": tco.taken,
                "unverified": sum(not s.verified for s in sections)}
    p = price_file(target)
    return {"file": f"pricing/{p.file}", "region": p.region, "taken": p.taken, "unverified": p.unverified}


# ---- rendering ------------------------------------------------------------------------------

def _money(value: float) -> str:
    return f"{value:,.2f}"


def _summary_rows(report: Report) -> list[list[str]]:
    rows = [["target", "region", "priced from", "node vCPU", "node GiB", "USD / month"]]
    for e in report.estimates:
        rows.append([e.target, e.region, e.source, f"{e.vcpu:g}", f"{e.memory_gib:g}", _money(e.total)])
    return rows


def _line_rows(e: Estimate) -> list[list[str]]:
    rows = [["resource", "item", "quantity", "unit", "unit price", "USD / month"]]
    rows += [[line.resource, line.item, f"{line.quantity:,.2f}", line.unit, f"{line.unit_price:.6g}",
              _money(line.monthly)] for line in e.lines]
    rows.append(["total", "", "", "", "", _money(e.total)])
    return rows


def _break_even_rows(report: Report) -> list[list[str]]:
    rows = [["on-prem utilisation", "vs", "break-even node capacity", "on-prem servers", "cloud USD / month",
             "on-prem USD / month"]]
    for b in report.break_even:
        if b.scale is None:
            rows.append([f"{b.utilisation:.0%}", b.target, "not below 140× this stack", "", "", ""])
        else:
            rows.append([f"{b.utilisation:.0%}", b.target, f"{b.vcpu:,.0f} vCPU ({b.scale:g}× this stack)",
                         str(b.servers), _money(b.cloud_monthly), _money(b.onprem_monthly)])
    return rows


def serving_title(report: Report) -> str:
    m = MANAGED[report.serving_engine]
    return f"serving: in-cluster ({m.platform} workload nodes) vs {m.service} endpoints, the same models"


def _serving_rows(report: Report) -> list[list[str]]:
    service = MANAGED[report.serving_engine].service
    rows = [["model", "variants", "pod requests", "in-cluster USD / month", service, f"{service} USD / month"]]
    for s in report.serving:
        rows.append([s.model, ", ".join(f"{v} {n}" for v, n in s.variants.items()),
                     f"{s.pod_vcpu:g} vCPU / {s.pod_memory_gib:g} GiB", _money(s.in_cluster_monthly),
                     f"{s.instances} × {s.instance_type}", _money(s.managed_monthly)])
    return rows


def _price_lines(report: Report) -> list[str]:
    return [f"{t}: {info['file']} ({info['region']}), prices taken {info['taken']}; {info['unverified']} of its "
            "prices not verified against the source page (marked `verified: false`)"
            for t, info in report.prices.items()]


def _text_table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = [all(_is_number(row[i]) for row in rows[1:] if row[i]) for i in range(len(widths))]
    out = []
    for index, row in enumerate(rows):
        cells = [cell.rjust(w) if numeric[i] and index else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        out.append("  ".join(cells).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
        return True
    except ValueError:
        return False


def render_text(report: Report) -> str:
    lines = [f"mlops cost: stack {report.stack} ({report.platform}, {report.environment})", DISCLAIMER,
             *_price_lines(report), "", *_text_table(_summary_rows(report))]
    for e in report.estimates:
        lines += ["", f"== {e.target} ({e.region}, {e.source})", *_text_table(_line_rows(e)), *e.notes]
    if report.break_even:
        lines += ["", "== break-even (node capacity scaled; database and storage as configured)",
                  *_text_table(_break_even_rows(report))]
    if report.serving:
        lines += ["", f"== {serving_title(report)}", *_text_table(_serving_rows(report))]
    lines += ["", "== assumptions", *[f"{k} = {json.dumps(v)}" for k, v in report.assumptions]]
    return "\n".join(lines) + "\n"


def _md_table(rows: list[list[str]]) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    numeric = [all(_is_number(row[i]) for row in rows[1:] if row[i]) for i in range(len(rows[0]))]
    return ["| " + " | ".join(cell(c) for c in rows[0]) + " |",
            "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
            *["| " + " | ".join(cell(c) for c in row) + " |" for row in rows[1:]]]


def render_markdown(report: Report) -> str:
    lines = [f"## Cost of stack `{report.stack}` ({report.platform}, {report.environment})", "",
             f"> {DISCLAIMER}", "", *[f"- {p}" for p in _price_lines(report)], "", *_md_table(_summary_rows(report))]
    for e in report.estimates:
        lines += ["", f"### {e.target} ({e.region}, {e.source})", "", *_md_table(_line_rows(e)),
                  *[f"\n_{note}_" for note in e.notes]]
    if report.break_even:
        lines += ["", "### Break-even", "", "Node capacity scaled; database and storage as configured.", "",
                  *_md_table(_break_even_rows(report))]
    if report.serving:
        title = serving_title(report)
        lines += ["", f"### {title[0].upper()}{title[1:]}", "", *_md_table(_serving_rows(report))]
    lines += ["", "<details><summary>Assumptions</summary>", "", *_md_table(
        [["key", "value"], *[[k, json.dumps(v)] for k, v in report.assumptions]]), "", "</details>"]
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> dict[str, Any]:
    return {
        "stack": report.stack, "platform": report.platform, "environment": report.environment,
        "disclaimer": DISCLAIMER, "prices": report.prices,
        "estimates": [{"target": e.target, "region": e.region, "source": e.source, "notes": e.notes,
                       "vcpu": e.vcpu, "memoryGib": e.memory_gib, "total": round(e.total, 2),
                       "lines": [{**asdict(line), "key": line.key, "monthly": round(line.monthly, 4)}
                                 for line in e.lines]} for e in report.estimates],
        "breakEven": [asdict(b) for b in report.break_even],
        "serving": [{**asdict(s), "instances": s.instances, "inClusterMonthly": round(s.in_cluster_monthly, 2),
                     "managedMonthly": round(s.managed_monthly, 2)} for s in report.serving],
        "assumptions": dict(report.assumptions),
    }


def render_json(report: Report) -> str:
    return json.dumps(to_json(report), indent=2) + "\n"


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: Report) -> str:
    """One file, no external resources: charts are PNGs embedded as data URIs."""
    from mlops.cost.charts import break_even_chart, stacked_bars

    images = [("Monthly cost by target", stacked_bars(report.estimates))]
    if report.curves:
        images.append(("Break-even", break_even_chart(report.curves, report.node_vcpu, report.utilisation)))
    parts = [f"<h1>Cost of stack <code>{html.escape(report.stack)}</code> ({html.escape(report.platform)}, "
             f"{html.escape(report.environment)})</h1>", f"<p class='note'>{html.escape(DISCLAIMER)}</p>",
             "<ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in _price_lines(report)) + "</ul>",
             _html_table(_summary_rows(report))]
    parts += [f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>"
              f"<figcaption>{html.escape(title)}</figcaption></figure>" for title, png in images]
    for e in report.estimates:
        parts += [f"<h2>{html.escape(e.target)} ({html.escape(e.region)}, {html.escape(e.source)})</h2>",
                  _html_table(_line_rows(e)), *[f"<p>{html.escape(note)}</p>" for note in e.notes]]
    if report.break_even:
        parts += ["<h2>Break-even</h2><p>Node capacity scaled; database and storage as configured.</p>",
                  _html_table(_break_even_rows(report))]
    if report.serving:
        parts += [f"<h2>{html.escape(serving_title(report))}</h2>", _html_table(_serving_rows(report))]
    parts += ["<h2>Assumptions</h2>", _html_table([["key", "value"], *[[k, json.dumps(v)] for k, v in
                                                                        report.assumptions]])]
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}.note{background:#fff4d6;"
             "padding:.6em}img{max-width:100%}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>mlops cost: "
            f"{html.escape(report.stack)}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


RENDERERS = {"table": render_text, "markdown": render_markdown, "json": render_json, "html": render_html}
