"""The README tells the truth about what the code generates and what the commands are."""

from __future__ import annotations

from mlops.paths import ROOT
from mlops.readme import README, block
from mlops.reference import config_reference


def test_config_reference_in_readme_is_current():
    assert block(README.read_text(), "config-reference") == config_reference().strip(), (
        "README config table is stale: run `.venv/bin/mlops config-reference --write-readme`"
    )


def test_every_config_key_is_documented():
    text = block(README.read_text(), "config-reference")
    for key in ("platform", "environment", "mlflow.replicas", "database.backup.schedule", "objectStore.buckets.artifacts"):
        assert f"| `{key}` |" in text


def test_readme_commands_exist():
    readme = README.read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make up" in readme and "make test" in readme
    assert "\nup:" in makefile and "\ntest:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
