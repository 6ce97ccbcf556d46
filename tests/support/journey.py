"""A stock ComfyUI install with this pack, used the way a user uses it.

* :class:`StockComfyUI`: a fresh copy of the ComfyUI tree, the pack copied into ``custom_nodes/tcts``
  as the README says (the files a clone gives), its requirements installed with pip, and the server
  started as users start it: ``python main.py --cpu --listen 127.0.0.1 --port N`` in a subprocess,
  with no other flag and no model path set for it. Models are added where users put them
  (``models/<key>/`` and an ``extra_model_paths.yaml`` at the root of the tree).
* :class:`Browser`: Debian's Chromium driven headless by Playwright: open the page, open a template by
  clicking its card in *Browse Templates*, press Run, read what the page shows, collect the console.

Nothing here reaches into the server's process: it is configured by files and driven by HTTP and the
browser only.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

REPO = Path(__file__).resolve().parents[2]
PACK_NAME = "tcts"
#: Chromium flags for a headless run as root on a machine without a display or network
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1000}

#: console messages that are not the pack's: the stock frontend offline. Each entry is (substring of
#: the message or its URL, why it is expected).
CONSOLE_NOISE = [
    ("ERR_NAME_NOT_RESOLVED", "requests to external hosts (api.comfy.org) fail offline"),
    ("ERR_INTERNET_DISCONNECTED", "requests to external hosts fail offline"),
    ("/user.css", "no user stylesheet: 404"),
    ("/favicon.ico", "no favicon: 404"),
    ("/api/userdata", "a fresh user folder has no saved workflows, subgraphs or template settings: 404"),
    ("reading 'id'", "the 1.32 frontend's own startup TypeError (onChange in its settings store)"),
    ("Error fetching file size", "the missing-model dialog asks the download host for the size; offline it fails"),
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pack_files(repo: Path = REPO) -> list[str]:
    """The files a user's clone of the repository has (tracked and new, not ignored ones)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=repo, check=True,
                         stdout=subprocess.PIPE).stdout.decode()
    return sorted(f for f in out.split("\0") if f and (repo / f).is_file())


@dataclass
class StockComfyUI:
    """A copy of a ComfyUI tree under ``base`` with this pack installed, and its server."""

    source_tree: Path
    base: Path
    python: str = sys.executable
    port: int = 0
    root: Path = field(init=False)
    proc: subprocess.Popen | None = field(default=None, init=False)
    log_path: Path = field(init=False)
    startup_seconds: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.root = self.base / "ComfyUI"
        self.log_path = self.base / "server.log"

    # ---- install, as the README says -----------------------------------------------------------------

    def install(self, repo: Path = REPO) -> Path:
        """Copy the tree, put the pack into ``custom_nodes/tcts`` and pip-install its requirements."""
        shutil.copytree(self.source_tree, self.root, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "output", "temp", "user", "input"))
        for folder in ("input", "output"):
            (self.root / folder).mkdir(exist_ok=True)
        pack = self.root / "custom_nodes" / PACK_NAME
        for name in pack_files(repo):
            (pack / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo / name, pack / name)
        subprocess.run([self.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                        str(pack / "requirements.txt")], check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        return pack

    def add_model_folder(self, key: str, name: str, source: Path) -> Path:
        """``ComfyUI/models/<key>/<name>``: a copy of ``source`` (a folder or a file)."""
        target = self.root / "models" / key / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
        return target

    def write_extra_model_paths(self, entries: Mapping[str, Mapping[str, str]]) -> Path:
        """``ComfyUI/extra_model_paths.yaml`` (what users write from ``extra_model_paths.yaml.example``)."""
        lines = []
        for section, keys in entries.items():
            lines.append(f"{section}:")
            lines += [f"    {k}: {v}" for k, v in keys.items()]
        path = self.root / "extra_model_paths.yaml"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    # ---- the server, as users start it ---------------------------------------------------------------

    @property
    def command(self) -> list[str]:
        return [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port)]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180.0) -> None:
        self.port = self.port or free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log = open(self.log_path, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                if self.get_json("/system_stats", timeout=2):
                    break
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"ComfyUI did not answer within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.25)
        self.startup_seconds = time.monotonic() - t0

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.is_file() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def rss_bytes(self) -> int:
        """Resident memory of the server process (Linux ``/proc``)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    # ---- HTTP ---------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, timeout: float = 30.0) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body[:500]!r}")
        return json.loads(body)

    def queue(self, prompt: Mapping[str, Any], client_id: str = "tcts-soak") -> str:
        status, body = self.request("POST", "/prompt", {"prompt": prompt, "client_id": client_id})
        answer = json.loads(body)
        if status != 200 or "prompt_id" not in answer:
            raise RuntimeError(f"POST /prompt refused (HTTP {status}): {answer}")
        return answer["prompt_id"]

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def wait(self, prompt_id: str, timeout: float = 300.0) -> dict:
        """The history entry of a prompt once it has finished (successfully or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.history(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                    entry["status"].get("status_str") in ("success", "error")):
                return entry
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s:\n{self.log_tail()}")

    def running(self) -> list[str]:
        return [item[1] for item in self.get_json("/queue").get("queue_running", [])]

    def view(self, ref: Mapping[str, str]) -> bytes:
        query = urllib.parse.urlencode({"filename": ref["filename"], "subfolder": ref.get("subfolder", ""),
                                        "type": ref.get("type", "output")})
        status, body = self.request("GET", f"/view?{query}")
        if status != 200:
            raise RuntimeError(f"GET /view?{query}: HTTP {status}")
        return body


def history_status(entry: Mapping[str, Any]) -> tuple[str, set[str]]:
    """(status_str, the names of the execution messages) of a history entry."""
    status = entry.get("status", {})
    return status.get("status_str", ""), {m[0] for m in status.get("messages", [])}


@dataclass
class ConsoleMessage:
    type: str
    text: str
    url: str

    def is_noise(self) -> bool:
        return any(pattern in self.text or pattern in self.url for pattern, _ in CONSOLE_NOISE)

    def from_the_pack(self) -> bool:
        return f"/extensions/{PACK_NAME}/" in self.url or f"/extensions/{PACK_NAME}/" in self.text


class Browser:
    """One Chromium page on the ComfyUI frontend (Playwright's sync API)."""

    def __init__(self, url: str, screenshots: Path):
        from playwright.sync_api import sync_playwright

        self.url = url
        self.screenshots = screenshots
        screenshots.mkdir(parents=True, exist_ok=True)
        self._playwright = sync_playwright().start()
        self.browser = self._playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                                        args=CHROMIUM_ARGS)
        self.page = self.browser.new_page(viewport=VIEWPORT)
        self.console: list[ConsoleMessage] = []
        self.responses: list[tuple[str, int]] = []
        self.page.on("response", lambda r: self.responses.append((r.url, r.status)))
        self.page.on("console", lambda m: self.console.append(
            ConsoleMessage(m.type, m.text, (m.location or {}).get("url", ""))))
        self.page.on("pageerror", lambda e: self.console.append(ConsoleMessage("pageerror", str(e), "")))

    def close(self) -> None:
        self.browser.close()
        self._playwright.stop()

    def open(self) -> list[str]:
        """Load the page; close the dialogs it opens by itself (the first start's template browser, or a
        missing-model warning of a workflow tab the frontend restores) and return their texts."""
        self.page.goto(self.url)
        self.page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=90_000)
        self.page.wait_for_timeout(1_000)
        seen = []
        for _ in range(3):
            texts = self.open_dialogs()
            if not texts:
                break
            seen += texts
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(300)
        return seen

    @property
    def frontend_version(self) -> str:
        return self.page.evaluate("window.__COMFYUI_FRONTEND_VERSION__")

    def evaluate(self, script: str, arg: Any = None) -> Any:
        return self.page.evaluate(script, arg)

    def screenshot(self, name: str) -> Path:
        path = self.screenshots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    # ---- templates ----------------------------------------------------------------------------------

    def open_templates(self) -> Any:
        """The template browser, opened with the sidebar's Templates button (or already open, as on the
        first start); returns the dialog."""
        dialog = self.page.get_by_role("dialog")
        if not dialog.get_by_text("Templates", exact=True).count():
            self.page.locator(".side-bar-button", has_text="Templates").first.click()
        dialog.get_by_text("Templates", exact=True).first.wait_for(timeout=30_000)
        return dialog

    def template_cards(self) -> dict[str, int]:
        """Title -> width in px of the thumbnail the card shows (0: none), for the pack's cards (after
        :meth:`open_templates`)."""
        dialog = self.page.get_by_role("dialog")
        dialog.get_by_text(PACK_NAME, exact=True).first.click()
        cards = self.page.locator('[data-testid^="template-workflow-"]')
        cards.first.wait_for(timeout=30_000)
        found = {}
        for i in range(cards.count()):  # thumbnails load lazily, when the card scrolls into view
            card = cards.nth(i)
            card.scroll_into_view_if_needed()
            title = card.get_attribute("data-testid").removeprefix("template-workflow-")
            image = card.locator("img")
            try:
                image.first.wait_for(timeout=5_000)
                self.page.wait_for_function("(img) => img.complete", arg=image.first.element_handle(), timeout=5_000)
                found[title] = image.first.evaluate("img => img.naturalWidth")
            except Exception:  # noqa: BLE001 - no image: reported as 0
                found[title] = 0
        return found

    def open_template(self, title: str, *, expect_dialog: bool = False) -> None:
        """Click the pack's card ``title`` in Browse Templates and wait for the graph (and, with
        ``expect_dialog``, for the dialog that opens with it)."""
        self.open_templates()
        self.template_cards()
        self.page.locator(f'[data-testid="template-workflow-{title}"]').click()
        self.page.wait_for_function("() => app.graph._nodes.some(n => n.type && n.type.startsWith('TCTS'))",
                                    timeout=30_000)
        if expect_dialog:
            self.page.get_by_role("dialog").first.wait_for(timeout=30_000)
        else:
            self.page.wait_for_function("() => !document.querySelector('[role=dialog]')", timeout=30_000)
        self.page.wait_for_timeout(500)

    def load_workflow(self, workflow: Mapping[str, Any], name: str) -> None:
        """What dropping a workflow file onto the canvas does."""
        self.evaluate("async ([wf, name]) => { await app.loadGraphData(wf, true, true, name); }", [workflow, name])
        self.page.wait_for_timeout(300)

    # ---- what the page shows ------------------------------------------------------------------------

    def missing_node_types(self) -> list[str]:
        return self.evaluate("app.graph._nodes.filter(n => !LiteGraph.registered_node_types[n.type])"
                             ".map(n => n.type)")

    def open_dialogs(self) -> list[str]:
        return self.evaluate("Array.from(document.querySelectorAll('[role=dialog]')).map(d => d.innerText.slice(0, 300))")

    def nodes_in_error(self) -> list[str]:
        return self.evaluate("app.graph._nodes.filter(n => n.has_errors).map(n => n.type)")

    def node_screen_boxes(self) -> dict[str, list[float]]:
        """Node type (+ id) -> [x0, y0, x1, y1] on the screen (px of the viewport)."""
        return self.evaluate("""() => { const ds = app.canvas.ds, r = app.canvas.canvas.getBoundingClientRect();
            return Object.fromEntries(app.graph._nodes.map(n => {
                const [x, y] = ds.convertOffsetToCanvas([n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT]);
                const [x1, y1] = ds.convertOffsetToCanvas([n.pos[0] + n.size[0], n.pos[1] + n.size[1]]);
                return [n.type + '#' + n.id, [x + r.left, y + r.top, x1 + r.left, y1 + r.top]]; })); }""")

    def set_widget(self, node_type: str, name: str, value: Any) -> None:
        """Set a widget as typing into it does (the widget's callback runs)."""
        done = self.evaluate("""([type, name, value]) => {
            const node = app.graph._nodes.find(n => n.type === type);
            const w = node && node.widgets.find(w => w.name === name);
            if (!w) return false;
            w.value = value; if (w.callback) w.callback(value, app.canvas, node); node.setDirtyCanvas(true, true);
            return true; }""", [node_type, name, value])
        if not done:
            raise KeyError(f"no widget {name} on a {node_type} node")

    def combo_options(self, node_type: str, name: str) -> list[str]:
        return self.evaluate("""([type, name]) => {
            const node = app.graph._nodes.find(n => n.type === type);
            const w = node.widgets.find(w => w.name === name);
            const v = w.options.values; return typeof v === 'function' ? v() : v; }""", [node_type, name])

    def run(self) -> tuple[str, dict]:
        """Press Run; returns the prompt id and the request body the frontend sent (API prompt)."""
        with self.page.expect_response(lambda r: r.url.endswith("/api/prompt") and r.request.method == "POST",
                                       timeout=60_000) as response:
            self.page.locator("[data-testid=queue-button]").click()
        body = json.loads(response.value.request.post_data)
        answer = response.value.json()
        if "prompt_id" not in answer:
            raise AssertionError(f"the server refused the prompt: {answer}")
        return answer["prompt_id"], body

    def shown_outputs(self) -> dict[str, int]:
        """Output node id -> how many images the page shows on it."""
        return self.evaluate("""() => Object.fromEntries(app.graph._nodes
            .filter(n => n.type === 'SaveImage' || n.type === 'PreviewImage')
            .map(n => [String(n.id), (n.imgs || []).length]))""")

    def preview_on(self, node_type: str) -> str | None:
        """The src of the live preview image shown on a node, if any."""
        return self.evaluate("""(type) => { const n = app.graph._nodes.find(n => n.type === type);
            const imgs = (n && n.imgs) || []; return imgs.length ? imgs[0].src : null; }""", node_type)

    def errors(self) -> list[ConsoleMessage]:
        return [m for m in self.console if m.type in ("error", "pageerror")]
