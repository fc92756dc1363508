# Two commands do all the set-up on a fresh machine with Python 3.10+:
#   make demo   creates .venv, writes the built-in sample clip and runs facezoom on it (again: -y replaces out/)
#   make test   creates .venv and runs the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
OUT := out

.PHONY: demo docs test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("facezoom needs Python 3.10 or newer") if sys.version_info < (3, 10) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(OUT)
	$(BIN)/facezoom -y sample -o $(OUT)/sample.mp4
	$(BIN)/facezoom -y video $(OUT)/sample.mp4 -o $(OUT)/sample_facezoom.mp4 --report $(OUT)/sample_report.json
	$(BIN)/facezoom -q -y video $(OUT)/sample.mp4 -o $(OUT)/sample_side_by_side.mp4 --side-by-side --draw-boxes
	$(BIN)/facezoom -q -y sample -o $(OUT)/sample_face.png
	$(BIN)/facezoom -q -y enhance $(OUT)/sample_face.png -o $(OUT)/sample_invented.png --iterations 2 --samples 3 --set sr.backend=pulse --set sr.generator=dcgan-digiface-64
	@echo "wrote $(OUT)/sample_facezoom.mp4, $(OUT)/sample_report.json and $(OUT)/sample_side_by_side.mp4 (input | output, tracked boxes)"
	@echo "wrote $(OUT)/sample_invented.png: faces the demonstration prior dcgan-digiface-64 INVENTED from the sample's 16x16 face (not the person pictured)"

docs: $(STAMP)
	$(BIN)/python docs/make_pictures.py

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(OUT)
