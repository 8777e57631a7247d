# The two commands of the README:
#   make demo   set up .venv (if missing) and run the headline scenario
#   make test   set up .venv (if missing) and run the whole test suite in parallel
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
EXTRAS ?= all,test

.PHONY: demo test clean

comma := ,
INSTALLED := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

$(INSTALLED): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

demo: $(INSTALLED)
	$(PY) -m dllab run rl/q-learning-frozenlake

test: $(INSTALLED)
	$(PY) -m pytest -n auto

clean:
	rm -rf $(VENV) .tox runs
