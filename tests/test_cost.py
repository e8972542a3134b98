"""`mlops cost`: prices from the pricing files, sums, config changes, compare mode, usage errors."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from infra.settings import parse_stack_config, raw_from_pulumi_config
from mlops.cost.estimate import Estimate, map_pool, price_eks, price_gke
from mlops.cost.needs import Pool, cloud_sql_shape, gce_shape, needs_of
from mlops.cost.onprem import load_tco, price_onprem, servers_for
from mlops.cost.report import RENDERERS, build_report, load_config, plan_requests
from mlops.cost.usage import UsageError, load_usage
from mlops.paths import ROOT
from mlops.plan import stack_config

PRICING = ROOT / "pricing"
HOURS = 730


def raw_prices(name: str) -> dict:
    """The pricing file as plain YAML, read independently of the code under test."""
    return yaml.safe_load((PRICING / name).read_text())


GCP = raw_prices("gcp-europe-west1.yaml")
AWS = raw_prices("aws-eu-west-1.yaml")


def price(doc: dict, key: str) -> float:
    return doc["prices"][key]["price"]


def config_with(stack: str, **sections):
    """The stack's config with whole top-level sections deep-merged over the stack file's."""
    values, secret_keys = stack_config(stack)
    raw, secret_top = raw_from_pulumi_config(values, secret_keys)
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return parse_stack_config(raw, secret_top, stack=stack)


def line(estimate: Estimate, resource: str, unit: str | None = None):
    matches = [x for x in estimate.lines if x.resource == resource and (unit is None or x.unit == unit)]
    assert len(matches) == 1, [x.key for x in estimate.lines]
    return matches[0]


@pytest.fixture(scope="module")
def usage():
    return load_usage()


@pytest.fixture(scope="module")
def onprem_requests():
    return plan_requests("onprem")


# ---- well-known resources, priced by hand from the pricing files ------------------------------

def test_eks_prod_prices_match_hand_computed_values(usage):
    est = price_eks(needs_of("eks", load_config("eks"), usage), usage)
    m6i_xlarge = AWS["instances"]["m6i.xlarge"]["price"]
    assert line(est, "EKS cluster").monthly == pytest.approx(0.10 * HOURS)
    assert line(est, "node pool system instances").monthly == pytest.approx(2 * m6i_xlarge * HOURS)  # minNodes 2
    assert line(est, "node pool workload boot disks").monthly == pytest.approx(2 * 100 * price(AWS, "ebs.gp3"))
    rds = AWS["databases"]["db.m6g.large"]["price"]
    assert line(est, "RDS instance").monthly == pytest.approx(2 * rds * HOURS)  # Multi-AZ: primary + standby
    assert line(est, "RDS storage").monthly == pytest.approx(2 * 50 * price(AWS, "rds.storage.gp3"))
    assert line(est, "NAT gateways", "gateway-hour").monthly == pytest.approx(3 * price(AWS, "nat.gateway") * HOURS)
    assert line(est, "CloudWatch Logs", "GiB-month").monthly == pytest.approx(30 * 90 / 30 * price(AWS, "logs.storage"))


def test_gke_prod_prices_match_hand_computed_values(usage):
    est = price_gke(needs_of("gke", load_config("gke"), usage), usage)
    e2_standard_4 = 4 * price(GCP, "compute.e2.vcpu") + 16 * price(GCP, "compute.e2.memory")
    n2_standard_4 = 4 * price(GCP, "compute.n2.vcpu") + 16 * price(GCP, "compute.n2.memory")
    # regional cluster in europe-west1: minNodes 1 per zone × 3 zones
    assert line(est, "node pool system instances").monthly == pytest.approx(3 * e2_standard_4 * HOURS)
    assert line(est, "node pool workload instances").monthly == pytest.approx(3 * n2_standard_4 * HOURS)
    custom_2_7680 = 2 * price(GCP, "sql.enterprise.vcpu") + 7.5 * price(GCP, "sql.enterprise.memory")
    assert line(est, "Cloud SQL instance").monthly == pytest.approx(2 * custom_2_7680 * HOURS)  # HA
    assert line(est, "GKE cluster").monthly == pytest.approx(73.0)
    assert line(est, "Cloud Logging").monthly == 0  # 30 GiB is inside the 50 GiB free allotment


def test_lines_sum_to_totals_in_every_target_and_format(onprem_requests):
    for stack in ("gke", "eks", "onprem"):
        report = build_report(stack, ["gke", "eks", "onprem"], requests=onprem_requests if stack == "onprem" else None)
        data = json.loads(RENDERERS["json"](report))
        for est, doc in zip(report.estimates, data["estimates"]):
            assert math.isclose(sum(x.monthly for x in est.lines), est.total)
            assert sum(x["monthly"] for x in doc["lines"]) == pytest.approx(doc["total"], abs=0.01)
            assert est.total > 0


# ---- a config change moves exactly the lines it should ---------------------------------------

def changed_lines(before: Estimate, after: Estimate) -> dict[str, float]:
    old = {x.key: x.monthly for x in before.lines}
    new = {x.key: x.monthly for x in after.lines}
    assert old.keys() == new.keys()
    return {k: new[k] - old[k] for k in old if not math.isclose(old[k], new[k])}


def test_workload_nodes_3_to_5_on_eks_changes_only_that_pool(usage):
    def estimate(nodes: int) -> Estimate:
        pools = {"system": {"machineType": "m6i.xlarge", "minNodes": 2, "maxNodes": 4, "diskGi": 100},
                 "workload": {"machineType": "m6i.xlarge", "minNodes": nodes, "maxNodes": 10, "diskGi": 100}}
        return price_eks(needs_of("eks", config_with("eks", aws={"nodePools": pools}), usage), usage)

    changes = changed_lines(estimate(3), estimate(5))
    assert changes == pytest.approx({
        "node pool workload instances (node-hour)": 2 * AWS["instances"]["m6i.xlarge"]["price"] * HOURS,
        "node pool workload boot disks (GiB-month)": 2 * 100 * price(AWS, "ebs.gp3"),
    })


def test_more_gke_nodes_also_move_cloud_nat_which_bills_per_vm(usage):
    def estimate(nodes: int) -> Estimate:
        pools = {"system": {"machineType": "e2-standard-4", "minNodes": 1, "maxNodes": 2, "diskGi": 100},
                 "workload": {"machineType": "n2-standard-4", "minNodes": nodes, "maxNodes": 5, "diskGi": 100}}
        return price_gke(needs_of("gke", config_with("gke", gcp={"nodePools": pools}), usage), usage)

    changes = changed_lines(estimate(1), estimate(2))  # per zone: 3 → 6 nodes
    assert set(changes) == {"node pool workload instances (node-hour)", "node pool workload boot disks (GiB-month)",
                            "Cloud NAT (VM-hour)"}
    assert changes["Cloud NAT (VM-hour)"] == pytest.approx(3 * price(GCP, "nat.vm") * HOURS)


# ---- compare mode conserves capacity ---------------------------------------------------------

@pytest.mark.parametrize("stack", ["gke", "eks", "onprem", "dev"])
def test_compare_mode_never_gives_less_capacity_than_the_stack_needs(stack, usage, onprem_requests):
    requests = plan_requests(stack) if stack == "dev" else onprem_requests
    config = load_config(stack)
    tco = load_tco(usage)
    needs = needs_of(stack, config, usage, requests, tco.sizing.target_utilisation)
    for est in (price_gke(needs, usage), price_eks(needs, usage)):
        assert est.vcpu >= needs.vcpu - 1e-9 and est.memory_gib >= needs.memory_gib - 1e-9, est.target
        database = line(est, "Cloud SQL instance" if est.target == "gke" else "RDS instance")
        tier = database.item.split(" × ")[1].split()[0]
        vcpu, memory = (cloud_sql_shape(tier) if est.target == "gke" else
                        (AWS["databases"][tier]["vcpu"], AWS["databases"][tier]["memoryGib"]))
        assert vcpu >= needs.database.vcpu and memory >= needs.database.memory_gib
    onprem = price_onprem(needs, usage, tco)
    copies = 2 if needs.database.ha else 1
    usable = onprem.vcpu * tco.sizing.target_utilisation
    assert usable >= needs.vcpu + copies * needs.database.vcpu
    assert servers_for(needs, tco) == line(onprem, "servers").quantity


@pytest.mark.parametrize(("vcpu", "memory", "zones", "expected"), [
    (4.4, 10, 3, 3),  # n2-standard-4: 2 nodes would do, but one per zone
    (13, 20, 3, 6),  # 4 nodes for CPU, rounded up to 2 per zone
    (4, 40, 1, 3),  # memory decides: 40 GiB on 16 GiB nodes
])
def test_mapped_pools_round_up_to_whole_nodes_per_zone_and_no_further(vcpu, memory, zones, expected):
    pool = map_pool(Pool("workload", 1, vcpu, memory), "gke", "prod", zones, lambda m: gce_shape(m)[1:])
    assert (pool.machine, pool.nodes) == ("n2-standard-4", expected)
    assert pool.total_vcpu >= vcpu and pool.total_memory_gib >= memory


def test_mapping_onto_the_stacks_own_target_reproduces_its_estimate(usage):
    needs = needs_of("eks", load_config("eks"), usage)
    assert price_eks(needs, usage).total == pytest.approx(build_report("eks").estimates[0].total)


# ---- usage file ------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "expected"), [
    ("network: {egressGib: 10}", "network.egressGib: unknown key (value 10); allowed keys here: internetEgressGib, "
                                 "natProcessedGib, loadBalancerGib"),
    ("spotShare: 1.5", "spotShare: got 1.5; allowed: Input should be less than or equal to 1"),
    ("logs: {ingestedGib: lots}", 'logs.ingestedGib: got "lots"; allowed: Input should be a valid number'),
    ("discounts: {compute: -0.2}", "discounts.compute: got -0.2; allowed: Input should be greater than or equal to 0"),
    ("- just a list", "(file): got"),
])
def test_a_bad_usage_file_names_the_key_the_value_and_what_is_allowed(tmp_path, content, expected):
    path = tmp_path / "usage.yaml"
    path.write_text(content)
    with pytest.raises(UsageError) as error:
        load_usage(path)
    assert expected in str(error.value) and str(path) in str(error.value)


def test_bad_onprem_overrides_are_reported_under_their_usage_key(tmp_path):
    path = tmp_path / "usage.yaml"
    path.write_text("onprem: {power: {pue: 0.5}, staff: {people: 2}}")
    with pytest.raises(UsageError) as error:
        load_tco(load_usage(path))
    text = str(error.value)
    assert "onprem.power.pue: got 0.5; allowed: Input should be greater than or equal to 1" in text
    assert "onprem.staff.people: unknown key" in text and "fteFraction" in text


def test_the_cli_exits_2_with_the_usage_problem(tmp_path):
    path = tmp_path / "usage.yaml"
    path.write_text("registry: {storedGib: -1}")
    result = subprocess.run([sys.executable, "-m", "mlops", "cost", "--stack", "eks", "--usage", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "registry.storedGib: got -1" in result.stderr


def test_usage_values_and_discounts_show_up_as_their_own_lines(tmp_path):
    path = tmp_path / "usage.yaml"
    path.write_text("discounts: {compute: 0.3}\nnodePools: {workload: {nodes: 4}}\nnetwork: {internetEgressGib: 1100}")
    report = build_report("eks", usage_path=path)
    est = report.estimates[0]
    instances = sum(x.monthly for x in est.lines if x.unit == "node-hour")
    assert line(est, "compute discount").monthly == pytest.approx(-0.3 * instances)
    assert line(est, "node pool workload instances").quantity == 4 * HOURS
    assert line(est, "internet egress").quantity == 1000  # 100 GB a month are free
    assumptions = dict(report.assumptions)
    assert assumptions["discounts.compute"] == 0.3 and assumptions["nodePools.workload.nodes"] == 4


# ---- report formats --------------------------------------------------------------------------

def test_every_format_states_that_list_prices_exclude_discounts_and_the_date_taken():
    report = build_report("gke", ["eks"])
    for name, render in RENDERERS.items():
        text = render(report)
        assert "exclude discounts, taxes, committed-use discounts, Savings Plans" in text, name
        assert "2026-11-23" in text, name


def test_html_is_one_file_with_the_charts_embedded(onprem_requests):
    text = RENDERERS["html"](build_report("onprem", ["gke", "eks"], requests=onprem_requests))
    images = text.split("data:image/png;base64,")[1:]
    assert len(images) == 2  # stacked bars per target + break-even
    for image in images:
        assert base64.b64decode(image.split("'")[0])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<link" not in text and "<script" not in text and "src='http" not in text


def test_break_even_is_the_first_scale_where_onprem_is_no_dearer(onprem_requests):
    report = build_report("onprem", ["gke", "eks"], requests=onprem_requests)
    at_default = [b for b in report.break_even if b.utilisation == report.utilisation]
    assert {b.target for b in at_default} == {"gke", "eks"}
    for b in at_default:
        if b.scale is None:
            continue
        series = dict((s, t) for s, t, _ in report.curves[b.target])
        onprem = dict((s, t) for s, t, _ in report.curves["onprem"])
        assert onprem[b.scale] <= series[b.scale]
        assert all(onprem[s] > series[s] for s in series if s < b.scale)


# ---- pricing files ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["gcp-europe-west1.yaml", "aws-eu-west-1.yaml"])
def test_every_price_has_a_source_page_a_date_and_a_reason_when_unverified(name):
    doc = raw_prices(name)
    entries = {**doc["prices"], **doc.get("instances", {}), **doc.get("databases", {})}
    for key, entry in entries.items():
        assert entry["source"].startswith("https://"), key
        assert len(entry["taken"]) == 10 and entry["taken"][4] == "-", key
        assert entry["verified"] or entry.get("reason"), f"{key}: unverified without a reason"


def test_the_stacks_regions_are_the_priced_regions():
    assert load_config("gke").gcp.region == GCP["region"]
    assert load_config("eks").aws.region == AWS["region"]


# ---- cost diff on a real git history ---------------------------------------------------------

def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=test", "-c", "user.email=test@example.invalid", "commit", "-q", "-m", message)


@pytest.fixture
def project_repo(tmp_path) -> Path:
    """A fresh repository holding this checkout's program, cost model, prices and stacks."""
    repo = tmp_path / "repo"
    listed = git(ROOT, "ls-files", "--cached", "--others", "--exclude-standard", "--",
                 "infra", "mlops", "pricing", "stacks", "Pulumi.yaml")
    for name in listed.splitlines():
        if (ROOT / name).is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_bytes((ROOT / name).read_bytes())
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    commit(repo, "base")
    return repo


def test_cost_diff_against_head_lists_the_lines_a_stack_change_moves(project_repo, tmp_path):
    repo = project_repo
    stack_file = repo / "stacks" / "Pulumi.eks.yaml"
    document = yaml.safe_load(stack_file.read_text())
    document["config"]["mlops-stack:aws"]["database"] = {"instanceClass": "db.m6g.xlarge"}
    stack_file.write_text(yaml.safe_dump(document))
    out = tmp_path / "cost.md"
    result = subprocess.run([sys.executable, "-m", "mlops", "cost", "--base", "HEAD", "--stack", "eks",
                             "--format", "markdown", "--out", str(out)],
                            cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    delta = 2 * (AWS["databases"]["db.m6g.xlarge"]["price"] - AWS["databases"]["db.m6g.large"]["price"]) * HOURS
    assert text.startswith("<!-- mlops-cost -->")
    large, xlarge = (2 * AWS["databases"][c]["price"] * HOURS for c in ("db.m6g.large", "db.m6g.xlarge"))
    assert f"| RDS instance (instance-hour) | {large:,.2f} | {xlarge:,.2f} | {delta:+,.2f} |" in text
    assert text.count("(instance-hour)") == 1 and "node pool" not in text  # nothing else moved
    assert "exclude discounts, taxes" in text
    assert git(repo, "worktree", "list").count("\n") == 1


def test_pull_requests_get_the_cost_diff_in_the_infra_diff_comment():
    workflows = ROOT / ".github" / "workflows"
    preview = yaml.safe_load((workflows / "infra-preview.yml").read_text())
    steps = preview["jobs"]["offline-diff"]["steps"]
    run = "\n".join(s.get("run", "") for s in steps)
    assert "mlops cost --base HEAD^1 --format markdown --out cost-diff.md" in run
    assert "cp cost-diff.md infra-diff/cost.md" in run
    assert "pricing/**" in preview[True]["pull_request"]["paths"]  # PyYAML reads the key `on` as True
    comment = (workflows / "infra-preview-comment.yml").read_text()
    assert "infra-diff/cost.md" in comment


def test_the_cost_diff_needs_no_stack_and_rejects_an_unknown_ref():
    result = subprocess.run([sys.executable, "-m", "mlops", "cost", "--base", "no-such-ref"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown git ref 'no-such-ref'" in result.stderr


def test_a_base_without_the_cost_model_is_reported_not_priced_as_zero(project_repo):
    cost = project_repo / "mlops" / "cost"
    moved = project_repo.parent / "cost"
    cost.rename(moved)
    commit(project_repo, "before mlops cost")
    moved.rename(cost)
    commit(project_repo, "mlops cost")
    result = subprocess.run([sys.executable, "-m", "mlops", "cost", "--base", "HEAD~1", "--stack", "gke"],
                            cwd=project_repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    head = build_report("gke").estimates[0].total
    assert f"gke: — → {head:,.2f} USD/month (—)" in result.stdout  # nothing invented for the base
    assert "no `mlops cost` at this commit" in result.stdout and "~ " not in result.stdout


def test_cloud_nat_bills_per_vm_up_to_32_then_a_flat_rate(usage):
    needs = needs_of("gke", load_config("gke"), usage)
    flat = price(GCP, "nat.gateway-max") * HOURS
    for nodes, expected in ((10, 10 * price(GCP, "nat.vm") * HOURS), (40, flat)):
        scaled = replace(needs, pools=tuple(replace(p, nodes=nodes / 2) for p in needs.pools))
        est = price_gke(scaled, usage)
        assert line(est, "Cloud NAT", "VM-hour").monthly == pytest.approx(expected)
        assert line(est, "Cloud NAT", "address-hour").monthly == pytest.approx(price(GCP, "nat.ip") * HOURS)
