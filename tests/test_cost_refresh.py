"""`mlops cost --refresh`: parsing the price APIs' answers and rewriting the price files.

No network: the API answers below are built in the shapes the AWS Price List API (GetProducts:
`PriceList` of JSON strings with `terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD`) and the
Cloud Billing Catalog API (`skus[].pricingInfo[].pricingExpression.tieredRates[].unitPrice`)
document; their numbers are made up for the test, not recorded from the providers.
"""

from __future__ import annotations

import json
import shutil

import boto3
import pytest
from botocore.stub import Stubber

from mlops.cost.prices import PRICING, read_price_file
from mlops.cost.refresh import (
    AWS_API, RefreshError, aws_prices, gcp_prices, on_demand_hourly, refresh, rewrite_prices, rewrite_sized,
)


def ec2_product(instance_type: str, usd: str, unit: str = "Hrs") -> str:
    return json.dumps({
        "product": {"productFamily": "Compute Instance", "sku": "ABC123",
                    "attributes": {"instanceType": instance_type, "regionCode": "eu-west-1",
                                   "operatingSystem": "Linux"}},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {"ABC123.JRTCKXETXF": {
            "sku": "ABC123", "offerTermCode": "JRTCKXETXF",
            "priceDimensions": {"ABC123.JRTCKXETXF.6YS6EN2CT7": {
                "unit": unit, "pricePerUnit": {"USD": usd}, "description": f"${usd} per On Demand Linux hour"}}}}},
    })


def test_the_on_demand_hourly_price_is_read_and_ambiguity_refused():
    assert on_demand_hourly([ec2_product("m6i.xlarge", "0.2220000000")]) == 0.222
    with pytest.raises(RefreshError, match="expected one on-demand hourly price"):
        on_demand_hourly([ec2_product("m6i.xlarge", "0.2220000000"), ec2_product("m6i.xlarge", "0.3")])
    with pytest.raises(RefreshError, match="none"):
        on_demand_hourly([ec2_product("m6i.xlarge", "0.01", unit="Quantity")])


def test_aws_prices_asks_for_linux_shared_on_demand_and_postgres_single_az():
    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stubber = Stubber(client)
    stubber.add_response("get_products", {"PriceList": [ec2_product("m6i.xlarge", "0.222")]}, {
        "ServiceCode": "AmazonEC2", "Filters": [
            {"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in (
                ("instanceType", "m6i.xlarge"), ("regionCode", "eu-west-1"), ("operatingSystem", "Linux"),
                ("tenancy", "Shared"), ("preInstalledSw", "NA"), ("capacitystatus", "Used"),
                ("licenseModel", "No License required"))]})
    stubber.add_response("get_products", {"PriceList": [ec2_product("db.m6g.large", "0.17")]}, {
        "ServiceCode": "AmazonRDS", "Filters": [
            {"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in (
                ("instanceType", "db.m6g.large"), ("regionCode", "eu-west-1"), ("databaseEngine", "PostgreSQL"),
                ("deploymentOption", "Single-AZ"))]})
    with stubber:
        found = aws_prices(client, "eu-west-1", ["m6i.xlarge"], ["db.m6g.large"])
    assert found == {"instances": {"m6i.xlarge": 0.222}, "databases": {"db.m6g.large": 0.17}}


def test_rewriting_the_aws_file_updates_only_the_fetched_entries(tmp_path):
    original = (PRICING / "aws-eu-west-1.yaml").read_text()
    text = rewrite_sized(original, "instances", {"m6i.xlarge": 0.222}, AWS_API, "2027-01-02")
    text = rewrite_sized(text, "databases", {"db.m6g.large": 0.17}, AWS_API, "2027-01-02")
    path = tmp_path / "aws.yaml"
    path.write_text(text)
    before, after = read_price_file(PRICING / "aws-eu-west-1.yaml"), read_price_file(path)
    assert after.instances["m6i.xlarge"].price == 0.222 and after.instances["m6i.xlarge"].verified
    assert after.instances["m6i.xlarge"].taken == "2027-01-02" and after.instances["m6i.xlarge"].vcpu == 4
    assert after.databases["db.m6g.large"].price == 0.17
    assert after.instances["m6i.large"] == before.instances["m6i.large"]
    assert after.prices == before.prices
    assert text.splitlines()[:8] == original.splitlines()[:8]  # the header comments stay


def sku(description: str, group: str, usd: float, region: str = "europe-west1", usage: str = "OnDemand") -> dict:
    units, nanos = divmod(round(usd * 1e9), 10**9)
    return {"description": description, "serviceRegions": [region],
            "category": {"resourceFamily": "Compute", "resourceGroup": group, "usageType": usage},
            "pricingInfo": [{"pricingExpression": {"usageUnit": "h", "tieredRates": [
                {"startUsageAmount": 0, "unitPrice": {"currencyCode": "USD", "units": str(units), "nanos": nanos}}]}}]}


CATALOG = [
    sku("E2 Instance Core running in Belgium", "CPU", 0.0241),
    sku("E2 Instance Ram running in Belgium", "RAM", 0.00323),
    sku("N2 Instance Core running in Belgium", "CPU", 0.0348),
    sku("N2 Instance Ram running in Belgium", "RAM", 0.00466),
    sku("N2 Custom Instance Core running in Belgium", "CPU", 0.0365),
    sku("Spot Preemptible E2 Instance Core running in Belgium", "CPU", 0.007, usage="Preemptible"),
    sku("E2 Instance Core running in Americas", "CPU", 0.0218, region="us-central1"),
]


def test_gcp_rates_come_from_the_on_demand_skus_of_the_region():
    assert gcp_prices(CATALOG, "europe-west1") == {"compute.e2.vcpu": 0.0241, "compute.e2.memory": 0.00323,
                                                   "compute.n2.vcpu": 0.0348, "compute.n2.memory": 0.00466}
    with pytest.raises(RefreshError, match="compute.e2.memory"):
        gcp_prices(CATALOG[:1], "europe-west1")


def test_rewriting_the_gcp_file_keeps_free_allotments_and_other_entries(tmp_path):
    original = (PRICING / "gcp-europe-west1.yaml").read_text()
    text = rewrite_prices(original, {"compute.e2.vcpu": 0.0241, "logging.ingestion": 0.55}, "api", "2027-01-02")
    path = tmp_path / "gcp.yaml"
    path.write_text(text)
    before, after = read_price_file(PRICING / "gcp-europe-west1.yaml"), read_price_file(path)
    assert after.prices["compute.e2.vcpu"].price == 0.0241 and after.prices["compute.e2.vcpu"].verified
    assert after.prices["logging.ingestion"].free == before.prices["logging.ingestion"].free == 50
    assert {k: v for k, v in after.prices.items() if k not in ("compute.e2.vcpu", "logging.ingestion")} == {
        k: v for k, v in before.prices.items() if k not in ("compute.e2.vcpu", "logging.ingestion")}


def test_refresh_without_an_api_key_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    shutil.copy(PRICING / "gcp-europe-west1.yaml", tmp_path / "gcp-europe-west1.yaml")
    with pytest.raises(RefreshError, match="GOOGLE_API_KEY is not set"):
        refresh("gke", tmp_path)
