"""What made a run: its code, command, libraries, device and data (config.json and
summary.json's `made_by`), and the comparison that keeps a stale result from being reused.

The code is identified by a hash of the project sources the run imports: the script, the
chosen method's, data set's and noise type's files, and every project module they import,
followed statically through their import statements (so that a plug-in file another run
uses, or a new one, changes nothing here). Each file is hashed as its parsed syntax tree
without docstrings: editing a comment, a docstring or the formatting keeps the hash, any
change to what the code does changes it. The git commit, and whether the checkout had
uncommitted changes, are recorded beside it where the project is a git checkout.

The data are identified by a hash of what the run trains and tests on, as loaded: the
training images (after noise that replaces images) and clean labels, the test (and
validation) split, or a data set's own fingerprint (Clothing1M: its image lists); the
noisy labels by their own hash.
"""
import ast
import functools
import hashlib
import os
import platform
import socket
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- code

def module_file(name):
    """The project file of module `name`, or None when it is not the project's."""
    base = os.path.join(ROOT, *name.split("."))
    for path in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(path):
            return path
    return None


def module_name(path):
    rel = os.path.relpath(os.path.abspath(path), ROOT)[:-len(".py")]
    parts = rel.split(os.sep)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.lru_cache(maxsize=None)
def parsed(path):
    """(normalised syntax tree as text, the project modules it imports) of a source file."""
    with open(path, "rb") as f:
        tree = ast.parse(f.read(), filename=path)
    imports = set()
    package = module_name(path) if path.endswith("__init__.py") else module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        if isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[:len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join(anchor + ([base] if base else []))
            imports.add(base)
            imports.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    project = {m for m in imports if m and module_file(m)}
    # a submodule's import runs its packages' __init__ too
    project |= {".".join(m.split(".")[:i]) for m in project for i in range(1, m.count(".") + 1)}
    return ast.dump(tree), frozenset(m for m in project if module_file(m))


def source_closure(paths):
    """Every project file the given files import, followed through their imports."""
    todo, seen = [os.path.abspath(p) for p in paths], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(module_file(m) for m in parsed(path)[1])
    return sorted(seen)


def source_identity(paths):
    """{'source_sha1', 'source_files'} of the files in the import closure of `paths`."""
    digest = hashlib.sha1()
    files = source_closure(paths)
    for path in files:
        digest.update(os.path.relpath(path, ROOT).encode() + b"\0" + parsed(path)[0].encode() + b"\0")
    return {"source_sha1": digest.hexdigest(), "source_files": [os.path.relpath(p, ROOT) for p in files]}


def git_identity():
    """{'git_commit', 'git_dirty'} of the checkout, or {} outside one (or without git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10)
        if commit.returncode != 0:
            return {}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit.stdout.strip(), "git_dirty": bool(status.stdout.strip())}


# ---------------------------------------------------------------- data

def array_digest(digest, array):
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))


def data_fingerprint(data):
    """sha1 of the data as loaded: the data set's own fingerprint() where it has one, else its
    training images and clean labels, and every split's images and labels."""
    if hasattr(data, "fingerprint"):
        return data.fingerprint()
    digest = hashlib.sha1()
    for name in ("train_images", "train_labels", "test_images", "test_labels", "val_images", "val_labels"):
        value = getattr(data, name, None)
        if value is not None:
            digest.update(name.encode())
            array_digest(digest, np.asarray(value))
    return digest.hexdigest()


def labels_sha1(noisy):
    return hashlib.sha1(np.asarray(noisy, dtype=np.int64).tobytes()).hexdigest()


# ---------------------------------------------------------------- the record

def versions():
    """Plain strings (torch.__version__ is a str subclass that checkpoints cannot load safely)."""
    import torch  # here, so that the code identity alone (summarize.py --status) needs no torch

    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"python": platform.python_version(), "torch": str(torch.__version__),
            "torchvision": _version("torchvision"), "numpy": str(np.__version__),
            "cuda": None if torch.version.cuda is None else str(torch.version.cuda),
            "cudnn": None if cudnn is None else str(cudnn)}


def _version(package):
    """package.__version__, read from the package's version.py where it keeps it there
    (torchvision does: importing torchvision itself costs seconds at every run start)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for folder in spec.submodule_search_locations or ():
        try:
            with open(os.path.join(folder, "version.py")) as f:
                tree = ast.parse(f.read())
        except (OSError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets) \
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                return node.value.value
    try:
        return str(__import__(package).__version__)
    except ImportError:
        return None


def made_by(code_paths, data_sha1, noisy, device_name, inputs=None):
    """The record of what makes this run (config.json and summary.json's made_by); `inputs`,
    {flag: path} of the files outside the run folder it starts from (Method.inputs)."""
    record = {"code": {**source_identity(code_paths), **git_identity()},
              "command": [os.path.basename(sys.executable)] + sys.argv, "cwd": os.getcwd(),
              "versions": versions(), "device": device_name, "host": socket.gethostname(),
              "data": {"data_sha1": data_sha1, "labels_sha1": labels_sha1(noisy)}}
    if inputs:
        record["inputs"] = input_identity(inputs)
    return record


def file_sha1(path):
    """sha1 of a file's bytes, or None when it cannot be read."""
    digest = hashlib.sha1()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def input_identity(inputs):
    """{flag: {"path", "sha1"}} of a run's outside inputs; sha1 None for one that is gone."""
    return {flag: {"path": os.path.abspath(path), "sha1": file_sha1(path)} for flag, path in sorted(inputs.items())}


def what_changed(old, new):
    """["code: source hash 1a2b3c4d -> 5e6f7a8b (commit ...)", "data: ..."] between two
    made_by records ([] when the code and data are the same); a missing record is a change."""
    if not isinstance(old, dict) or not isinstance(old.get("code"), dict) or not isinstance(old.get("data"), dict):
        return ["the run records no code or data identity (it was made before this project recorded them)"]
    changes = []
    o, n = old["code"], new["code"]
    if o.get("source_sha1") != n["source_sha1"]:
        commits = ""
        if o.get("git_commit") or n.get("git_commit"):
            commits = (f" (commit {short(o.get('git_commit'))}{' with changes' if o.get('git_dirty') else ''}"
                       f" -> {short(n.get('git_commit'))}{' with changes' if n.get('git_dirty') else ''})")
        files = sorted(set(o.get("source_files") or []) ^ set(n["source_files"]))
        more = f"; files added or dropped: {', '.join(files[:5])}" if files else ""
        changes.append(f"code: source hash {short(o.get('source_sha1'))} -> {short(n['source_sha1'])}"
                       f"{commits}{more}")
    data = new.get("data") or {}  # absent when the data could not be loaded to check them
    for key, what in (("data_sha1", "data fingerprint"), ("labels_sha1", "noisy labels")):
        if key in data and old["data"].get(key) != data[key]:
            changes.append(f"data: {what} {short(old['data'].get(key))} -> {short(data[key])}")
    # an outside input is compared where it is there to be read (a run needs it no more)
    before = old.get("inputs") if isinstance(old.get("inputs"), dict) else {}
    for flag, entry in sorted((new.get("inputs") or {}).items()):
        was = before.get(flag) if isinstance(before.get(flag), dict) else {}
        if entry.get("sha1") is not None and was.get("sha1") != entry["sha1"]:
            changes.append(f"input: {flag} {entry['path']} sha1 {short(was.get('sha1'))} -> {short(entry['sha1'])}")
    return changes


def short(sha):
    return sha[:10] if isinstance(sha, str) else "none"
