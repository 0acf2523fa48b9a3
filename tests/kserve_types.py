"""Manifests checked against KServe's and Kubernetes' own API types, in a process of its own.

    python tests/kserve_types.py < docs.json     # a JSON list of manifests
    -> a JSON list: null for a manifest its API type accepts, else why not (one line)

Each document is built into the API type of its kind (``kserve.models`` of KServe's Python SDK,
``kubernetes.client``) through the field tables their generated classes publish
(``attribute_map``, ``openapi_types``). Stricter than a cluster's decoding: a key that is no
field of its type, or a value not of the field's declared type, is refused; the generated
constructors refuse a missing required field (ValueError, or pydantic's ValidationError).

Own process: importing kserve registers its copy of the ``inference`` protobuf package in
protobuf's default pool, after which tritonclient's copy cannot be imported in that process.
"""

from __future__ import annotations

import json
import re
import sys

#: the API type of each kind of document containerize writes
API_TYPES = {"ServingRuntime": "V1alpha1ServingRuntime",
             "InferenceService": "V1beta1InferenceService",
             "Deployment": "V1Deployment", "Service": "V1Service"}


class Refused(Exception):
    pass


def api_object(data, kind: str, where: str = "$"):
    import kserve.models
    import kubernetes.client

    # both spellings: list[X] / dict(str, X) (openapi-generator's older templates: the KServe SDK)
    # and List[X] / Dict[str, X] (the Kubernetes client from 35 on)
    if m := re.fullmatch(r"[lL]ist\[(.+)\]", kind):
        if not isinstance(data, list):
            raise Refused(f"{where}: expected a list ({kind}), got {data!r}")
        return [api_object(v, m[1], f"{where}[{i}]") for i, v in enumerate(data)]
    if m := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", kind):
        if not isinstance(data, dict):
            raise Refused(f"{where}: expected a mapping ({kind}), got {data!r}")
        return {k: api_object(v, m[1] or m[2], f"{where}.{k}") for k, v in data.items()}
    if kind == "object":  # IntOrString and the like
        return data
    primitive = {"str": str, "int": int, "bool": bool, "float": (int, float)}.get(kind)
    if primitive is not None:
        if not isinstance(data, primitive) or (kind == "int" and isinstance(data, bool)):
            raise Refused(f"{where}: {data!r} is not of type {kind}")
        return data
    cls = getattr(kserve.models, kind, None) or getattr(kubernetes.client, kind)
    if not isinstance(data, dict):
        raise Refused(f"{where}: expected a {kind} mapping, got {data!r}")
    fields = {key: attr for attr, key in cls.attribute_map.items()}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise Refused(f"{where}: {unknown} are not fields of {kind}")
    try:
        return cls(**{fields[k]: api_object(v, cls.openapi_types[fields[k]], f"{where}.{k}")
                      for k, v in data.items()})
    except ValueError as exc:  # a required field missing, a value outside an enum
        raise Refused(f"{where}: {kind} refused it: {' '.join(str(exc).split())}") from None


def why_not(doc: dict) -> str | None:
    kind = doc.get("kind") if isinstance(doc, dict) else None
    if kind not in API_TYPES:
        return f"kind {kind!r} is none of {sorted(API_TYPES)}"
    try:
        api_object(doc, API_TYPES[kind], kind)
    except Refused as exc:
        return str(exc)
    return None


if __name__ == "__main__":
    print(json.dumps([why_not(doc) for doc in json.load(sys.stdin)]))
