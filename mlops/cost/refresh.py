"""`mlops cost --refresh`: update price files from the providers' price APIs.

AWS: the Price List API (boto3 `pricing`, served from us-east-1) for the EC2 instance types and
RDS for PostgreSQL classes listed in the file. Google Cloud: the Cloud Billing Catalog API
(Compute Engine SKUs) for the E2/N2 vCPU and memory rates. Needs credentials and network (AWS
credentials; `GOOGLE_API_KEY` for the catalog). Updated entries get the API as source, today's
date and `verified: true`; the files' comments and other entries are kept as they are.
"""

from __future__ import annotations

import json
import os
import re
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from mlops.cost.prices import FILES, PRICING

AWS_API = "https://pricing.us-east-1.amazonaws.com (AWS Price List API)"
GCP_API = "https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus (Cloud Billing Catalog API)"
COMPUTE_ENGINE = "6F81-5844-456A"


class RefreshError(RuntimeError):
    """A price the API did not return unambiguously."""


# ---- AWS -------------------------------------------------------------------------------------

def on_demand_hourly(price_list: list[str]) -> float:
    """The one on-demand hourly USD price in a GetProducts `PriceList` (JSON strings)."""
    prices = set()
    for item in price_list:
        for term in json.loads(item).get("terms", {}).get("OnDemand", {}).values():
            for dimension in term["priceDimensions"].values():
                if dimension["unit"] == "Hrs":
                    prices.add(float(dimension["pricePerUnit"]["USD"]))
    if len(prices) != 1:
        raise RefreshError(f"expected one on-demand hourly price, got {sorted(prices) or 'none'}")
    return prices.pop()


def _filters(**terms: str) -> list[dict[str, str]]:
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in terms.items()]


def aws_prices(client: Any, region: str, instances: list[str], databases: list[str]) -> dict[str, dict[str, float]]:
    """{'instances': {type: USD/h}, 'databases': {class: USD/h}} from a boto3 `pricing` client."""
    found: dict[str, dict[str, float]] = {"instances": {}, "databases": {}}
    for name in instances:
        response = client.get_products(ServiceCode="AmazonEC2", Filters=_filters(
            instanceType=name, regionCode=region, operatingSystem="Linux", tenancy="Shared", preInstalledSw="NA",
            capacitystatus="Used", licenseModel="No License required"))
        found["instances"][name] = _one(name, response["PriceList"])
    for name in databases:
        response = client.get_products(ServiceCode="AmazonRDS", Filters=_filters(
            instanceType=name, regionCode=region, databaseEngine="PostgreSQL", deploymentOption="Single-AZ"))
        found["databases"][name] = _one(name, response["PriceList"])
    return found


def _one(name: str, price_list: list[str]) -> float:
    try:
        return on_demand_hourly(price_list)
    except RefreshError as error:
        raise RefreshError(f"{name}: {error}") from None


def rewrite_sized(text: str, section: str, prices: dict[str, float], source: str, taken: str) -> str:
    """Set price, source, date and verified on the one-line entries of `section` (instances/databases)."""
    lines = text.splitlines(keepends=True)
    inside = False
    for index, line in enumerate(lines):
        if re.match(r"^\S", line):
            inside = line.startswith(f"{section}:")
            continue
        m = re.match(r"^  ([\w.-]+): \{(.*)\}\s*$", line)
        if inside and m and m[1] in prices:
            entry = yaml.safe_load("{" + m[2] + "}")
            lines[index] = (f"  {m[1]}: {{vcpu: {entry['vcpu']}, memoryGib: {entry['memoryGib']}, "
                            f"price: {prices[m[1]]:.6g}, unit: {entry['unit']}, source: \"{source}\", "
                            f"taken: \"{taken}\", verified: true}}\n")
    return "".join(lines)


# ---- Google Cloud ----------------------------------------------------------------------------

GCP_RATES = {  # pricing key: (description prefix, resource group)
    "compute.e2.vcpu": ("E2 Instance Core", "CPU"),
    "compute.e2.memory": ("E2 Instance Ram", "RAM"),
    "compute.n2.vcpu": ("N2 Instance Core", "CPU"),
    "compute.n2.memory": ("N2 Instance Ram", "RAM"),
}


def unit_price(sku: dict[str, Any]) -> float:
    """USD of the last (on-demand) tier of a catalog SKU: units + nanos."""
    rate = sku["pricingInfo"][0]["pricingExpression"]["tieredRates"][-1]["unitPrice"]
    return int(rate.get("units", 0)) + rate.get("nanos", 0) / 1e9


def gcp_prices(skus: list[dict[str, Any]], region: str) -> dict[str, float]:
    """Pricing keys → USD per vCPU-hour / GiB-hour from Compute Engine SKUs of `region`."""
    found: dict[str, float] = {}
    for key, (prefix, group) in GCP_RATES.items():
        matches = [s for s in skus if region in s.get("serviceRegions", []) and s["description"].startswith(prefix)
                   and s["category"].get("usageType") == "OnDemand" and s["category"].get("resourceGroup") == group
                   and "Custom" not in s["description"] and "Sole Tenancy" not in s["description"]]
        prices = {round(unit_price(s), 9) for s in matches}
        if len(prices) != 1:
            raise RefreshError(f"{key}: expected one on-demand {prefix!r} SKU in {region}, "
                               f"got {sorted(prices) or 'none'}")
        found[key] = prices.pop()
    return found


def fetch_gcp_skus(api_key: str) -> list[dict[str, Any]]:
    import requests

    skus, token = [], ""
    while True:
        response = requests.get(f"https://cloudbilling.googleapis.com/v1/services/{COMPUTE_ENGINE}/skus",
                                params={"key": api_key, "pageToken": token, "currencyCode": "USD"}, timeout=60)
        response.raise_for_status()
        page = response.json()
        skus += page.get("skus", [])
        token = page.get("nextPageToken", "")
        if not token:
            return skus


def rewrite_prices(text: str, prices: dict[str, float], source: str, taken: str) -> str:
    """Replace the multi-line entries of `prices:` keys with the fetched values."""
    for key, value in prices.items():
        pattern = re.compile(rf"^  {re.escape(key)}:\n(    .*\n)+", re.MULTILINE)
        match = pattern.search(text)
        if match is None:
            raise RefreshError(f"no entry {key} under prices: to update")
        unit = re.search(r"^    unit: (.*)$", match[0], re.MULTILINE)[1]
        kept = "".join(re.findall(r"^    (?:free|note): .*\n", match[0], re.MULTILINE))
        block = (f"  {key}:\n    price: {value:.6g}\n    unit: {unit}\n{kept}    source: \"{source}\"\n"
                 f"    taken: \"{taken}\"\n    verified: true\n")
        text = text[:match.start()] + block + text[match.end():]
    return text


# ---- entry point -----------------------------------------------------------------------------

def refresh(target: str, folder: Path = PRICING) -> str:
    """Update the target's price file in place; a one-line summary."""
    path = folder / FILES[target]
    text = path.read_text()
    document = yaml.safe_load(text)
    today = date.today().isoformat()
    if target == "eks":
        import boto3

        client = boto3.client("pricing", region_name="us-east-1")
        found = aws_prices(client, document["region"], list(document["instances"]), list(document["databases"]))
        for section, prices in found.items():
            text = rewrite_sized(text, section, prices, AWS_API, today)
        count = sum(len(p) for p in found.values())
    else:
        api_key = os.environ.get("GOOGLE_API_KEY")
        if not api_key:
            raise RefreshError("GOOGLE_API_KEY is not set: the Cloud Billing Catalog API needs an API key")
        found_gcp = gcp_prices(fetch_gcp_skus(api_key), document["region"])
        text = rewrite_prices(text, found_gcp, GCP_API, today)
        count = len(found_gcp)
    path.write_text(text)
    return f"{path.relative_to(folder.parent)}: {count} price(s) updated from the provider's API on {today}"
