"""``onnxdeploy containerize MODEL.onnx|RUN_DIR -t IMAGE``: an OCI image that serves the model."""

from __future__ import annotations

import os

import click

from ..errors import OptionError
from .common import report_options

#: serve options an image may not bake: the image decides where the model is and what it binds
NOT_BAKED = {"ONNXDEPLOY_MODEL", "ONNXDEPLOY_MODEL_DIR", "ONNXDEPLOY_HOST", "ONNXDEPLOY_PORT"}


def serve_variables() -> dict[str, click.Parameter]:
    """``ONNXDEPLOY_<OPTION>`` -> the serve option it sets (from the serve command itself)."""
    from .serve import command as serve_command

    out = {}
    for param in serve_command.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str) and envvar.startswith("ONNXDEPLOY_") and envvar not in NOT_BAKED:
            out[envvar] = param
    return out


def serve_settings(sets: tuple[str, ...], environ: dict[str, str] | None = None) -> dict[str, str]:
    """Serve settings to bake: ``ONNXDEPLOY_*`` variables of this environment, then ``--set``."""
    environ = os.environ if environ is None else environ
    known = serve_variables()
    chosen = {k: v for k, v in environ.items() if k in known}
    for item in sets:
        key, sep, value = item.partition("=")
        var = "ONNXDEPLOY_" + key.strip().lstrip("-").replace("-", "_").upper()
        if not sep or var not in known:
            names = ", ".join(sorted(k[len("ONNXDEPLOY_"):].lower() for k in known))
            raise OptionError(f"--set {item}: expected OPTION=VALUE with OPTION one of serve's "
                              f"options ({names})")
        chosen[var] = value.strip()
    for var, value in chosen.items():
        param = known[var]
        try:
            param.type(value, param, None)
        except click.BadParameter as exc:
            raise OptionError(f"{var}={value!r}: {exc.message}") from None
    return chosen


@click.command("containerize")
@click.argument("source", metavar="MODEL.onnx|RUN_DIR")
@click.option("-t", "--tag", "image", required=True, metavar="IMAGE[:TAG]",
              help="Name of the image to build (and to put in the manifests).")
@click.option("--base", default="python:3.11-slim", show_default=True, metavar="IMAGE",
              help="Base image: any with python3 (same minor version as here) and venv.")
@click.option("--builder", type=click.Choice(["podman", "buildah", "docker"]),
              help="Image builder (default: the first of podman, buildah, docker that works).")
@click.option("--context-only", metavar="DIR",
              help="Only write the build context into DIR (a new directory); build nothing.")
@click.option("--set", "sets", multiple=True, metavar="OPTION=VALUE",
              help="A serve setting to bake into the image, e.g. --set max_batch_size=8 "
                   "(repeatable; ONNXDEPLOY_<OPTION> variables set here are baked too).")
@click.option("--kserve", "kserve", metavar="DIR",
              help="Also write DIR/servingruntime.yaml, DIR/inferenceservice.yaml and "
                   "DIR/deployment.yaml (Deployment + Service), resources from a started server.")
@click.option("--storage-uri", metavar="URI",
              help="The InferenceService's storageUri (pvc://, s3://, gs://...); without it the "
                   "image serves the model baked into it.")
@click.option("--target-rps", type=click.IntRange(min=1), metavar="N",
              help="The autoscaler's per-replica target in requests per second.")
@click.option("--from-bench", metavar="REPORT.json",
              help="Take the per-replica target from a bench --slo report: its capacity within "
                   "the SLO x 0.8.")
@click.option("--canary", type=int, metavar="PERCENT",
              help="canaryTrafficPercent of the InferenceService (KServe Serverless mode).")
@report_options
def command(source, image, base, builder, context_only, sets, kserve, storage_uri, target_rps,
            from_bench, canary, as_json, report_path):
    """Build an OCI image that serves MODEL.onnx, or the variant RUN_DIR's report ships.

    The image runs `onnxdeploy serve` as a non-root user on 0.0.0.0:8080 (or $PORT), works with a
    read-only root filesystem (writes only to /tmp), drains on SIGTERM, sizes workers and threads
    from its CPU limit, and serves a non-empty --model_dir (KServe: /mnt/models) in preference to
    the model baked into it.
    """
    from ..deploy import ContainerizeOptions, containerize_model
    from .common import emit

    options = ContainerizeOptions(source=source, image=image, base=base, builder=builder,
                                  context_only=context_only, serve_env=serve_settings(sets),
                                  kserve=kserve, storage_uri=storage_uri, target_rps=target_rps,
                                  from_bench=from_bench, canary=canary)
    report = containerize_model(options)
    emit(report.to_dict(), as_json=as_json, report_path=report_path, render=_render)


def _render(report: dict) -> None:
    where = (f"context written to {report['context']}" if report["context"]
             else f"image {report['image']} built with {report['builder']}")
    size = report.get("image_size_bytes")
    click.echo(f"{where}: serves {report['model_file']} (sha256 {report['sha256'][:12]}) on "
               f"{report['base']}" + (f", {size / 1e6:.0f} MB" if size else "")
               + f"; init: {report['init'] or 'none (onnxdeploy is PID 1)'}"
               + "; " + ", ".join(f"{k} {v:.1f} s" for k, v in report["timings_s"].items()))
    if report.get("manifests"):
        k = report["kserve"]
        click.echo(f"manifests: {', '.join(report['manifests'])} (memory request "
                   f"{k['resources']['memory_request'] // 2**20} MiB, limit "
                   f"{k['resources']['memory_limit'] // 2**20} MiB, cpu {k['resources']['cpu']}"
                   + (f", target {k['target_rps']} req/s per replica" if k["target_rps"] else "")
                   + ")")
