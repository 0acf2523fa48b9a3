"""Image builders: which one works here (not merely which is on PATH), and building with it.

A ``docker`` client without a daemon is common (CI images, remote contexts): a builder counts only
when ``<builder> info`` exits 0. Preference when none is named: podman, buildah, docker.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import OptionError

BUILDERS = ("podman", "buildah", "docker")
INFO_TIMEOUT_S = 30
PULL_TIMEOUT_S = 120


@dataclass(frozen=True)
class Builder:
    name: str
    path: str

    def run(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([self.path, *args], capture_output=True, text=True, timeout=timeout)

    def works(self) -> tuple[bool, str]:
        try:
            r = self.run("info", timeout=INFO_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
        return r.returncode == 0, _last_line(r.stderr or r.stdout)

    def has_image(self, image: str) -> bool:
        args = ("image", "inspect", image) if self.name != "buildah" else ("inspect", "--type",
                                                                              "image", image)
        try:
            return self.run(*args, timeout=INFO_TIMEOUT_S).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def pull(self, image: str) -> tuple[bool, str]:
        try:
            r = self.run("pull", image, timeout=PULL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return False, f"no answer in {PULL_TIMEOUT_S} s"
        return r.returncode == 0, _last_line(r.stderr)

    def build(self, context: Path, image: str) -> subprocess.CompletedProcess:
        file = str(context / "Containerfile")
        if self.name == "buildah":
            args = ["bud", "--layers=false", "--force-rm", "-f", file, "-t", image, str(context)]
        elif self.name == "podman":
            args = ["build", "--layers=false", "--force-rm", "-f", file, "-t", image, str(context)]
        else:
            args = ["build", "--force-rm", "-f", file, "-t", image, str(context)]
        return subprocess.run([self.path, *args], capture_output=True, text=True)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def find_builder(name: str | None = None) -> Builder:
    """The named builder, or the first of BUILDERS that works; OptionError (exit 2) if none does."""
    names = (name,) if name else BUILDERS
    tried: list[str] = []
    for n in names:
        path = shutil.which(n)
        if path is None:
            tried.append(f"{n}: not installed")
            continue
        builder = Builder(n, path)
        ok, why = builder.works()
        if ok:
            return builder
        tried.append(f"{n}: '{n} info' failed ({why or 'no reason given'})")
    flag = f"--builder {name}" if name else "no image builder works here"
    raise OptionError(f"{flag}: {'; '.join(tried)}; expected a working podman, buildah or docker "
                      "(or --context-only DIR to write the build context only)")


def ensure_base(builder: Builder, base: str) -> None:
    """The base image is here or can be pulled; else OptionError naming it (before any build)."""
    if builder.has_image(base):
        return
    ok, why = builder.pull(base)
    if not ok:
        raise OptionError(f"--base {base}: not found locally and {builder.name} could not pull it "
                          f"({why or 'no reason given'}); expected an image with python3 and venv "
                          "that this builder has or can pull")
