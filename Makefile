# make demo: create .venv, install, run the offline digits demo.
# make test: create .venv, install, run the whole test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test install clean

$(VENV)/.installed: requirements.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt pytest pytest-xdist
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) demo.py

# Two workers, a test file each at a time: the SLURM tests (first) wait minutes on the
# cluster while the other files run beside them.
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) results/demo
