"""Keep the generated parts of README.md (between marker comments) in step with their source."""

from __future__ import annotations

import re
from pathlib import Path

from mlops.paths import ROOT

README = ROOT / "README.md"


def replace_block(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"README.md has no {begin} … {end} block")
    return pattern.sub(lambda _: f"{begin}\n{body.strip()}\n{end}", text)


def block(text: str, name: str) -> str:
    match = re.search(re.escape(f"<!-- {name}:begin -->") + r"\n(.*?)\n?" + re.escape(f"<!-- {name}:end -->"),
                      text, re.DOTALL)
    if match is None:
        raise ValueError(f"README.md has no {name} block")
    return match.group(1).strip()


def update(name: str, body: str, path: Path = README) -> None:
    path.write_text(replace_block(path.read_text(), name, body))
