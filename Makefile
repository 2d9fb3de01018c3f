# Fresh machine: `make demo` (set up + default grid + leaderboards) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
BB := $(VENV)/bin/benchbench
# The torch build to install first; override for another platform, e.g.
#   make demo TORCH="torch==2.9.1 torchvision==0.24.1"
TORCH ?= torch==2.14.1 torchvision==0.29.1
PRESET ?= default
# Grid worker processes (each gets cores / JOBS torch threads): tiny models use two
# single-threaded workers better than one two-threaded one.
JOBS ?= 2
PYTEST_ARGS ?=

.PHONY: install demo grid leaderboards test test-quick clean

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test,ray]" -c constraints.txt
	touch $@

install: $(VENV)/.installed

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
