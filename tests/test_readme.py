"""The README's Python snippets parse and name only what keras_barlow has.

The snippets train for many epochs on real data, so they are not run here; what
drifts when the API changes is checked instead: every `keras_barlow...` name (and
every name reached through `from keras_barlow import ...`) must exist, and every
keyword argument given to one of them must be a parameter it takes.
"""

import ast
import inspect
import pathlib
import re

import pytest

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
