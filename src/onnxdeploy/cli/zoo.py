"""``onnxdeploy zoo``: the built-in models."""

from __future__ import annotations

import click

from .. import zoo
from ..report.terminal import console, fmt_pct
from .common import emit


def render(listing: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"built-in models (weights cache: {listing['cache_dir']})", title_justify="left")
    for col in ("name", "input", "params", "test accuracy", "description"):
        table.add_column(col, justify="right" if col == "params" else "left",
                         no_wrap=col != "description")
    for row in listing["models"]:
        shape = "[" + ", ".join(str(d) for d in row["input_shape"]) + "]"
        acc = fmt_pct(row["accuracy"]) if row["trained"] else "not trained yet"
        table.add_row(row["name"], escape(f"{row['input_name']}: {shape}"), f"{row['params']:,}", acc,
                      row["description"])
    console().print(table)
    if not all(r["trained"] for r in listing["models"]):
        console().print("Untrained models are trained on first export, or now with --train.")


@click.command("zoo")
@click.option("--train", is_flag=True, help="Train (and cache) any built-in not trained yet.")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Weights cache (default: $ONNXDEPLOY_CACHE, else ~/.cache/onnxdeploy).")
@click.option("--seed", type=int, default=0, show_default=True, help="Training seed.")
@click.option("--json", "as_json", is_flag=True, help="Print the listing as JSON on stdout and nothing else.")
def command(train, cache_dir, seed, as_json):
    """List the built-in models with their input shape, parameters and test accuracy."""
    rows = [zoo.describe(name, cache_dir=cache_dir, seed=seed, train=train, progress=True)
            for name in zoo.NAMES]
    listing = {"cache_dir": str(zoo.cache_dir(cache_dir)), "seed": seed, "models": rows}
    emit(listing, as_json=as_json, report_path=None, render=render)
