"""summarize.py RESULTS --status: the runs by state, read-only (report/status.py)."""
import fcntl
import json
import os

import summarize
from utils import identity as ident


def write_run(root, name, status, code):
    folder = root / name
    folder.mkdir(parents=True)
    made_by = {"code": code, "data": {}}
    (folder / "config.json").write_text(json.dumps({"seed": 0, "made_by": made_by}))
    if status is not None:
        (folder / "summary.json").write_text(json.dumps({"status": status, "made_by": made_by}))
    return str(folder)


def tree(root):
    """One run in each state; {state: folder}. The current code identity is computed here
    from the files train.py imports, as a run records it."""
    now = ident.source_identity([os.path.join(ident.ROOT, "train.py")])
    old = {**now, "source_sha1": "0" * 40}
    runs = {"finished": write_run(root, "a/finished", "finished", now),
            "stale": write_run(root, "a/stale", "finished", old),
            "diverged": write_run(root, "b/diverged", "diverged", now),
            "interrupted": write_run(root, "b/interrupted", "interrupted", now),
            "failed": write_run(root, "c/failed", "failed", now),
            "running": write_run(root, "c/running", "running", now),
            "killed": write_run(root, "c/killed", "running", now),   # no process behind it
            "unknown": write_run(root, "c/unknown", None, now)}
    return runs


def listed(text):
    """{state: [folders]} from the report's text."""
    states, current = {}, None
    for line in text.splitlines()[1:]:
        if line and not line.startswith(" "):
            current = line.split(":")[0]
            states[current] = []
        elif line.startswith("  "):
            states[current].append(line.strip())
    return states


def test_every_state_with_its_folders_and_nothing_written(tmp_path, capsys):
    runs = tree(tmp_path)
    before = sorted((p, os.path.getmtime(os.path.join(d, p))) for d, _, fs in os.walk(tmp_path) for p in fs)
    fd = os.open(os.path.join(runs["running"], ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a process training into the folder
    try:
        assert summarize.main([str(tmp_path), "--status"]) == 0
    finally:
        os.close(fd)
    os.remove(os.path.join(runs["running"], ".lock"))
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (f"{tmp_path}: 8 run(s): 1 running, 2 interrupted, 1 failed, 1 diverged, "
                                   "1 stale, 1 unknown, 1 finished")
    assert listed(out) == {"running": [runs["running"]], "interrupted": sorted([runs["interrupted"], runs["killed"]]),
                           "failed": [runs["failed"]], "diverged": [runs["diverged"]], "stale": [runs["stale"]],
                           "unknown": [runs["unknown"]], "finished": [runs["finished"]]}
    after = sorted((p, os.path.getmtime(os.path.join(d, p))) for d, _, fs in os.walk(tmp_path) for p in fs)
    assert after == before


def test_status_takes_no_output_options(tmp_path, capsys):
    tree(tmp_path)
    try:
        summarize.main([str(tmp_path), "--status", "--out", str(tmp_path / "o")])
    except SystemExit as exc:
        assert exc.code == 2
    assert "--status only lists the runs: drop --out" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_status_imports_neither_torch_nor_plotting(tmp_path):
    """summarize.py --status in a fresh process: the report's modules it imports need
    neither torch nor matplotlib nor scipy (importing any of them takes seconds)."""
    import subprocess
    import sys

    runs = tree(tmp_path)
    code = ("import sys, summarize; status = summarize.main([sys.argv[1], '--status']); "
            "print('heavy:', sorted(m for m in ('torch', 'matplotlib', 'scipy') if m in sys.modules)); "
            "sys.exit(status)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          cwd=ident.ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "heavy: []"
    assert f"  {runs['stale']}" in proc.stdout.splitlines()  # the report itself ran


def test_one_walk_of_a_results_tree(tmp_path):
    """--status and the tables find the same run folders, in the same order, through one walk
    (links to a folder read already are skipped by both)."""
    from report.runs import find_runs
    from report.status import run_folders

    runs = tree(tmp_path)
    os.symlink(tmp_path / "a", tmp_path / "d-link-to-a")
    os.symlink(tmp_path / "b", tmp_path / "b" / "cycle")
    folders = run_folders(str(tmp_path))
    assert folders == sorted(runs.values())
    assert [r["folder"] for r in find_runs(str(tmp_path))] == folders
