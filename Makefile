# xpm-broker — `make run` (local stack) and `make test` (everything CI runs) work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint typecheck unit bench package browser clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml clients/python/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip<26.3" "setuptools>=70" wheel
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e . -e clients/python
	@touch $@

install: $(STAMP)

browser:
	@scripts/ensure-chromium.sh

run: install
	$(BIN)/xpm-broker dev

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; any non-zero exit fails the target (and CI).
test: install browser lint typecheck
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench

# The AWS package (docs/operator.md): merge template from infra/, chalice package (arm64 zip +
# SAM template), cfn-lint. The region only picks service principals; nothing calls AWS.
STAGE       ?= prod
PACKAGE_DIR := build/package/$(STAGE)
package: install
	@mkdir -p build
	$(BIN)/python -m infra.iam
	$(BIN)/python -m infra.template --stage $(STAGE) > build/infra-$(STAGE).json
	rm -rf $(PACKAGE_DIR)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(BIN)/chalice package --stage $(STAGE) \
		--merge-template build/infra-$(STAGE).json $(PACKAGE_DIR)
	$(BIN)/cfn-lint $(PACKAGE_DIR)/sam.json
	@echo "packaged: $(PACKAGE_DIR)/sam.json + $(PACKAGE_DIR)/deployment.zip (lint clean)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
