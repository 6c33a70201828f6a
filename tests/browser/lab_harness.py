"""A real JupyterLab on 127.0.0.1 and Debian's Chromium, for widget tests and benchmarks.

``jupyter_lab(notebook)`` starts JupyterLab on a free loopback port with a token, serving a
temporary copy of the notebook; ``chromium()`` launches the system browser through
Playwright (never a downloaded one); ``open_and_run`` opens the notebook and runs all its
cells; ``kernel_eval`` runs code in the notebook's kernel and returns what it printed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

SERVER_CONFIG = """
from jupyterlab.galata import configure_jupyter_server

configure_jupyter_server(c)
c.ServerApp.ip = "127.0.0.1"
c.ServerApp.port = {port}
c.ServerApp.port_retries = 0
c.ServerApp.root_dir = {root!r}
c.IdentityProvider.token = {token!r}
c.ServerApp.disable_check_xsrf = False
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.ServerApp.allow_root = True
c.LabApp.extension_manager = "readonly"
c.LabApp.user_settings_dir = {settings!r}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    notebook: str
    process: subprocess.Popen
    log: Path

    def notebook_url(self) -> str:
        return f"{self.url}/lab/tree/{self.notebook}?token={self.token}&reset"


@contextlib.contextmanager
def jupyter_lab(notebook: Path, timeout: float = 120.0, env: dict[str, str] | None = None
                ) -> Iterator[Lab]:
    """JupyterLab serving a temp-dir copy of ``notebook``; stopped (with its kernels) after."""
    root = Path(tempfile.mkdtemp(prefix="fk-lab-"))
    shutil.copy(notebook, root / notebook.name)
    port, token = free_port(), secrets.token_hex(16)
    config = root / "jupyter_server_test_config.py"
    settings = root / ".settings"
    quiet = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    quiet.parent.mkdir(parents=True)
    quiet.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    config.write_text(SERVER_CONFIG.format(port=port, root=str(root), token=token,
                                           settings=str(settings)))
    log = root / "jupyterlab.log"
    run_env = {**os.environ, "FUSIONKIT_HOME": str(root / ".fusionkit"),
               "JUPYTER_RUNTIME_DIR": str(root / ".runtime"), **(env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", f"--config={config}", "--no-browser"],
            cwd=root, env=run_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    lab = Lab(url, token, root, notebook.name, proc, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"JupyterLab did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.25)  # polling a server that is starting, not synchronising
        yield lab
    finally:
        _stop(proc, url, token)
        shutil.rmtree(root, ignore_errors=True)


def _stop(proc: subprocess.Popen, url: str, token: str) -> None:
    """Stop the server and its kernels: asked first, so a kernel's Ray shuts down with it."""
    import signal

    if proc.poll() is None:
        request = urllib.request.Request(f"{url}/api/shutdown?token={token}", method="POST")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(request, timeout=10).close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A Playwright page in the system Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


IDLE_KERNEL = """() => { const w = window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return k && k.connectionStatus === 'connected' && k.status === 'idle'; }"""


def open_notebook(page, lab: Lab, timeout: float = 300.0) -> None:
    """Open the notebook and wait until its kernel is idle."""
    page.goto(lab.notebook_url(), timeout=timeout * 1000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell",
                           timeout=timeout * 1000)
    page.wait_for_selector(".jp-Notebook", timeout=timeout * 1000)
    page.wait_for_function(IDLE_KERNEL, timeout=timeout * 1000)


def run_cells(page, upto: int | None = None) -> None:
    """Run every cell (``upto=None``) or cells ``0..upto``; returns once they are queued."""
    if upto is None:
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        return
    page.evaluate("""async (n) => {
        const panel = window.jupyterapp.shell.currentWidget;
        panel.content.activeCellIndex = n;
        await window.jupyterapp.commands.execute('notebook:run-all-above');
    }""", upto + 1)


def restart_kernel(page, timeout: float = 300.0) -> None:
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
                  ".restart()")
    page.wait_for_function(IDLE_KERNEL, timeout=timeout * 1000)


def open_and_run(page, lab: Lab, timeout: float = 120.0) -> None:
    """Open the notebook, wait for its kernel, run all cells (returns once they are queued)."""
    page.goto(lab.notebook_url(), timeout=timeout * 1000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=timeout * 1000)
    page.wait_for_selector(".jp-Notebook", timeout=timeout * 1000)
    page.wait_for_function(
        """() => { const w = window.jupyterapp.shell.currentWidget;
                   const k = w && w.sessionContext && w.sessionContext.session
                             && w.sessionContext.session.kernel;
                   return k && k.connectionStatus === 'connected' && k.status === 'idle'; }""",
        timeout=timeout * 1000)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")


KERNEL_EVAL = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({ code, store_history: false });
  let out = "";
  let error = null;
  future.onIOPub = (msg) => {
    const t = msg.header.msg_type;
    if (t === "stream") out += msg.content.text;
    if (t === "error") error = msg.content.ename + ": " + msg.content.evalue;
  };
  await future.done;
  if (error) throw new Error(error);
  return out;
}"""


def kernel_eval(page, code: str) -> str:
    """Run ``code`` in the notebook's kernel (after queued cells) and return its stdout."""
    return page.evaluate(KERNEL_EVAL, code)


def cell_prompts(page) -> list[str]:
    """Each code cell's prompt, e.g. ``[3]:``, ``[*]:`` (running or queued) or ``[ ]:``."""
    return page.evaluate(
        """() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
             .map(e => e.innerText.trim())""")


def cell_errors(page) -> list[str]:
    """Text of the error outputs in the open notebook (for failure messages)."""
    return page.evaluate(
        """() => [...document.querySelectorAll(
             '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
             .map(e => e.innerText.slice(-1500))""")
