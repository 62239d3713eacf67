#!/usr/bin/env python3
"""Generates the vibration-ae example model and its test fixtures.

Deterministic: a fixed numpy seed and fixed ONNX metadata, so running it again
writes byte-identical files. Needs `pip install onnx numpy`.

    python3 gen.py          # writes model.onnx, healthy.json, anomalous.json

The model is a linear-PCA autoencoder with a tanh bottleneck, fitted in
closed form (no training framework):

    y = W_dec (s * tanh((W_enc (x - mu)) / s)) + mu

W_enc are the top-8 principal components of synthetic "healthy" vibration
windows, W_dec = W_enc^T. The scale s keeps the codes in tanh's near-linear
range, so healthy windows reconstruct almost as well as with plain PCA, while
large out-of-distribution codes saturate (which only raises their error).
"""

import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))

SEED = 20261124
N = 32  # samples per window
K = 8  # bottleneck width
FS = 1000.0  # sample rate, Hz
# The machine's normal vibration: shaft (25 Hz), line-frequency hum (50 Hz),
# a bearing tone (120 Hz); amplitudes vary a little from window to window.
HEALTHY_FREQS = (25.0, 50.0, 120.0)
HEALTHY_AMPS = (0.9, 0.6, 0.35)
NOISE = 0.02
SCALE = 32.0
TRAIN = 20000
EVAL = 2000

rng = np.random.default_rng(SEED)
t = np.arange(N) / FS


def healthy(n):
    x = np.zeros((n, N))
    for f, a in zip(HEALTHY_FREQS, HEALTHY_AMPS):
        amp = a * rng.uniform(0.8, 1.2, size=(n, 1))
        ph = rng.uniform(0, 2 * np.pi, size=(n, 1))
        x += amp * np.sin(2 * np.pi * f * t[None, :] + ph)
    x += rng.normal(0.0, NOISE, size=(n, N))
    return x


def spike(n):
    x = healthy(n)
    idx = rng.integers(0, N, size=n)
    sign = rng.choice([-1.0, 1.0], size=n)
    x[np.arange(n), idx] += sign * rng.uniform(1.5, 3.0, size=n)
    return x


def new_frequency(n):
    # A fault tone at 310 Hz (e.g. a damaged gear tooth).
    x = healthy(n)
    ph = rng.uniform(0, 2 * np.pi, size=(n, 1))
    amp = rng.uniform(0.4, 0.6, size=(n, 1))
    return x + amp * np.sin(2 * np.pi * 310.0 * t[None, :] + ph)


def clipping(n):
    # A saturated sensor or a rubbing part: peaks flattened at +-0.5.
    return np.clip(healthy(n), -0.5, 0.5)


# --- fit ---------------------------------------------------------------------
train = healthy(TRAIN)
mu = train.mean(axis=0)
_, _, vt = np.linalg.svd(train - mu, full_matrices=False)
w_enc = vt[:K].T  # [N, K]: x @ w_enc gives the codes
w_dec = vt[:K]  # [K, N]

# Stored weights (float32), with the scale folded in:
#   h = tanh(x @ A + a),  y = h @ B + b
A = (w_enc / SCALE).astype(np.float32)
a = (-(mu @ w_enc) / SCALE).astype(np.float32)
B = (w_dec * SCALE).astype(np.float32)
b = mu.astype(np.float32)


def forward(x):
    """The model's computation in float32, as the ONNX graph does it."""
    x = np.asarray(x, dtype=np.float32).reshape(-1, N)
    h = np.tanh(x @ A + a)
    return (h @ B + b).astype(np.float32)


def mse(x):
    x32 = np.asarray(x, dtype=np.float32).reshape(-1, N)
    y = forward(x32)
    return ((x32.astype(np.float64) - y.astype(np.float64)) ** 2).mean(axis=1)


# --- ONNX graph ----------------------------------------------------------------
inits = [
    numpy_helper.from_array(A, "enc_w"),
    numpy_helper.from_array(a, "enc_b"),
    numpy_helper.from_array(B, "dec_w"),
    numpy_helper.from_array(b, "dec_b"),
]
nodes = [
    helper.make_node("Gemm", ["x", "enc_w", "enc_b"], ["enc"], name="encoder"),
    helper.make_node("Tanh", ["enc"], ["code"], name="bottleneck"),
    helper.make_node("Gemm", ["code", "dec_w", "dec_b"], ["y"], name="decoder"),
]
graph = helper.make_graph(
    nodes,
    "vibration_ae",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N])],
    initializer=inits,
)
model = helper.make_model(
    graph,
    producer_name="gatewayd-gen.py",
    producer_version="1",
    opset_imports=[helper.make_opsetid("", 13)],
)
model.ir_version = 7  # the IR version of opset 13; tract-onnx 0.23 reads it
onnx.checker.check_model(model)
with open(os.path.join(HERE, "model.onnx"), "wb") as fh:
    fh.write(model.SerializeToString(deterministic=True))

# --- evaluation and fixtures -----------------------------------------------------
sets = {
    "healthy": healthy(EVAL),
    "spike": spike(EVAL),
    "new_frequency": new_frequency(EVAL),
    "clipping": clipping(EVAL),
}
scores = {k: mse(v) for k, v in sets.items()}
healthy_max = float(scores["healthy"].max())
anomalous_min = float(min(scores[k].min() for k in sets if k != "healthy"))
assert healthy_max < anomalous_min, (healthy_max, anomalous_min)
# A round number between the two populations (geometric middle, 2 digits).
THRESHOLD = float(f"{np.sqrt(healthy_max * anomalous_min):.2g}")
assert healthy_max < THRESHOLD < anomalous_min


def fixture(kind, x, per):
    out = []
    for i in range(per):
        w = np.asarray(x[i], dtype=np.float32)
        out.append(
            {
                "kind": kind,
                # float(f32) is exact in JSON's doubles: Rust reads the same f32.
                "x": [float(v) for v in w],
                "mse": float(mse(w)[0]),
            }
        )
    return out


def dump(name, windows):
    doc = {"model": "vibration-ae", "threshold": THRESHOLD, "windows": windows}
    with open(os.path.join(HERE, name), "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")


dump("healthy.json", fixture("healthy", sets["healthy"], 6))
dump(
    "anomalous.json",
    fixture("spike", sets["spike"], 2)
    + fixture("new_frequency", sets["new_frequency"], 2)
    + fixture("clipping", sets["clipping"], 2),
)

for k, v in scores.items():
    print(f"{k:14s} mse min {v.min():.5f} median {np.median(v):.5f} max {v.max():.5f}")
pca = ((sets["healthy"] - mu - (sets["healthy"] - mu) @ w_enc @ w_dec) ** 2).mean(axis=1)
print(f"healthy, plain PCA (no tanh) mse median {np.median(pca):.5f} max {pca.max():.5f}")
print(f"threshold {THRESHOLD}")
