"""The README's Python snippets run as written, in order, and name only real API.

`test_readme_snippets_run_in_order` runs each snippet in one namespace, in the
README's order, from a scratch folder that has a tiny copy of the CIFAR-10 archive
at the README's path: sizes are substituted (`SUBSTITUTIONS`, each must still be in
the README) so that it takes seconds, and a missing import or a path that two
snippets both write fails it. A snippet that cannot run on a CPU in seconds is
listed in `NOT_RUN` with the reason. Every snippet is also parsed, and every
`keras_barlow...` name in it must exist and take the keywords given.
"""

import ast
import inspect
import os
import pathlib
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf

import keras_barlow

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_snippets():
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def library_roots(trees):
    """Names that stand for keras_barlow or one of its members in the snippets."""
    roots = {"keras_barlow": keras_barlow}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "keras_barlow":
                for alias in node.names:
                    roots[alias.asname or alias.name] = getattr(
                        keras_barlow, alias.name
                    )
    return roots


def dotted_name(node):
    """`["a", "b", "c"]` for the expression `a.b.c` (`["a"]` for `a`), else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def resolve(parts, roots):
    target = roots[parts[0]]
    for index, part in enumerate(parts[1:], start=1):
        if not hasattr(target, part):
            pytest.fail(f"README names `{'.'.join(parts[: index + 1])}`: no such thing")
        target = getattr(target, part)
    return target


def accepted_keywords(target):
    """Keyword names a function takes, or a class through the `__init__`s of its MRO.

    `None` for a function with `**kwargs`. A class's `**kwargs` are taken to reach
    its bases (Keras layers pass `name`, `dtype`, ... on), whose names count.
    """
    if not inspect.isclass(target):
        parameters = inspect.signature(target).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return None
        return {p.name for p in parameters}
    names = set()
    for cls in inspect.getmro(target)[:-1]:  # not `object`
        if "__init__" in vars(cls):
            names |= set(inspect.signature(cls.__init__).parameters)
    return names


def test_the_readme_has_python_snippets_and_each_parses():
    snippets = python_snippets()
    assert len(snippets) >= 8
    for snippet in snippets:
        ast.parse(snippet)


def check_keywords(call, roots):
    """Fails on a keyword that the called keras_barlow name does not take.

    Returns whether the call was to keras_barlow (and so checked).
    """
    parts = dotted_name(call.func)
    if not parts or parts[0] not in roots:
        return False
    accepted = accepted_keywords(resolve(parts, roots))
    if accepted is not None:
        wrong = [k.arg for k in call.keywords if k.arg and k.arg not in accepted]
        assert not wrong, f"README calls {'.'.join(parts)} with {wrong}"
    return True


def test_readme_snippets_name_existing_api_with_existing_arguments():
    trees = [ast.parse(snippet) for snippet in python_snippets()]
    roots = library_roots(trees)
    checked_calls = 0
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.Attribute):
            parts = dotted_name(node)
            if parts and parts[0] in roots:
                resolve(parts, roots)
        if isinstance(node, ast.Call):
            checked_calls += check_keywords(node, roots)
    assert checked_calls >= 20


# (old, new): tiny sizes for the run; each `old` must occur in the README.
SUBSTITUTIONS = [
    ("batch_size=256", "batch_size=8"),
    ("epochs=100", "epochs=1"),
    ('keras_barlow.ResNet18((32, 32, 3), stem="cifar")', "backbones.convnet(width=8)"),
    ("projector_dims=(2048, 2048, 2048)", "projector_dims=(16, 16)"),
    (".replace(epochs=200)", '.replace(backbone="convnet", projector_dims=(16,))'),
    ("val_count=5000", "val_count=12"),
    ('"runs/barlow", 100', '"runs/barlow", 1'),
]
# A line of the snippet -> why it is not run (it is still parsed and checked).
NOT_RUN = {
    "keras_barlow.distribute.choose_strategy()": "the full recipe on several GPUs, "
    "and `optimizer=...` is for the reader to fill in",
    "evaluation.fine_tune(": "its datasets are named in the prose only",
    "keras_barlow.KNNMonitor(": "its datasets are named in the prose only",
    "distribute.data_parallel()  # keras": "it runs on the JAX backend, in a process "
    "of its own (test_the_jax_snippet_runs_on_jax)",
    "distribute.initialize_processes(": "it needs several processes; "
    "tests/test_multiprocess.py runs the same steps in two",
}
# The same for the JAX snippet, which also trains for epochs=10.
JAX_SUBSTITUTIONS = [*SUBSTITUTIONS, ("epochs=10", "epochs=1")]
# A line of the snippet -> the names its prose defines, made here.
PROSE_NAMES = {
    "keras_barlow.barlow_twins_loss(z1, z2": lambda: {
        "z1": np.random.default_rng(0).normal(size=(8, 16)).astype("float32"),
        "z2": np.random.default_rng(1).normal(size=(8, 16)).astype("float32"),
    },
}
IMAGE_SIZE = 32


def tiny_archive(path, classes=3, per_class=12):
    """A .tar.gz of `train/class<i>/<j>.jpg`, like the shared CIFAR-10 archive."""
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for label in range(classes):
            for index in range(per_class):
                pixels = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
                file = path.parent / f"{label}-{index}.jpg"
                file.write_bytes(tf.io.encode_jpeg(pixels).numpy())
                tar.add(file, arcname=f"train/class{label}/{index}.jpg")


def substituted(snippet, used):
    for index, (old, new) in enumerate(SUBSTITUTIONS):
        if old in snippet:
            used.add(index)
            snippet = snippet.replace(old, new)
    return snippet


def test_readme_snippets_run_in_order(tmp_path, monkeypatch):
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    tiny_archive(tmp_path / "shared" / "datasets" / "cifar10-jpeg-train.tar.gz")
    work = tmp_path / "work"  # the README's "../shared" is then the folder above
    work.mkdir()
    pixels = np.zeros((20, 24, 3), np.uint8)
    (work / "cat.jpg").write_bytes(tf.io.encode_jpeg(pixels).numpy())
    (work / "dog.png").write_bytes(tf.io.encode_png(pixels).numpy())
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # `backbones` only for the substituted encoder; the snippets import the rest.
    namespace = {"__name__": "readme", "backbones": keras_barlow.backbones}
    used, ran = set(), []
    for index, snippet in enumerate(python_snippets()):
        skipped = [reason for line, reason in NOT_RUN.items() if line in snippet]
        if skipped:
            continue
        for line, make in PROSE_NAMES.items():
            if line in snippet:
                namespace.update(make())
        code = compile(substituted(snippet, used), f"README snippet {index}", "exec")
        exec(code, namespace)  # noqa: S102
        ran.append(index)
    assert used == set(range(len(SUBSTITUTIONS))), "a substitution no longer applies"
    assert len(ran) >= 6, ran
    # What the snippets promised: two versions of the SavedModel, features of both
    # request kinds, a resumable run.
    assert (work / "models/barlow/1/saved_model.pb").exists()
    assert namespace["path"] == "models/barlow/2"
    features = namespace["model"].encoder.output_shape[-1]
    assert namespace["features"].shape == (2, features)
    assert (work / "runs/barlow/settings.json").exists()
    assert (work / "runs/barlow/checkpoints/epoch-000001").is_dir()


def test_every_snippet_is_run_or_has_a_reason_not_to_be():
    snippets = python_snippets()
    for marker in [*NOT_RUN, *PROSE_NAMES]:
        assert sum(marker in snippet for snippet in snippets) == 1, marker


def test_the_jax_snippet_runs_on_jax(tmp_path):
    # In a process without TensorFlow (hidden from imports), on the tiny archive.
    pytest.importorskip("jax")
    (snippet,) = [
        s for s in python_snippets() if "distribute.data_parallel()  # keras" in s
    ]
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    tiny_archive(tmp_path / "shared" / "datasets" / "cifar10-jpeg-train.tar.gz")
    work = tmp_path / "work"
    work.mkdir()
    used = set()
    for index, (old, new) in enumerate(JAX_SUBSTITUTIONS):
        if old in snippet:
            used.add(index)
            snippet = snippet.replace(old, new)
    assert len(JAX_SUBSTITUTIONS) - 1 in used, "epochs=10 is no longer in the snippet"
    hide_tensorflow = "import sys\nsys.modules['tensorflow'] = None\n"
    code = f"{hide_tensorflow}from keras_barlow import backbones\n{snippet}"
    code += "\nassert type(train).__module__.startswith('keras_barlow.data.grain')\n"
    env = {**os.environ, "KERAS_BACKEND": "jax", "XDG_CACHE_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work / "barlow.keras").exists()
