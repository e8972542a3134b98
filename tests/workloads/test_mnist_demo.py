"""The MNIST demo a person can try, for real: the drawing page in headless Chromium, served by nginx
with the config the platform deploys, reaching Seldon Core's real Python wrapper running the model
class; a stand-in for the gateway routes `/demo/mnist/` and `/seldon/serving/mnist/` as the two
VirtualServices do. Also: PNG bodies through the real wrapper, and the component in the plan.

Chromium is driven over the DevTools protocol (its own remote-debugging port, no driver download):
mouse input makes the pointer events a hand on the canvas makes.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pytest
import requests

from mlops.plan import run_program, stack_config
from mlops.validate import validate_plan
from tests.runtimes import seldon_wrapper
from tests.services import free_port
from tests.tools import require_tool
from workloads.mnist import data as mnist_data
from workloads.mnist import demo
from workloads.mnist import model as mnist_model
from workloads.mnist import pyfunc as mnist_pyfunc
from workloads.mnist.serving import MAX_PNG_SIDE

STACKS = Path(__file__).resolve().parents[1] / "stacks"
MODEL_PREFIX = "/seldon/serving/mnist/"  # Seldon's VirtualService prefix for model `mnist` in `serving`
# strokes on the 280x280 canvas, in canvas pixels: a slanted 1, an upright 0, a 7
STROKES: dict[int, list[list[tuple[float, float]]]] = {
    1: [[(150 - 0.75 * t, 45 + 9.5 * t) for t in range(21)]],
    0: [[(140 + 65 * math.sin(math.pi * t / 20), 140 - 95 * math.cos(math.pi * t / 20)) for t in range(41)]],
    7: [[(75 + 6.5 * t, 55) for t in range(21)] + [(205 - 4 * t, 55 + 9 * t) for t in range(1, 21)]],
}


# ---- the component in the plan ----

def _full_stack(demo_on: bool, drop_mnist_model: bool = False) -> tuple[dict[str, str], list[str]]:
    values, secrets = stack_config("full", STACKS)
    workloads = json.loads(values["mlops-stack:workloads"])
    workloads["mnist"]["demo"] = demo_on
    values["mlops-stack:workloads"] = json.dumps(workloads)
    if drop_mnist_model:
        serving = json.loads(values["mlops-stack:serving"])
        del serving["models"]["mnist"]
        values["mlops-stack:serving"] = json.dumps(serving)
    return values, secrets


@pytest.fixture(scope="module")
def stack_plan():
    return run_program("full", _full_stack(True))


def _demo_objects(plan) -> dict[str, dict]:
    return {o["kind"]: o for o in plan.kubernetes_objects if o["metadata"]["name"] == demo.NAME}


def test_the_page_is_deployed_beside_the_model_and_the_plan_validates(stack_plan):
    objects = _demo_objects(stack_plan)
    assert set(objects) == {"ConfigMap", "Deployment", "Service", "VirtualService"}
    assert {o["metadata"]["namespace"] for o in objects.values()} == {"serving"}
    page = objects["ConfigMap"]["data"]["index.html"]
    assert page == demo.render_page("/seldon/serving/mnist/api/v1.0/predictions")
    assert demo.content_security_policy(page) in objects["ConfigMap"]["data"]["default.conf"]
    route = objects["VirtualService"]["spec"]
    assert route["hosts"] == ["models.mlops.example.org"] and route["gateways"] == ["istio-system/platform-gateway"]
    served = route["http"][1]
    assert served["match"] == [{"port": 443, "uri": {"prefix": "/demo/mnist/"}}]  # TLS stack: HTTPS only
    assert served["rewrite"] == {"uri": "/"}
    assert served["route"][0]["destination"]["host"] == "mnist-demo.serving.svc.cluster.local"
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    assert container["image"] == demo.SERVER_IMAGE and ":latest" not in container["image"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {demo.HTML_ROOT, "/etc/nginx/conf.d", "/tmp"}
    policy = next(o for o in stack_plan.kubernetes_objects
                  if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == f"{demo.NAME}-ingress")
    assert policy["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}}]
    assert stack_plan.outputs["mnistDemoUrl"] == "https://models.mlops.example.org/demo/mnist/"
    report = validate_plan(stack_plan, "1.34")
    assert report.errors == [] and report.policy == []


def test_without_the_flag_nothing_is_deployed():
    assert _demo_objects(run_program("full", _full_stack(False))) == {}


def test_the_demo_without_a_served_mnist_model_is_refused():
    with pytest.raises(ValueError, match="workloads.mnist.demo: .*mnist-server.*set demo: false"):
        run_program("full", _full_stack(True, drop_mnist_model=True))


@pytest.mark.parametrize("path", ["seldon/serving/mnist", "/a\"><script>", "https://elsewhere.example/x"])
def test_only_a_same_origin_path_is_written_into_the_page(path):
    with pytest.raises(ValueError, match="absolute URL path"):
        demo.render_page(path)


# ---- the real processes ----

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    sample = mnist_data.sample()
    net, _ = mnist_model.train(sample.X[::2], sample.y[::2], mnist_model.TrainConfig(epochs=2))
    path = tmp_path_factory.mktemp("mnist") / "model"
    with mnist_pyfunc.weights_file(net) as weights, mnist_pyfunc.code_package() as code:
        mlflow.pyfunc.save_model(path, python_model=mnist_pyfunc.DigitModel(),
                                 artifacts={mnist_pyfunc.WEIGHTS: weights}, code_paths=[code],
                                 signature=mnist_pyfunc.SIGNATURE)
    return path


@pytest.fixture(scope="module")
def wrapper(model_dir) -> Iterator[str]:
    with seldon_wrapper("workloads.mnist.serving.MnistClassifier", {"MODEL_URI": str(model_dir)}) as url:
        yield url


def _png_of(strokes: list[list[tuple[float, float]]]) -> str:
    from PIL import Image, ImageDraw

    picture = Image.new("L", (280, 280), 255)
    for stroke in strokes:
        ImageDraw.Draw(picture).line(stroke, fill=0, width=20, joint="curve")
    return _b64png(picture)


def _b64png(picture) -> str:
    import io

    out = io.BytesIO()
    picture.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


@pytest.mark.integration
def test_the_wrapper_answers_png_bodies_of_both_protocols(wrapper):
    from PIL import Image

    url = f"{wrapper}/api/v1.0/predictions"
    pictures = {digit: _png_of(strokes) for digit, strokes in STROKES.items()}
    for digit, picture in pictures.items():
        response = requests.post(url, json={"binData": picture}, timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()["jsonData"]
        assert answer["digits"] == [digit] and abs(sum(answer["probabilities"][0]) - 1) < 1e-5
    body = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [3], "data": list(pictures.values())}]}
    response = requests.post(url, json=body, timeout=30)
    assert response.status_code == 200, response.text
    digit, probabilities = response.json()["outputs"]
    assert digit["data"] == list(pictures) and probabilities["shape"] == [3, 10]
    for bad, reason in [
        ({"binData": base64.b64encode(b"GIF89a....").decode()}, "not a PNG"),
        ({"binData": _b64png(Image.new("L", (280, 280), 255))}, "no ink"),
        ({"binData": _b64png(Image.new("L", (MAX_PNG_SIDE + 1, 4)))}, f"at most {MAX_PNG_SIDE}"),
        ({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["@@@"]}]}, "base64"),
    ]:
        response = requests.post(url, json=bad, timeout=30)
        assert response.status_code == 400 and reason in response.json()["status"]["info"], response.text
    assert requests.post(url, json={"binData": pictures[7]}, timeout=30).json()["jsonData"]["digits"] == [7]


# nginx as the page's container runs it: the generated server block inside the image's main config
# (pid, temp paths under a writable directory); Debian's nginx stands in for the image's.
NGINX_MAIN = """daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    client_body_temp_path {dir}/client_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    include {dir}/conf.d/*.conf;
}}
"""


class Nginx:
    def __init__(self, base: Path, url: str, process: subprocess.Popen, page: Path):
        self.base, self.url, self.process, self.page = base, url, process, page

    def rss_kib(self) -> int:
        """Resident memory of the master and its workers."""
        pids = [self.process.pid] + [int(p) for p in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
                                     .read_text().split()]
        return sum(int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) for pid in pids)


@pytest.fixture(scope="module")
def nginx() -> Iterator[Nginx]:
    binary = require_tool("nginx", "the drawing page's static server", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    base = Path(tempfile.mkdtemp(prefix="mnist-demo-"))
    base.chmod(0o755)  # nginx's workers run as another user when the tests run as root
    (base / "html").mkdir(mode=0o755)
    (base / "conf.d").mkdir()
    page = demo.render_page(demo.predictions_path("serving", "mnist"))
    (base / "html" / "index.html").write_text(page)
    port = free_port()
    (base / "conf.d" / "default.conf").write_text(
        demo.nginx_conf(demo.content_security_policy(page), listen=f"127.0.0.1:{port}", root=str(base / "html")))
    (base / "nginx.conf").write_text(NGINX_MAIN.format(dir=base))
    checked = subprocess.run([binary, "-t", "-c", str(base / "nginx.conf"), "-p", str(base)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen([binary, "-c", str(base / "nginx.conf"), "-p", str(base)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{url}/healthz", process)
        yield Nginx(base, url, process, base / "html" / "index.html")
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for(url: str, process: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited {process.returncode}: {process.stderr.read().decode()}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


@pytest.mark.integration
def test_nginx_serves_the_page_with_its_policy_and_nothing_else(nginx):
    page = requests.get(f"{nginx.url}/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.text == nginx.page.read_text()
    assert page.headers["Content-Security-Policy"] == demo.content_security_policy(page.text)
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/index.html", "/default.conf", "/nginx.conf", "/x"):
        assert requests.get(f"{nginx.url}{path}", timeout=10).status_code == 404, path
    for _ in range(200):
        requests.get(f"{nginx.url}/", timeout=10)
    request_kib = 16 * 1024  # MnistDemoArgs' memory request (16Mi)
    assert demo.MnistDemoArgs.__dataclass_fields__["resources"].default_factory()["requests"]["memory"] == "16Mi"
    assert nginx.rss_kib() < request_kib, f"nginx holds {nginx.rss_kib()} KiB after 200 requests"


class _Gateway(BaseHTTPRequestHandler):
    """The two VirtualServices' routes: prefix → upstream with the prefix rewritten to `/`."""

    routes: dict[str, str] = {}

    def _forward(self) -> None:
        prefix = next((p for p in self.routes if self.path.startswith(p)), None)
        if prefix is None:
            self.send_error(404)
            return
        upstream = http.client.HTTPConnection(self.routes[prefix].removeprefix("http://"), timeout=30)
        length = int(self.headers.get("Content-Length") or 0)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "content-length", "accept")}
        upstream.request(self.command, "/" + self.path[len(prefix):], self.rfile.read(length), headers)
        answer = upstream.getresponse()
        body = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "keep-alive", "content-length", "server", "date"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _forward

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def gateway(nginx, wrapper) -> Iterator[str]:
    handler = type("Gateway", (_Gateway,), {"routes": {demo.PATH_PREFIX: nginx.url, MODEL_PREFIX: wrapper}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Chromium:
    """Headless Chromium and one page, over the DevTools protocol."""

    def __init__(self, ws_url: str):
        import websocket

        self.socket = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.last_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        self.socket.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_until(self, expression: str, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(expression)

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_until("document.readyState === 'complete'")

    def _mouse(self, kind: str, x: float, y: float, buttons: int) -> None:
        self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", buttons=buttons, clickCount=1)

    def draw(self, selector: str, strokes: list[list[tuple[float, float]]]) -> None:
        """Press, move through each stroke's points (in the element's own pixels), release."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect(); "
                            f"const e = document.querySelector('{selector}'); "
                            "return [r.left, r.top, r.width / e.width, r.height / e.height]; })()")
        left, top, sx, sy = box
        for stroke in strokes:
            points = [(left + x * sx, top + y * sy) for x, y in stroke]
            self._mouse("mousePressed", *points[0], buttons=1)
            for point in points[1:]:
                self._mouse("mouseMoved", *point, buttons=1)
            self._mouse("mouseReleased", *points[-1], buttons=0)

    def click(self, selector: str) -> None:
        x, y = self.evaluate(f"(() => {{ const r = document.querySelector('{selector}').getBoundingClientRect(); "
                             "return [r.left + r.width / 2, r.top + r.height / 2]; })()")
        self._mouse("mousePressed", x, y, buttons=1)
        self._mouse("mouseReleased", x, y, buttons=0)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and refused resources (CSP) seen so far."""
        self.evaluate("0")  # drain pending events
        found = [e["params"]["entry"]["text"] for e in self.events
                 if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"]
        found += [e["params"]["exceptionDetails"]["text"] for e in self.events
                  if e.get("method") == "Runtime.exceptionThrown"]
        found += [str(e["params"]["args"]) for e in self.events
                  if e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error"]
        return found


@pytest.fixture(scope="module")
def chromium(tmp_path_factory) -> Iterator[Chromium]:
    binary = require_tool("chromium", "the drawing page's browser test (Debian's chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--window-size=1000,620", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (active.exists() and len(active.read_text().split()) == 2):
            assert process.poll() is None and time.monotonic() < deadline, "chromium did not open its DevTools port"
            time.sleep(0.1)
        port = active.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as listing:
            target = next(t for t in json.load(listing) if t["type"] == "page")
        browser = Chromium(target["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable")
        yield browser
        browser.socket.close()
    finally:
        process.terminate()
        process.wait(timeout=15)


READ_ANSWER = """(() => ({
  digit: document.getElementById('digit').textContent,
  status: document.getElementById('status').textContent,
  probabilities: [...document.querySelectorAll('#probabilities .row')].map(r => Number(r.dataset.probability)),
  shown: [...document.querySelectorAll('#probabilities .row output')].map(o => o.textContent),
  widths: [...document.querySelectorAll('#probabilities .row .bar')].map(b => b.style.width),
  best: [...document.querySelectorAll('#probabilities .row.best')].map(r => r.dataset.digit),
}))()"""


@pytest.mark.integration
def test_a_person_draws_digits_and_the_page_shows_the_models_answer(chromium, gateway, wrapper, tmp_path):
    started = time.monotonic()
    chromium.open(f"{gateway}{demo.PATH_PREFIX}")
    assert chromium.evaluate("document.querySelectorAll('#probabilities .row').length") == 10
    chromium.click("#predict")  # nothing drawn yet
    assert chromium.evaluate("document.getElementById('status').textContent") == "Draw a digit first."
    for digit, strokes in STROKES.items():
        chromium.click("#clear")
        chromium.draw("#pad", strokes)
        chromium.click("#predict")
        chromium.wait_until("document.getElementById('digit').textContent !== '–' "
                            "|| document.getElementById('status').textContent !== ''")
        answer = chromium.evaluate(READ_ANSWER)
        assert answer["status"] == "" and answer["digit"] == str(digit), answer
        # what the page shows is the model's answer for exactly what was drawn
        drawing = chromium.evaluate("document.getElementById('pad').toDataURL('image/png').split(',')[1]")
        direct = requests.post(f"{wrapper}/api/v1.0/predictions", json={"binData": drawing}, timeout=30).json()
        assert np.allclose(answer["probabilities"], direct["jsonData"]["probabilities"][0], atol=1e-9)
        assert answer["shown"] == [f"{p:.3f}" for p in answer["probabilities"]]
        widths = [float(w.removesuffix("%")) for w in answer["widths"]]  # the bars' lengths, in percent
        assert np.allclose(widths, np.round(100 * np.asarray(answer["probabilities"]), 1), atol=1e-9)
        assert answer["best"] == [str(digit)] and abs(sum(answer["probabilities"]) - 1) < 1e-5
    screenshot = tmp_path / "mnist-demo.png"
    screenshot.write_bytes(base64.b64decode(chromium.call("Page.captureScreenshot", format="png")["data"]))
    assert screenshot.stat().st_size > 10_000
    assert chromium.errors() == []
    assert time.monotonic() - started < 30


@pytest.mark.integration
def test_a_page_its_policy_does_not_cover_runs_nothing(chromium, gateway, nginx):
    """The Content-Security-Policy is what lets the page's script run: a changed script is refused."""
    original = nginx.page.read_text()
    nginx.page.write_text(original.replace('"use strict";', '"use strict"; /* changed */'))
    try:
        chromium.events.clear()
        chromium.open(f"{gateway}{demo.PATH_PREFIX}")
        assert chromium.evaluate("document.querySelectorAll('#probabilities .row').length") == 0
        assert any("Content Security Policy" in error for error in chromium.errors()), chromium.errors()
    finally:
        nginx.page.write_text(original)
