# Two set-up commands: `make demo` and `make test`.  Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned to the CPU build's release; for a CUDA build install
# torch==2.13.0 from the PyTorch index into .venv first (see README).
TORCH := torch==2.13.0
SAMPLE := Resources/Samples/ICH-sample.nii.gz
DEMO_OUT := demo_output

.PHONY: venv demo test lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ichseg demo --out $(DEMO_OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) gl-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q Testing

# Headless EGL/Mesa for the offscreen render test (Testing/test_slicer_render.py): installed only when
# missing and when running as root with apt-get; never fails the build (without it that test skips).
GL_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1
.PHONY: gl-deps
gl-deps:
	@if [ "$$(dpkg-query -W -f='$${db:Status-Abbrev}\n' $(GL_PACKAGES) 2>/dev/null | grep -c '^ii')" -lt $(words $(GL_PACKAGES)) ] \
	  && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "gl-deps: installing $(GL_PACKAGES)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	    $(GL_PACKAGES); } >/dev/null 2>&1 || echo "gl-deps: could not install $(GL_PACKAGES); the render test will skip"; \
	fi

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache *.egg-info
