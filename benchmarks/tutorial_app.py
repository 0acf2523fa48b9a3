"""The Flask model server everyone writes first, kept as the baseline for benchmarks/serve.py.

Deliberately the tutorial version: one global session with default options, ``request.json``,
``tolist()`` and ``jsonify``, Flask's own threaded server, no validation, no limits.

    python benchmarks/tutorial_app.py MODEL.onnx --port 5000
"""

import argparse

import numpy as np
import onnxruntime as ort
from flask import Flask, jsonify, request

app = Flask(__name__)
session = None


@app.route("/predict", methods=["POST"])
def predict():
    data = request.get_json()
    x = np.array(data["inputs"], dtype=np.float32)
    input_name = session.get_inputs()[0].name
    outputs = session.run(None, {input_name: x})
    result = {o.name: v.tolist() for o, v in zip(session.get_outputs(), outputs)}
    predictions = np.argmax(outputs[0], axis=-1).tolist()
    return jsonify({"outputs": result, "predictions": predictions})


@app.route("/v2/health/ready")
def ready():
    return jsonify({"ready": True})


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    app.run(host=args.host, port=args.port, threaded=True)
