"""Renderers: reports are data (dataclasses with ``to_dict``); these turn them into text and files."""

from .jsonio import dumps, to_jsonable, write_json

__all__ = ["to_jsonable", "dumps", "write_json"]
