"""rerun.py RUN_DIR [FLAGS]: a run started again from the command its folder records."""
import json
import os
import subprocess
import sys

from conftest import ROOT, TINY, read_json, run_cli


def test_the_recorded_command_with_a_flag_changed_makes_the_other_run(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    # Started from another folder with a relative --result_dir: rerun.py runs it from there.
    first = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--method", "gce", *TINY,
                            "--width", "4", "--n_epoch", "1", "--result_dir", "res"],
                           cwd=work, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    folder = first.stdout.strip().splitlines()[-1].removeprefix("results: ")
    folder = os.path.join(work, folder)
    config = read_json(os.path.join(folder, "config.json"))
    assert config["made_by"]["cwd"] == str(work)

    shown = run_cli("rerun.py", folder, "--seed", "3", "--show")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"(in {work}) ") and shown.stdout.rstrip().endswith("--seed 3")
    assert not any("seed3" in d for d in os.listdir(os.path.dirname(folder)))  # --show runs nothing

    again = run_cli("rerun.py", folder, "--seed", "3")
    assert again.returncode == 0, again.stderr
    other = again.stdout.strip().splitlines()[-1].removeprefix("results: ")
    other = os.path.join(work, other)
    assert other != folder and "seed3" in os.path.basename(other)
    new = read_json(os.path.join(other, "config.json"))
    assert new["seed"] == 3 and {k: v for k, v in new.items() if k not in ("seed", "made_by")} == \
        {k: v for k, v in config.items() if k not in ("seed", "made_by")}


def test_a_folder_without_a_recorded_command_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"seed": 0}))
    out = run_cli("rerun.py", tmp_path)
    assert out.returncode == 2 and "records no command" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("rerun.py", tmp_path / "nothing")
    assert out.returncode == 2 and "config.json is missing" in out.stderr
