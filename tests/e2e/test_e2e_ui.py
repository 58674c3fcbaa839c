"""The Dagster UI of a running `dagster dev` shows the telemetry assets (headless Chromium)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support import free_port

pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",
    # the graph renders only the nodes in view: a large window puts the whole telemetry group in it
    "--window-size=1600,1000",
]
LOCATION = "pipelines.definitions"  # dagster dev -m <module> names the location after the module
REPOSITORY = "__repository__"  # the repository a Definitions object becomes
ARTIFACTS = Path(os.environ.get("AEGIS_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "artifacts"))


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_asset_graph_page_lists_telemetry_assets(tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed here (not CI): apt-get install chromium to run this test")
    from aegis.stack import write_dagster_yaml

    port = free_port()
    dagster_home = tmp_path / "dagster"
    write_dagster_yaml(dagster_home)
    env = {**os.environ, "AEGIS_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(dagster_home)}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("dagster")),
            "dev",
            "-m",
            LOCATION,
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, "dagster dev exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "dagster dev not ready"
            time.sleep(2)
        # The group's own page: with several groups in the location, /asset-groups/<group> now opens the
        # global lineage with every group collapsed, where no asset name is rendered.
        url = f"http://127.0.0.1:{port}/locations/{REPOSITORY}@{LOCATION}/asset-groups/telemetry"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        profile = tmp_path / "chromium-profile"
        dom = ""
        for _ in range(3):  # the code location may still be loading on the first try
            dom = subprocess.run(
                [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            ).stdout
            if "bronze_events" in dom:
                break
            time.sleep(10)
        shot = ARTIFACTS / "dagster-telemetry-graph.png"
        subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                url,
            ],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert "bronze_events" in dom, dom[-2000:]
        assert "telemetry_quality_report" in dom
        assert shot.exists() and shot.stat().st_size > 10_000
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
