"""The build context of a serving image, and ``containerize_model`` (context, then a builder).

The context (see ``render_containerfile`` for what the image does):

    Containerfile
    model/<file>.onnx (+ its external data, + <file>.onnx.measured_cpu.json from a run's report)
    wheels/requirements.txt   the serve dependencies pinned to the versions installed here
    wheels/*.whl              those wheels and onnxdeploy's own, built from this checkout
    bin/init                  a static catatonit or tini from this machine (PID 1: signals, reaping)

The image installs the wheels with ``--no-index`` (an offline, reproducible build), in a build
stage whose venv is pruned of what serving never reads (``PRUNE_DIRS``, ``PRUNE_FILES``), compiled
to unchecked-hash bytecode (``COPY --from`` rounds file times, which makes timestamp-checked
``.pyc`` stale; a read-only root then compiles every module at each start) and copied into the
final stage without pip. The context is made in a temporary
directory and moved into place (``--context-only``) or removed after the build: a failure leaves
no context and no tagged image behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from .. import __version__, modelfile
from ..errors import ModelLoadError, OnnxDeployError, OptionError
from .image import APP, GRACEFUL_TIMEOUT_S, GRPC_PORT, IMAGE_PORT, MODEL_DIR, USER_ID, VENV

DEFAULT_BASE = "python:3.11-slim"
#: what ``serve`` imports (the granian front, the Flask app for --dev, the CLI); no torch, no
#: transformers, no scikit-learn: tests/test_deploy.py checks the image imports no more
SERVE_PACKAGES = ("onnxruntime", "onnx", "numpy", "flask", "granian", "orjson",
                  "prometheus-client", "swagger-ui-py", "uvloop", "click", "rich", "pyyaml",
                  "grpcio", "protobuf")
#: only for a model that carries a tokenizer (metadata ``onnxdeploy.tokenizer``)
TEXT_PACKAGES = ("tokenizers",)
#: only for a variant served on OpenVINO (metadata ``onnxdeploy.runtime`` = openvino, or
#: ``--set runtime=openvino``); nncf is for quantizing, not serving
OPENVINO_PACKAGES = ("openvino",)
#: never in the image, whatever a dependency's metadata says (pygments and markdown-it-py are
#: rich's syntax highlighting and Markdown: no serve path renders either)
EXCLUDED = {"torch", "transformers", "sympy", "mpmath", "scikit-learn", "scipy",
            "pygments", "markdown-it-py", "mdurl"}
INITS = ("catatonit", "tini")
#: what serving never reads, removed from the venv in the build stage (paths under site-packages;
#: ``*`` as in a glob). Each entry is checked by the container tests (the image must still serve):
PRUNE_DIRS = (
    "onnxruntime/transformers", "onnxruntime/quantization", "onnxruntime/tools",  # offline tools
    "onnx/reference",                    # the reference evaluator (onnx does not import it)
    "numpy/f2py", "numpy/distutils", "numpy/_core/include", "numpy/_pyinstaller",  # build-time
)
PRUNE_FILES = (
    # ORT's C-API library for other languages: the Python binding links none of it (no NEEDED
    # entry; it carries its own copy of the runtime): 35 MB
    "onnxruntime/capi/libonnxruntime.so*",
    # /docs serves swagger-ui-bundle.js and swagger-ui.css only: not the editor, not ES modules
    "swagger_ui/static/swagger-editor*", "swagger_ui/static/*-es-bundle*",
)
#: run in the build stage after the install: the lists above, plus every package's test suite and
#: C sources, source maps, type stubs
PRUNE = """import pathlib, shutil, sys
site = next(pathlib.Path(sys.prefix).glob("lib/python*/site-packages"))
for pattern in DIRS:
    for p in site.glob(pattern):
        shutil.rmtree(p)
for pattern in FILES:
    for p in site.glob(pattern):
        p.unlink()
for p in sorted(site.rglob("*"), reverse=True):
    if not p.exists():
        continue
    if p.is_dir() and p.name in ("tests", "test"):
        shutil.rmtree(p)
    elif p.is_file() and p.suffix in (".map", ".pyx", ".pxd", ".pxi", ".c", ".cpp", ".h", ".pyi"):
        p.unlink()
""".replace("DIRS", repr(PRUNE_DIRS)).replace("FILES", repr(PRUNE_FILES))


@dataclass
class ContainerizeOptions:
    source: str                      #: MODEL.onnx or a pipeline RUN_DIR (or any dir with one .onnx)
    image: str                       #: IMAGE[:TAG]
    base: str = DEFAULT_BASE
    builder: str | None = None       #: podman | buildah | docker; None: the first that works
    context_only: str | None = None  #: write the context here and build nothing
    serve_env: dict[str, str] = field(default_factory=dict)  #: ONNXDEPLOY_* baked into the image
    kserve: str | None = None        #: write servingruntime/inferenceservice/deployment.yaml here
    storage_uri: str | None = None
    target_rps: int | None = None
    from_bench: str | None = None    #: a bench --slo report: the autoscaler target from capacity
    canary: int | None = None


@dataclass
class ContainerizeReport:
    image: str
    model: str
    model_file: str
    base: str
    builder: str | None
    context: str | None
    sha256: str
    requirements: list[str]
    init: str | None
    serve_env: dict[str, str]
    measured_cpu: dict | None
    runtime: str = "onnxruntime"  #: the runtime the image serves the model on
    timings_s: dict[str, float] = field(default_factory=dict)
    image_size_bytes: int | None = None
    manifests: list[str] = field(default_factory=list)
    kserve: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- the model


def resolve_source(source: str) -> tuple[Path, dict | None]:
    """(the model file, the measured CPU from a run's report.json or None)."""
    p = Path(source)
    if p.is_dir():
        model = modelfile.served_model_in(p, flag="RUN_DIR")
        return model, _report_cpu(p / "report.json")
    if not p.is_file():
        raise ModelLoadError(f"{source}: no such file or directory; expected MODEL.onnx or a "
                             "pipeline output directory (RUN_DIR)")
    if p.suffix != ".onnx":
        raise ModelLoadError(f"{source}: not an .onnx file; expected MODEL.onnx or a pipeline "
                             "output directory (RUN_DIR)")
    return p, None


def _report_cpu(report: Path) -> dict | None:
    try:
        env = json.loads(report.read_text(encoding="utf-8")).get("environment") or {}
    except (OSError, ValueError):
        return None
    if not isinstance(env.get("flags"), dict):
        return None
    return {"cpu": env.get("cpu", ""), "flags": env["flags"], "source": str(report)}


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- dependencies


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_requirements(roots: tuple[str, ...]) -> list[str]:
    """``name==version`` for the roots and everything they need, as installed here."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    env = default_environment()
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = _norm(todo.pop())
        if name in seen or name in EXCLUDED:
            continue
        try:
            dist = importlib_metadata.distribution(name)
        except importlib_metadata.PackageNotFoundError:
            raise OnnxDeployError(f"{name} is not installed here; expected the serve extra: "
                                  "pip install 'onnxdeploy[serve]'") from None
        seen[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({**env, "extra": ""}):
                todo.append(req.name)
    return [f"{n}=={v}" for n, v in sorted(seen.items())]


def strip_wheels(directory: Path) -> int:
    """Strip debug info from the shared libraries inside the wheels (host ``strip``), keeping each
    wheel's RECORD true. Returns the bytes saved (0 without ``strip``). ml_dtypes and uvloop ship
    ~35 MB of DWARF that no server reads."""
    import base64
    import zipfile

    strip = shutil.which("strip")
    if strip is None:
        return 0
    saved = 0
    for wheel in sorted(directory.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            infos = z.infolist()
            # auditwheel's vendored libraries (``*.libs/``) were patched by patchelf: never touch
            libs = [i for i in infos if re.search(r"\.so(\.[\d.]+)?$", i.filename)
                    and ".libs/" not in i.filename and _has_debug_info(z.read(i.filename))]
            if not libs:
                continue
            data = {i.filename: z.read(i.filename) for i in infos}
        changed = False
        with tempfile.TemporaryDirectory() as tmp:
            for info in libs:
                f = Path(tmp) / "lib.so"
                f.write_bytes(data[info.filename])
                if subprocess.run([strip, "--strip-debug", str(f)], capture_output=True).returncode:
                    continue
                new = f.read_bytes()
                if len(new) < len(data[info.filename]):
                    saved += len(data[info.filename]) - len(new)
                    data[info.filename] = new
                    changed = True
        if not changed:
            continue
        record = next(n for n in data if n.endswith(".dist-info/RECORD"))
        lines = []
        for line in data[record].decode().splitlines():
            name = line.rsplit(",", 2)[0]
            if name in data and name != record:
                digest = base64.urlsafe_b64encode(hashlib.sha256(data[name]).digest()).rstrip(b"=")
                line = f"{name},sha256={digest.decode()},{len(data[name])}"
            lines.append(line)
        data[record] = ("\n".join(lines) + "\n").encode()
        tmp_wheel = wheel.with_suffix(".tmp")
        with zipfile.ZipFile(tmp_wheel, "w", zipfile.ZIP_DEFLATED) as out:
            for info in infos:
                out.writestr(info, data[info.filename], compress_type=zipfile.ZIP_DEFLATED)
        os.replace(tmp_wheel, wheel)
    return saved


def _has_debug_info(elf: bytes) -> bool:
    """A 64-bit little-endian ELF with a ``.debug_info`` section."""
    import struct

    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return False
    shoff = struct.unpack_from("<Q", elf, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    try:
        str_off = struct.unpack_from("<Q", elf, shoff + shstrndx * shentsize + 0x18)[0]
        for i in range(shnum):
            name_at = struct.unpack_from("<I", elf, shoff + i * shentsize)[0]
            start = str_off + name_at
            if elf[start:elf.index(b"\0", start)] == b".debug_info":
                return True
    except (struct.error, ValueError):
        return False
    return False


def checkout_root() -> Path:
    """The source checkout onnxdeploy runs from (its wheel goes into the image)."""
    import onnxdeploy

    root = Path(onnxdeploy.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "src" / "onnxdeploy").is_dir():
        raise OnnxDeployError(f"onnxdeploy runs from {Path(onnxdeploy.__file__).parent}, not a "
                              "source checkout; expected it installed from one (pip install -e .), "
                              "whose wheel the image installs")
    return root


def _pip(*args: str, cwd: Path | None = None) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", *args, "--disable-pip-version-check"],
                       capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        tail = [line for line in (r.stderr or r.stdout).splitlines() if line.strip()]
        raise OnnxDeployError(f"pip {args[0]} failed: {tail[-1].strip() if tail else r.returncode}")


def write_wheels(dest: Path, requirements: list[str]) -> None:
    """The pinned wheels (downloaded for this Python) and onnxdeploy's own wheel into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "requirements.txt").write_text("\n".join(requirements) + "\n")
    (dest / "prune.py").write_text(PRUNE)
    _pip("download", "--no-deps", "--only-binary=:all:", "--dest", str(dest),
         "-r", str(dest / "requirements.txt"))
    strip_wheels(dest)
    # build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout
    root = checkout_root()
    with tempfile.TemporaryDirectory(prefix="onnxdeploy-src-") as tmp:
        src = Path(tmp) / "src"
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / name).is_file():
                shutil.copy2(root / name, Path(tmp) / name)
        shutil.copytree(root / "src" / "onnxdeploy", src / "onnxdeploy",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), tmp)
    wheel = next(dest.glob("onnxdeploy-*.whl"))
    with open(dest / "requirements.txt", "a") as f:
        f.write(f"{wheel.name.split('-')[0]}=={wheel.name.split('-')[1]}\n")


def find_init() -> Path | None:
    """A statically linked catatonit or tini on this machine (runs in any base image)."""
    for name in INITS:
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if path and _static_elf(Path(path)):
            return Path(path)
    return None


def _static_elf(path: Path) -> bool:
    """An ELF executable without a program interpreter (PT_INTERP): it needs no libc in the image."""
    try:
        data = path.read_bytes()[:1 << 16]
    except OSError:
        return False
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit only
        return False
    import struct

    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 4 > len(data):
            return False
        if struct.unpack_from("<I", data, off)[0] == 3:  # PT_INTERP
            return False
    return True


# ----------------------------------------------------------------------------- the Containerfile


def _python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def render_containerfile(*, base: str, model_file: str, serve_env: dict[str, str],
                         init: bool, sha256: str, python: str | None = None,
                         runtime: str = "onnxruntime") -> str:
    """The Containerfile: works on python:3.11-slim and on a Debian base with python3-venv alike
    (``python3 -m venv``; nothing assumes /usr/local/bin/python)."""
    python = python or _python_tag()
    extra_import = ", openvino" if runtime == "openvino" else ""
    env = {
        "PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
        # a read-only root: everything written goes to /tmp (a tmpfs, or the emptyDir a manifest
        # mounts): the Prometheus multiprocess dir, the boot marker, HOME
        "HOME": "/tmp", "TMPDIR": "/tmp",
        "PORT": str(IMAGE_PORT), "ONNXDEPLOY_HOST": "0.0.0.0",
        "ONNXDEPLOY_MODEL": f"{MODEL_DIR}/{model_file}",
        "ONNXDEPLOY_GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT_S),
        "ONNXDEPLOY_GRPC_PORT": str(GRPC_PORT),
        **serve_env,
    }
    env_lines = " \\\n    ".join(f"{k}={json.dumps(v)}" for k, v in env.items())
    entry = ([f"{APP}/init", "--"] if init else []) + [f"{VENV}/bin/onnxdeploy", "serve"]
    init_copy = f"COPY bin/init {APP}/init\n" if init else ""
    check = (f"import sys; v = '%d.%d' % sys.version_info[:2]; sys.exit(0 if v == '{python}' else "
             f"'onnxdeploy: the wheels in this context are for Python {python}; the base image "
             "has Python ' + v)")
    return f"""# Generated by onnxdeploy {__version__} containerize: serves {model_file} (sha256 {sha256[:16]}).
# Build: podman build -t IMAGE -f Containerfile .   (docker and buildah alike; no network needed)
FROM {base} AS build
COPY wheels/ /tmp/wheels/
RUN python3 -c "{check}" \\
 && python3 -m venv {VENV} \\
 && {VENV}/bin/python -m pip install --no-index --no-deps --no-cache-dir --disable-pip-version-check \\
      --no-compile --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \\
 && {VENV}/bin/python -m pip uninstall -y -q pip setuptools \\
 && {VENV}/bin/python /tmp/wheels/prune.py \\
 && {VENV}/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash {VENV}/lib \\
 && {VENV}/bin/python -c "import onnxdeploy.serve.front, onnxdeploy.serve.grpc_service, onnxruntime, granian, grpc{extra_import}"

FROM {base}
COPY --from=build {VENV} {VENV}
{init_copy}COPY model/ {MODEL_DIR}/
ENV {env_lines}
LABEL org.opencontainers.image.title="onnxdeploy serve {model_file}" \\
      org.opencontainers.image.version="{__version__}" \\
      io.onnxdeploy.model.sha256="{sha256}" \\
      io.onnxdeploy.runtime="{runtime}"
USER {USER_ID}:{USER_ID}
WORKDIR /tmp
EXPOSE {IMAGE_PORT} {GRPC_PORT}
STOPSIGNAL SIGTERM
ENTRYPOINT {json.dumps(entry)}
CMD []
"""


# ----------------------------------------------------------------------------- the whole step


def write_context(dest: Path, model: Path, measured: dict | None, options: ContainerizeOptions,
                  timings: dict[str, float]) -> dict[str, Any]:
    """Fill ``dest`` (an empty directory) with the build context; returns facts for the report."""
    t0 = time.perf_counter()
    proto = modelfile.load_model(model, load_external_data=False)  # a broken file fails here
    meta = modelfile.metadata(proto)
    files = [model, *modelfile.external_data_files(model)]
    (dest / "model").mkdir()
    for f in files:
        target = dest / "model" / f.relative_to(model.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    if measured is not None:
        (dest / "model" / (model.name + modelfile.MEASURED_CPU_SUFFIX)).write_text(
            json.dumps(measured, indent=1) + "\n")
    sha = _sha256(files)
    timings["model_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    runtime = serve_runtime(meta, options.serve_env)
    roots = (SERVE_PACKAGES + (TEXT_PACKAGES if "onnxdeploy.tokenizer" in meta else ())
             + (OPENVINO_PACKAGES if runtime == "openvino" else ()))
    requirements = pinned_requirements(roots)
    write_wheels(dest / "wheels", requirements)
    timings["wheels_s"] = time.perf_counter() - t0

    init = find_init()
    if init is not None:
        (dest / "bin").mkdir()
        shutil.copy2(init, dest / "bin" / "init")
        os.chmod(dest / "bin" / "init", 0o755)
    (dest / "Containerfile").write_text(render_containerfile(
        base=options.base, model_file=model.name, serve_env=options.serve_env,
        init=init is not None, sha256=sha, runtime=runtime))
    return {"sha256": sha, "requirements": requirements,
            "init": init.name if init is not None else None, "measured_cpu": measured,
            "runtime": runtime}


def serve_runtime(meta: dict[str, str], serve_env: dict[str, str]) -> str:
    """The runtime the image will serve on: a baked ``ONNXDEPLOY_RUNTIME`` (``--set runtime=``),
    else the variant's metadata, else ONNX Runtime (as ``serve`` decides)."""
    return (serve_env.get("ONNXDEPLOY_RUNTIME") or meta.get(modelfile.META_RUNTIME)
            or "onnxruntime")


def _prepare_destination(context_only: str) -> Path:
    dest = Path(context_only)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise OptionError(f"--context-only {dest}: already exists and is not an empty directory; "
                          "expected a new directory to write the build context into")
    if not dest.parent.is_dir():
        raise OptionError(f"--context-only {dest}: the directory {dest.parent} does not exist; "
                          "create it first or choose another path")
    return dest


def containerize_model(options: ContainerizeOptions) -> ContainerizeReport:
    """Write the build context and build the image (or only write the context)."""
    from .builders import ensure_base, find_builder

    timings: dict[str, float] = {}
    model, measured = resolve_source(options.source)
    plan = _manifest_plan(options, model)  # bad manifest options fail before anything is built
    dest = _prepare_destination(options.context_only) if options.context_only else None
    builder = None
    if dest is None:  # find a working builder and the base before spending time on wheels
        builder = find_builder(options.builder)
        ensure_base(builder, options.base)
    parent = dest.parent if dest is not None else None
    tmp = Path(tempfile.mkdtemp(prefix=".onnxdeploy-context-", dir=parent))
    tmp.chmod(0o755)
    size = None
    try:
        facts = write_context(tmp, model, measured, options, timings)
        if dest is not None:
            if dest.exists():
                dest.rmdir()
            os.replace(tmp, dest)
        else:
            t0 = time.perf_counter()
            r = builder.build(tmp, options.image)
            timings["build_s"] = time.perf_counter() - t0
            if r.returncode != 0:
                raise OnnxDeployError(f"{builder.name} build failed: {_build_error(r)}")
            size = _image_size(builder, options.image)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifests, kserve = [], None
    if plan is not None:
        manifests, kserve = _write_manifests(options, model, plan, timings)
    return ContainerizeReport(
        manifests=manifests, kserve=kserve,
        image=options.image, model=str(model), model_file=model.name, base=options.base,
        builder=builder.name if builder else None, context=str(dest) if dest else None,
        sha256=facts["sha256"], requirements=facts["requirements"], init=facts["init"],
        runtime=facts["runtime"],
        serve_env=dict(options.serve_env), measured_cpu=facts["measured_cpu"], timings_s=timings,
        image_size_bytes=size)


def _manifest_plan(options: ContainerizeOptions, model: Path) -> dict | None:
    from .manifests import target_from_bench

    extra = [flag for flag, value in (("--storage-uri", options.storage_uri),
                                      ("--target-rps", options.target_rps),
                                      ("--from-bench", options.from_bench),
                                      ("--canary", options.canary)) if value is not None]
    if options.kserve is None:
        if extra:
            raise OptionError(f"{extra[0]}: only means something with --kserve DIR; expected "
                              "--kserve DIR too")
        return None
    kdir = Path(options.kserve)
    if kdir.exists() and not kdir.is_dir():
        raise OptionError(f"--kserve {kdir}: is a file; expected a directory for the manifests")
    if not kdir.parent.is_dir():
        raise OptionError(f"--kserve {kdir}: the directory {kdir.parent} does not exist; create "
                          "it first or choose another path")
    if options.target_rps is not None and options.from_bench is not None:
        raise OptionError("--target-rps and --from-bench both set the autoscaler's target; "
                          "expected one of them")
    if options.canary is not None and not 0 <= options.canary <= 100:
        raise OptionError(f"--canary {options.canary}: expected a percentage from 0 to 100")
    name = options.serve_env.get("ONNXDEPLOY_NAME") or model.stem
    plan = {"model_name": name, "cores": 1, "target": options.target_rps,
            "target_source": "--target-rps" if options.target_rps else ""}
    if options.from_bench is not None:
        plan["target"], plan["cores"], plan["target_source"] = target_from_bench(
            options.from_bench, name)
    return plan


def _write_manifests(options: ContainerizeOptions, model: Path, plan: dict,
                     timings: dict[str, float]) -> tuple[list[str], dict]:
    from .manifests import ManifestOptions, dns_name, measure_server, resources_for, write_manifests

    t0 = time.perf_counter()
    cores = plan["cores"]
    rss = measure_server(model, cores)
    timings["measure_s"] = time.perf_counter() - t0
    resources = resources_for(rss, cores, f"onnxdeploy serve {model.name}, {cores} worker(s), "
                                          "ready, on this machine")
    graceful = int(float(options.serve_env.get("ONNXDEPLOY_GRACEFUL_TIMEOUT", GRACEFUL_TIMEOUT_S)))
    mo = ManifestOptions(image=options.image, name=dns_name(plan["model_name"]),
                         model_name=plan["model_name"], resources=resources,
                         storage_uri=options.storage_uri, target_rps=plan["target"],
                         target_source=plan["target_source"], canary=options.canary,
                         graceful_timeout_s=graceful)
    written = write_manifests(options.kserve, mo)
    return [str(p) for p in written], mo.to_dict()


def _build_error(r: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (r.stderr + "\n" + r.stdout).splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("onnxdeploy:"):  # our own check in the Containerfile
            return line
    errors = [line for line in lines if re.match(r"^(\w*Error\b|error\b|fatal\b)", line)
              and "building at STEP" not in line]
    return (errors or lines or [f"exit status {r.returncode}"])[-1][:300]


def _image_size(builder, image: str) -> int | None:
    """Bytes of the image's uncompressed layers (what ``podman images`` shows)."""
    if builder.name != "buildah":
        r = builder.run("image", "inspect", "--format", "{{.Size}}", image)
        try:
            return int(r.stdout.strip())
        except ValueError:
            return None
    # buildah has no size field: its manifest lists each (uncompressed) layer with its size
    r = builder.run("inspect", "--type", "image", "--format", "{{.Manifest}}", image)
    try:
        return sum(int(layer["size"]) for layer in json.loads(r.stdout)["layers"])
    except (ValueError, KeyError, TypeError):
        return None
