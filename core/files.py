"""Files of the results contract, every one written atomically.

A write goes to a temporary file beside its target (a short name, so that a long target
name never exceeds the system's limit), is flushed to disk and renamed over the target:
a crash or a full disk leaves the old file or the new one, never half of one. A
temporary file left by a killed process (kill -9 between write and rename) is removed by
the next process that takes the run folder's lock (remove_leftovers).
"""
import csv
import errno
import io
import json
import os
import re
import stat
import sys

from errors import UserError

# The way on from a damaged run folder, or one that does not belong to the flags given.
RESTART = "start the run again with --if_exists overwrite"
# A writer's temporary files: ".tmp<pid>-<name>", and "<name>.tmp<pid>" of earlier versions.
TMP_PATTERN = re.compile(r"^\.tmp\d+-|\.tmp\d+$")
MAX_JSON_BYTES = 64 * 2 ** 20  # a summary or config is a few kB; anything this large is not ours
# Deeper JSON is not a file of this project (a summary is 5 levels deep); refusing it keeps
# every reader free of RecursionError.
MAX_JSON_DEPTH = 32
JSON_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def warn(message):
    print(f"warning: {message}", file=sys.stderr, flush=True)


def temporary_name(path):
    folder, name = os.path.split(path)
    return os.path.join(folder, f".tmp{os.getpid()}-{name[:80]}")


def atomic_write_bytes(path, data):
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.filename == tmp:  # the error names the file being written, not its temporary name
            exc.filename = path
        raise
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def atomic_write_text(path, text):
    """Text as UTF-8; file names that are not valid UTF-8 (read with os.fsdecode) keep their bytes."""
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def atomic_savefig(path, fig, **kwargs):
    """A matplotlib figure, written atomically like every other output."""
    buf = io.BytesIO()
    fig.savefig(buf, format=os.path.splitext(path)[1][1:] or "png", **kwargs)
    atomic_write_bytes(path, buf.getvalue())


def file_error(exc, folder=None):
    """One line for an OSError met while writing or opening a file: what the system said,
    the file, and the fix for that error. `folder`: the run folder, so that a file in a
    folder of its own (tensorboard/, or a link to elsewhere) gets that folder's fix, not
    the result folder's."""
    path = exc.filename or ""
    parent = os.path.dirname(path) if path else ""
    elsewhere = bool(folder and parent and os.path.realpath(parent) != os.path.realpath(folder))
    for link in (path, parent):
        if link and os.path.islink(link) and not os.path.exists(link):
            return f"{link} is a symbolic link to nothing ({os.readlink(link)}): remove the link or create its target"
    if exc.errno == errno.ENOSPC:
        fix = "free some space"
    elif exc.errno == errno.EDQUOT:
        fix = "free some of your quota"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = (f"make {parent} writable, or remove it (the run makes it again)" if elsewhere
               else "use a writable --result_dir" if exc.errno == errno.EROFS else "make it writable, or remove it")
    elif exc.errno in (errno.EISDIR, errno.ENOTDIR, errno.EEXIST):
        fix = "something else is in its place: remove that"
    elif exc.errno == errno.ENAMETOOLONG:
        fix = "use a shorter --result_dir"
    else:
        fix = ""
    where = f" ({path})" if path else ""
    return f"{exc.strerror or exc}{where}" + (f": {fix}" if fix else "")


def remove_leftovers(folder):
    """Delete the temporary files that killed writers left in `folder`; returns their names."""
    try:
        names = [n for n in os.listdir(folder) if TMP_PATTERN.search(n)]
    except OSError:
        return []
    for name in names:
        try:
            os.remove(os.path.join(folder, name))
        except OSError:
            pass
    return names


def write_csv(path, rows, columns):
    """Rows (dicts) as CSV with these columns, atomically: keys outside `columns` are left
    out; missing keys and None are written as empty fields."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_json_file(path):
    """A JSON object from `path`, or None with what is wrong: (obj, None) or (None, "is
    missing" / "is not a regular file" / "is not readable JSON (...)", nested more than
    MAX_JSON_DEPTH levels included / "holds a JSON list, not an object"). A FIFO or device
    is never opened (it could block forever)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, "is missing"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return None, "is not a regular file"
    if st.st_size > MAX_JSON_BYTES:
        return None, f"is not readable JSON (it is {st.st_size} bytes, far too large)"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        obj = json.loads(text)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror})"
    except RecursionError:
        return None, "is not readable JSON (nested too deeply)"
    except ValueError as exc:  # JSONDecodeError, and bytes that are not UTF-8
        return None, f"is not readable JSON ({exc.__class__.__name__})"
    if not isinstance(obj, dict):
        return None, f"holds a JSON {type(obj).__name__}, not an object"
    if json_depth(text) > MAX_JSON_DEPTH:
        return None, f"is not readable JSON (nested more than {MAX_JSON_DEPTH} levels deep)"
    return obj, None


def json_depth(text):
    """How deeply a JSON text nests lists and objects ({"a": [1]}: 2), counted on the text
    with its strings left out: a few times faster than walking the parsed object."""
    depth = deepest = 0
    for bracket in NOT_BRACKETS.sub("", JSON_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


NAME_MAX = 255  # bytes of one path component on Linux file systems


def existing_ancestor(path):
    """The nearest folder above `path` (or `path` itself) that exists."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def check_output_folder(what, path, fix="pass another folder", room=0, separators="\n\r"):
    """Refuse a folder a tool is about to write in, before anything is written: empty, with a
    line break (or another of `separators`: a tab where a tab-separated file lists it), a
    link to nothing, a file, under a file, not writable, or with a name longer than its file
    system allows (`room`: the longest name written inside it). `what` names it in the
    message ("--out", "the log folder (default of --log_dir)"), `fix` ends it."""
    check_folder_path(what, path, fix, separators)
    base = existing_ancestor(path)
    if not os.path.isdir(base):
        raise UserError(f"{what} {path} cannot be created: {base} is a file, so no folder can be made "
                        f"under it; {fix}")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path} cannot be written: {base} is not writable by you; {fix}")
    check_path_length(what, path, room)


def check_folder_path(what, path, fix="pass another folder", separators="\n\r", file_fix=None):
    """Refuse a folder path that is empty, holds a line break (or another of `separators`),
    is a link to nothing or a file (`file_fix` ends that message, else `fix`). A folder that
    does not exist yet passes: it is made when written."""
    if not path:
        raise UserError(f"{what} is empty (an unset shell variable?): pass a folder")
    if any(c in path for c in separators):
        raise UserError(f"{what} {path!r} holds a line break{' or a tab' if chr(9) in separators else ''}: "
                        "pass a folder name without one")
    if os.path.lexists(path) and not os.path.exists(path):
        raise UserError(f"{what} {path} is a symbolic link to nothing ({os.readlink(path)}): fix or remove "
                        f"the link, or {fix}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{what} {path} is a file, not a folder: {file_fix or fix}")


def check_path_length(what, path, room=0):
    """Refuse a path with a name longer than its file system allows, or longer as a whole
    (`room`: the longest name written inside it)."""
    full = os.fsencode(os.path.abspath(path))
    try:
        base = existing_ancestor(path)
        name_max, path_max = os.pathconf(base, "PC_NAME_MAX"), os.pathconf(base, "PC_PATH_MAX")
    except OSError:
        name_max, path_max = NAME_MAX, 4096
    long = [n for n in full.split(b"/") if len(n) > name_max]
    shown = path if len(path) < 100 else f"{path[:60]}...{path[-30:]}"
    if long:
        raise UserError(f"{what} {shown!r}: the name {os.fsdecode(long[0][:40])}... has {len(long[0])} "
                        f"bytes, and this file system allows {name_max}: use shorter names")
    if len(full) + room >= path_max:
        raise UserError(f"{what} {shown!r} is {len(full)} bytes long; with the files written there it "
                        f"would exceed this system's limit of {path_max}: use a shorter path")


def load_checkpoint(path, map_location="cpu", fix="pass a checkpoint written by this project"):
    """Our checkpoints hold tensors and plain Python values only: weights_only loading works.
    A missing or unreadable file is a UserError ending with `fix`, the caller's way on."""
    try:
        import torch

        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist: {fix}") from None
    except Exception as exc:
        raise UserError(f"checkpoint {path} cannot be read ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); it is damaged or "
                        f"not one of this project's checkpoints: {fix}") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {path} holds a {type(ckpt).__name__}, not one of this "
                        f"project's checkpoints: {fix}")
    return ckpt


class RunFolder:
    """A run folder's files: atomic writes, and reads that fail with the way on."""

    def __init__(self, path):
        self.path = path

    def file(self, name):
        return os.path.join(self.path, name)

    def has(self, name):
        return os.path.exists(self.file(name))

    def write_json(self, name, obj):
        atomic_write_text(self.file(name), json.dumps(obj, indent=2) + "\n")

    def read_json(self, name):
        """The JSON object in `name`; a damaged or missing file is a UserError naming it."""
        obj, problem = read_json_file(self.file(name))
        if obj is None:
            raise UserError(f"{self.file(name)} {problem}: the run folder is damaged; {RESTART}")
        return obj

    def write_csv(self, name, rows, columns):
        write_csv(self.file(name), rows, columns)

    def save_npy(self, name, array):
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, array)
        atomic_write_bytes(self.file(name), buf.getvalue())

    def load_npy(self, name):
        try:
            import numpy as np

            return np.load(self.file(name), allow_pickle=False)
        except FileNotFoundError:
            raise UserError(f"{self.file(name)} is missing: the run folder is damaged; {RESTART}") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{self.file(name)} cannot be read ({exc}): the run folder is damaged; "
                            f"{RESTART}") from None

    def save_checkpoint(self, name, state):
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(self.file(name), buf.getvalue())

    def load_checkpoint(self, name, map_location="cpu"):
        return load_checkpoint(self.file(name), map_location, fix=RESTART)

    def read_json_or_none(self, name):
        """The JSON object in `name`, or None when it is missing or unreadable."""
        return read_json_file(self.file(name))[0]

    def summary(self):
        return self.read_json_or_none("summary.json")

    def status(self):
        """'finished', 'diverged', 'interrupted', 'running' (or crashed), 'failed', or None
        when there is no readable summary."""
        summary = self.summary()
        return None if summary is None else summary.get("status")
