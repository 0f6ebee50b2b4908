# lwcontainer — the two commands README gives: `make image` and `make test`.
PYTHON  ?= python3
VENV    ?= .venv
PY      := $(abspath $(VENV))/bin/python
# The analysis to build. It is copied to a scratch directory first, like CI's fresh clone, because
# a CMS build script moves code out of the checkout into the image.
PROJECT ?= scripts/example-analysis
SCRATCH := build/image/$(notdir $(abspath $(PROJECT)))
# The test bed (scripts/testbed.sh) writes its addresses here.
TESTBED_ENV ?= /run/lwc-testbed/env

.PHONY: image test unit bench testbed testbed-down clean

$(VENV)/.installed: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[test]'
	touch $@

image: $(VENV)/.installed
	rm -rf $(SCRATCH) && mkdir -p $(dir $(SCRATCH))
	cp -a $(abspath $(PROJECT)) $(SCRATCH)
	chmod -R a+rwX $(SCRATCH)
	cd $(SCRATCH) && $(PY) -I -m lwcontainer

test: $(VENV)/.installed testbed
	LWC_TESTBED_ENV=$(TESTBED_ENV) $(PY) -m pytest; status=$$?; scripts/testbed.sh status; \
	exit $$status

unit: $(VENV)/.installed
	$(PY) -m pytest -m "not docker"

bench: $(VENV)/.installed testbed
	LWC_TESTBED_ENV=$(TESTBED_ENV) $(PY) scripts/bench.py

testbed:
	scripts/testbed.sh up

testbed-down:
	scripts/testbed.sh down

clean:
	rm -rf build $(VENV) .pytest_cache *.egg-info
