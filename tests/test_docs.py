"""The manual points only at what exists: every relative link of README.md and docs/*.md
leads to a file of the repository (and to a heading of it, when the link names one), every
`--flag` of a documented command is one that the command's own --help lists, and no page
of docs/ points outside the repository. No training: the scripts only print their --help,
in this process."""
import contextlib
import functools
import glob
import importlib.util
import io
import os
import re
import shlex
import sys

import pytest

from conftest import ROOT

PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
MANUAL = [p for p in PAGES if p.startswith("docs")]

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# A command: `python3 X.py ...`, `.venv/bin/python -m pkg.mod ...`, or an inline `X.py --flag`.
COMMAND = re.compile(r"(?:python3?\s+)?(-m\s+[\w.]+|(?<![\w/.-])[\w/]+\.py)(.*)")
FLAG = re.compile(r"(?<![\w'\"=-])(--[A-Za-z][\w-]*)")
HELP_FLAG = re.compile(r"(?<![\w-])(--[A-Za-z][\w-]*)")


def read(page):
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        return f.read()


# ---------------------------------------------------------------- links

def anchors(text):
    """The heading anchors GitHub makes: lower case, punctuation dropped, spaces as hyphens,
    a repeated heading numbered."""
    seen, out = {}, set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(page, text, root=ROOT):
    """(target, why) of every relative link of `text` (outside code blocks) that leads nowhere."""
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        full = os.path.normpath(os.path.join(root, os.path.dirname(page), path)) if path else os.path.join(root, page)
        if not os.path.exists(full):
            broken.append((target, "no such file"))
        elif anchor and full.endswith(".md"):
            with open(full, encoding="utf-8") as f:
                if anchor not in anchors(f.read()):
                    broken.append((target, "no such heading"))
    return broken


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_leads_to_a_file_and_heading(page):
    assert broken_links(page, read(page)) == []


@pytest.mark.parametrize("page", MANUAL)
def test_no_page_points_outside_the_repository(page):
    text = read(page)
    assert "../shared" not in text
    assert re.findall(r"\bissue\s*#?\d+", text, re.I) == []


# ---------------------------------------------------------------- commands and their flags

def commands(text):
    """(line number, target, the words after it) of every command in `text`, a backslash
    continuation joined to its line."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        number, line = i + 1, lines[i]
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i]
        for m in COMMAND.finditer(line):
            rest = re.split(r"`|;|&&|\|\||\s#|\)|\|", m.group(2))[0]
            found.append((number, m.group(1), rest))
        i += 1
    return found


@functools.lru_cache(maxsize=None)
def help_flags(script, *argv):
    """The flags `script argv --help` lists, read from its main() in this process; None
    when the script has no main (not a command of this repository)."""
    path = os.path.join(ROOT, script)
    name = "doc_help_" + re.sub(r"\W", "_", script)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(path))  # as `python3 script` has it: bench/common.py
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(os.path.dirname(path))
    if not hasattr(module, "main"):
        return None
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), pytest.raises(SystemExit):
        module.main([*argv, "--help"])
    return frozenset(HELP_FLAG.findall(out.getvalue()))


def method_names():
    from methods import methods
    return set(methods())


SWEEP_STAGES = {"gls": ("main_warmup.py", "main_GLS_load.py", "main_GLS_direct_train.py"),
                "sln": ("noise_cifar_train.py",)}


def known_flags(target, words):
    """The flags the command `target words` accepts, or None for a command this check
    cannot resolve: not a file of the repository, or a placeholder (`--method NAME`,
    `sweep.py SCRIPT`) or an example method that methods/ does not hold."""
    if target.startswith("-m"):
        target = target.split()[1].replace(".", "/") + ".py"
    if not os.path.isfile(os.path.join(ROOT, target)):
        return None
    method = re.search(r"--method[= ](\S+)", words)
    method_argv = ()
    if method:
        if method.group(1) not in method_names():
            return None
        method_argv = ("--method", method.group(1))
    if target == "sweep.py":
        stage = (shlex.split(words) or [""])[0]
        scripts = SWEEP_STAGES.get(stage, (stage,) if stage.endswith(".py") else None)
        if scripts is None or not all(os.path.isfile(os.path.join(ROOT, s)) for s in scripts):
            return None
        # Flags the sweep does not know go to every run: the runs' scripts' flags count too.
        known = set(help_flags(target, stage))
        # a method grid (--grid "method=a b"): each method's flags go to its runs
        grid = re.search(r"--grid[= ]['\"]?method=([^'\"]+)", words)
        argvs = [("--method", m) for m in grid.group(1).split()] if grid else [method_argv]
        if grid and not set(grid.group(1).split()) <= set(method_names()):
            return None
        for script in scripts:
            for argv in argvs if script == "train.py" else [()]:
                known |= help_flags(script, *argv)
        return known
    if target == "rerun.py":
        # Every word after the run folder goes to the run's script: any script's flags count.
        scripts = [f for f in os.listdir(ROOT) if f.endswith(".py") and help_flags(f) is not None
                   and f not in ("rerun.py", "sweep.py", "summarize.py", "demo.py", "preflight.py")]
        return set(help_flags(target)).union(*(help_flags(s) for s in scripts))
    if target == "train.py":
        # A flag of another method is refused by name (the manual shows such refusals): it
        # exists, so the flags of every method count.
        return set(help_flags(target, *method_argv)).union(*(help_flags(target, "--method", m)
                                                            for m in method_names()))
    return help_flags(target, *method_argv)


def unknown_flags(text):
    """(line, command, flag) of every documented flag its command's --help does not list."""
    unknown = []
    for number, target, words in commands(text):
        flags = FLAG.findall(words)
        if not flags or target.startswith("-m pytest"):
            continue
        known = known_flags(target, words)
        if known is None:
            continue
        unknown += [(number, target, flag) for flag in flags if flag not in known]
    return unknown


@pytest.mark.parametrize("page", PAGES)
def test_every_documented_flag_is_in_its_commands_help(page):
    assert unknown_flags(read(page)) == []


def test_the_checks_find_a_broken_link_a_missing_heading_and_an_unknown_flag(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "B.md").write_text("# Title\n\n## The part: one, two\n")
    page = ("[ok](B.md#the-part-one-two) [gone](C.md) [bad](B.md#the-part) [web](https://x.org/C.md)\n"
            "```\n[in code](D.md)\n```\n")
    assert broken_links("docs/A.md", page, root=str(tmp_path)) == [("C.md", "no such file"),
                                                                   ("B.md#the-part", "no such heading")]
    doc = ("```\npython3 main_warmup.py --noise_type sym \\\n    --no_such_flag 1   # --not_a_flag\n```\n"
           "`main_GLS_load.py --warmup_ckpt last` and `python3 train.py --method NAME --whatever`\n"
           "python3 sweep.py gls --smooth_rates '0.4' --n_epoch 3 --gpus_typo 0\n"
           "python3 sweep.py train.py --grid \"method=gce sce\" --q 0.7 --sce_beta 1 --model_typo x\n")
    assert unknown_flags(doc) == [(2, "main_warmup.py", "--no_such_flag"), (6, "sweep.py", "--gpus_typo"),
                                  (7, "sweep.py", "--model_typo")]


def test_the_readme_is_a_front_page():
    """At most 200 lines, pointing nowhere outside the repository, and every page of the
    manual linked from it."""
    text = read("README.md")
    assert len(text.splitlines()) <= 200
    assert "../shared" not in text and re.findall(r"\bissue\s*#?\d+", text, re.I) == []
    linked = set(re.findall(r"\]\((docs/[\w.]+\.md)", text))
    assert set(MANUAL) - {"README.md"} <= linked, sorted(set(MANUAL) - {"README.md"} - linked)


# ---------------------------------------------------------------- figures

IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)")
MADE_BY = re.compile(r"Made by: (.*?)(?:\n\n|$)", re.S)


def figures():
    """(page, image path, the text of its "Made by:" paragraph or None) of every embedded PNG."""
    for page in PAGES:
        text = read(page)
        for m in IMAGE.finditer(text):
            made = MADE_BY.match(text[m.end():].lstrip("\n"))
            yield page, os.path.normpath(os.path.join(ROOT, os.path.dirname(page), m.group(1))), \
                made and " ".join(made.group(1).split())


@pytest.mark.parametrize("page,image,made_by", list(figures()), ids=lambda v: os.path.basename(str(v)))
def test_every_figure_exists_and_names_the_command_that_makes_it(page, image, made_by):
    assert os.path.isfile(image), f"{page} embeds {image}, which is missing"
    assert made_by and "summarize.py" in made_by, f"{page}: {image} has no 'Made by:' command after it"


def test_the_demo_figures_command_makes_the_file_it_names(tmp_path):
    """The summarize.py command a figure names, run on a small tree of SLN runs with the
    memorisation columns, writes the file the docs say the figure is."""
    import summarize
    from test_summarize import sln

    (made,) = [m for _, image, m in figures() if image.endswith("demo_memorisation_sln.png")]
    words = shlex.split(re.search(r"`python3 summarize\.py ([^`]*)`", made).group(1))
    produced = re.search(r"whose `([^`]+\.png)`", made).group(1)
    results = tmp_path / "results" / "demo"
    for sigma in (0.0, 0.5):
        for seed in (0, 1):
            sln(results, sigma, seed, (80.0, 85.0), metrics={"test_acc": [60.0, 70.0], "fit_clean": [50.0, 70.0],
                                                          "mem_noisy": [5.0, 9.0 - 8 * sigma]})
    out = tmp_path / words[words.index("--out") + 1]
    words[words.index("--out") + 1] = str(out)
    words[0] = str(results)
    assert summarize.main(words) == 0
    assert (out / produced).is_file()
