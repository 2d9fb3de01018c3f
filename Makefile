# Fresh machine: `make demo` (set up + default grid + leaderboards) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BB := $(VENV)/bin/benchbench
# The torch build to install first; override for another platform, e.g.
#   make demo TORCH="torch==2.9.1 torchvision==0.24.1"
TORCH ?= torch==2.14.1 torchvision==0.29.1
PRESET ?= default
# Grid worker processes (each cell runs with the config's `threads`, default 1): tiny
# models use two single-threaded workers better than one two-threaded one. 2 is also
# `benchbench grid`'s own default.
JOBS ?= 2
PYTEST_ARGS ?=

.PHONY: install demo grid leaderboards test test-quick clean

# The install marker is named after what it installed (the contents of pyproject.toml and
# constraints.txt, TORCH, and this checkout, which the editable install points at), not
# dated: a fresh clone's files are newer than a shared VENV's marker, and a date rule
# would reinstall everything for them. A shared VENV runs the checkout installed last.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)-$(shell printf '%s' '$(TORCH) $(CURDIR)' | cksum | cut -d' ' -f1)

$(STAMP):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test,ray]" -c constraints.txt
	rm -f $(VENV)/.installed $(VENV)/.installed-*
	touch $@

install: $(STAMP)

grid: install
	$(BB) grid configs/clip-default.yaml --preset $(PRESET) --jobs $(JOBS)
	$(BB) grid configs/reid-default.yaml --preset $(PRESET) --jobs $(JOBS)

# The default preset's boards are the published ones; other presets write under runs/.
BOARDS ?= $(if $(filter default,$(PRESET)),leaderboards,runs/$(PRESET)/leaderboards)

demo: grid
	$(BB) leaderboard --store runs/$(PRESET)/results.sqlite --out $(BOARDS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-quick: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf runs/ .pytest_cache
