"""Tests of keras_barlow.metrics against NumPy formulas, on TensorFlow and on JAX."""

import ast
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_barlow import metrics

pytestmark = pytest.mark.core

METRICS_SOURCE = pathlib.Path(metrics.__file__)


def numpy_embedding_std(z):
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    return unit.std(axis=0).mean() * np.sqrt(z.shape[1])


def numpy_effective_rank(matrix):
    singular_values = np.linalg.svd(matrix, compute_uv=False)
    p = singular_values / singular_values.sum()
    p = p[p > 0]
    return np.exp(-np.sum(p * np.log(p)))


def numpy_mean_abs_off_diagonal(c):
    return np.abs(c[~np.eye(len(c), dtype=bool)]).mean()


def test_embedding_std_equals_numpy_formula_and_is_float32():
    z = np.random.default_rng(0).normal(size=(50, 10)) + 0.3
    value = metrics.embedding_std(z)
    assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert float(value) == pytest.approx(numpy_embedding_std(z), rel=1e-5)
    assert float(metrics.embedding_std(z.astype(np.float16))) == pytest.approx(
        numpy_embedding_std(z), rel=1e-2
    )
    assert float(metrics.embedding_std(np.ones((50, 10), np.float32))) < 1e-6


def test_effective_rank_equals_numpy_svd_formula():
    rng = np.random.default_rng(1)
    for matrix in (
        rng.normal(size=(32, 16)),
        rng.normal(size=(40, 3)) @ rng.normal(size=(3, 24)),  # rank 3
    ):
        assert float(metrics.effective_rank(matrix)) == pytest.approx(
            numpy_effective_rank(matrix), rel=1e-4
        )
    assert float(metrics.effective_rank(np.eye(6))) == pytest.approx(6.0, rel=1e-5)
    collapsed = np.tile(rng.normal(size=(1, 8)), (10, 1))
    assert float(metrics.effective_rank(collapsed)) == pytest.approx(1.0, rel=1e-3)


def test_mean_abs_off_diagonal_equals_numpy():
    c = np.random.default_rng(2).uniform(-1, 1, size=(7, 7))
    assert float(metrics.mean_abs_off_diagonal(c)) == pytest.approx(
        numpy_mean_abs_off_diagonal(c), rel=1e-5
    )


def test_metrics_module_imports_no_tensorflow():
    tree = ast.parse(METRICS_SOURCE.read_text())
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ] + [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imported == ["keras"], imported


def test_metrics_run_on_the_jax_backend_without_tensorflow():
    pytest.importorskip("jax")
    # The module alone (not the package, whose other modules import TensorFlow),
    # in a fresh interpreter on JAX, also under jit as in a JAX train step.
    code = f"""
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("metrics", {str(METRICS_SOURCE)!r})
metrics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(metrics)
import jax
z = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
print(json.dumps({{
    "tensorflow": "tensorflow" in sys.modules,
    "std": float(jax.jit(metrics.embedding_std)(z)),
    "std_dtype": str(metrics.embedding_std(z.astype(np.float16)).dtype),
    "rank": float(metrics.effective_rank(z)),
    "off": float(metrics.mean_abs_off_diagonal(z[:6])),
}}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    values = json.loads(result.stdout.strip().splitlines()[-1])
    z = np.random.default_rng(0).normal(size=(20, 6)).astype(np.float32)
    assert not values["tensorflow"]
    assert values["std_dtype"] == "float32"
    assert values["std"] == pytest.approx(numpy_embedding_std(z), rel=1e-5)
    assert values["rank"] == pytest.approx(numpy_effective_rank(z), rel=1e-4)
    assert values["off"] == pytest.approx(numpy_mean_abs_off_diagonal(z[:6]), rel=1e-5)
