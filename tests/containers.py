"""podman for the tests: this machine's containers.conf, the cached Debian base image, helpers.

The containers.conf below works around quirks of this test machine (root without
CAP_SYS_RESOURCE, hybrid cgroups: see FIELD-NOTES "Containers here"); the product needs none of
it, so it lives here and is set only for the test session (``CONTAINERS_CONF``).

The base image is built from Debian's packages with mmdebstrap (no image registry is reachable
here) once per machine: ``podman image exists`` first, so later sessions reuse it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

BASE_IMAGE = "localhost/onnxdeploy-test-base:bookworm"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
MMDEBSTRAP = ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
              "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr", "bookworm"]
DEBIAN = "deb http://deb.debian.org/debian bookworm main"


def podman_missing() -> str | None:
    """Why podman cannot run here, or None."""
    if shutil.which("podman") is None:
        return "podman is not installed (make tools installs it from Debian when root)"
    return None


def configure(directory: Path) -> Path:
    """Write the machine's containers.conf and point CONTAINERS_CONF at it (this process and its
    children)."""
    conf = directory / "containers.conf"
    conf.write_text(CONTAINERS_CONF)
    os.environ["CONTAINERS_CONF"] = str(conf)
    return conf


def podman(*args: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(["podman", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"podman {' '.join(map(str, args))} failed ({r.returncode}):\n"
                           f"{r.stderr[-3000:]}")
    return r


def ensure_base_image() -> str:
    """The Debian bookworm base (python3 + venv), built and imported once per machine."""
    if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
        return BASE_IMAGE
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed; make tools installs it from Debian")
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-base-") as tmp:
        tar = Path(tmp) / "base.tar"
        r = subprocess.run([*MMDEBSTRAP, str(tar), DEBIAN], capture_output=True, text=True,
                           timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed:\n{r.stderr[-3000:]}")
        podman("import", "--change", 'CMD ["/bin/bash"]', str(tar), BASE_IMAGE)
    return BASE_IMAGE


def wait_http(url: str, timeout: float = 60, ok=(200,)) -> float:
    """Seconds until ``url`` answers one of ``ok``; RuntimeError after ``timeout``."""
    import urllib.error
    import urllib.request

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status in ok:
                    return time.monotonic() - t0
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer {ok} within {timeout} s")
