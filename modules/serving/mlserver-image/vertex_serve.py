"""The image's entrypoint on Vertex AI (serving.engine vertex, modules/serving/vertex.py): copy the
model folder Vertex names in AIP_STORAGE_URI (its copy of the Model's artifactUri) to
MLSERVER_MODEL_URI, then run MLServer on it on Vertex's port (AIP_HTTP_PORT).

Standard library only: the image has no Google Cloud client. The access token is the deployed
model's service account's, from the metadata server; GCE_METADATA_HOST and STORAGE_EMULATOR_HOST
(the names Google's own libraries read) point both elsewhere.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
import urllib.request
from pathlib import Path


def _get(url: str, headers: dict[str, str]) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60) as response:
        return response.read()


def token() -> str:
    host = os.environ.get("GCE_METADATA_HOST", "metadata.google.internal")
    body = _get(f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token",
                {"Metadata-Flavor": "Google"})
    return json.loads(body)["access_token"]


def download(uri: str, target: Path) -> int:
    """Every object under the gs:// folder `uri`, at its relative path under `target`; the count."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme != "gs" or not parsed.netloc:
        raise SystemExit(f"AIP_STORAGE_URI must be gs://<bucket>/<folder>; got {uri!r}")
    bucket, prefix = parsed.netloc, parsed.path.strip("/") + "/"
    api = os.environ.get("STORAGE_EMULATOR_HOST", "https://storage.googleapis.com").rstrip("/")
    headers = {"Authorization": f"Bearer {token()}"}
    names, page = [], None
    while True:
        query = {"prefix": prefix, "fields": "items(name),nextPageToken", **({"pageToken": page} if page else {})}
        listing = json.loads(_get(f"{api}/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(query)}", headers))
        names += [item["name"] for item in listing.get("items", []) if not item["name"].endswith("/")]
        page = listing.get("nextPageToken")
        if not page:
            break
    if not names:
        raise SystemExit(f"no objects under {uri}")
    for name in names:
        path = target / name[len(prefix):]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_get(f"{api}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media",
                              headers))
    return len(names)


def main() -> None:
    target = Path(os.environ["MLSERVER_MODEL_URI"])
    count = download(os.environ["AIP_STORAGE_URI"], target)
    print(f"vertex_serve: {count} files from {os.environ['AIP_STORAGE_URI']} in {target}", flush=True)
    os.environ["MLSERVER_HTTP_PORT"] = os.environ.get("AIP_HTTP_PORT", os.environ.get("MLSERVER_HTTP_PORT", "8080"))
    os.execvp("mlserver", ["mlserver", "start", str(target)])


if __name__ == "__main__":
    sys.exit(main())
