"""Values as the report compares and writes them: settings in one canonical form, text that
can be written as UTF-8 and shown on a terminal, and the formats of the tables' cells."""
import json
import math
import re

# Lone surrogates that are not an undecodable byte of a file name (those are \udc80-\udcff
# under os.fsdecode and are written back as the byte): they cannot be written at all.
LONE_SURROGATES = re.compile("[\ud800-\udc7f\udd00-\udfff]")


def safe_text(text):
    """`text` writable as UTF-8: a file name's undecodable bytes are kept, any other lone
    surrogate (a hand-written \\ud800 in a JSON file) becomes U+FFFD."""
    return LONE_SURROGATES.sub("\ufffd", text)


def printable(text):
    """`text` for the terminal: undecodable bytes of file names shown as U+FFFD."""
    return safe_text(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def is_finite(x):
    return is_number(x) and math.isfinite(x)


def is_count(x):
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def is_scalar(x):
    return isinstance(x, (str, bool)) or is_finite(x)


def canonical(value):
    """Equal numbers as one JSON value (0, 0.0 and -0.0; 2 and 2.0): they are one setting."""
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def same(a, b):
    """Equal as settings (canonical JSON)."""
    return json.dumps(canonical(a), sort_keys=True) == json.dumps(canonical(b), sort_keys=True)


# Characters of a hash that the tables show of a code or data version.
SHORT_HASH = 8


def short_hash(sha):
    """The first SHORT_HASH characters of a hash, as the tables show a version (None: unknown)."""
    return None if sha is None else sha[:SHORT_HASH]


def short_data_version(data):
    """A data version (the JSON text of made_by's data) as 'data/labels': the short hashes
    of the data fingerprint and of the noisy labels."""
    if data is None:
        return None
    record = json.loads(data)
    return "/".join(short_hash(str(record.get(k, "?"))) for k in ("data_sha1", "labels_sha1"))


def fmt_num(x):
    return "" if x is None else f"{x + 0.0:g}"  # + 0.0: -0.0 shows as 0


def fmt_knob(x):
    return fmt_num(x) if is_number(x) else str(x).lower() if isinstance(x, bool) else str(x)


def fmt_value(x):
    return " ".join(map(fmt_value, x)) if isinstance(x, list) else safe_text(str(x))


def fmt_acc(mean, std):
    if mean is None:
        return ""
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def md_row(cells):
    """A Markdown table row; a '|' inside a cell (a label, a path) is escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
