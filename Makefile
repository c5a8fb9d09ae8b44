# Every target installs what it needs first (make setup), so a fresh clone needs only `make demo` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# The torch wheel for this machine (CPU build on disk). GPU users: make setup TORCH="torch==2.13.0 --index-url <cuda index>"
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Every target runs as it stands on a fresh clone: its defaults live under $(DEMO), and a default
# input that is missing is made first (corpus → shards → run), as make demo does.
DEMO ?= demo

# make shards SRC=... DST=...: any fsspec URL (local folder or s3://bucket/prefix)
SRC ?= $(DEMO)/corpus
DST ?= $(DEMO)/shards
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
SHARD_MB ?= 64
PYTEST_ARGS ?=

.PHONY: setup system-packages test lint format corpus shards train lm eval demo screenshot bench clean

# The synthesisers behind the demo corpus (pipeline/corpus) and the lexicon its sentences come from.
DEBIAN_PACKAGES := festival flite festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festlex-cmu

# Idempotent: installs only what is missing; pip runs only when pyproject.toml changed or TORCH differs.
setup: system-packages
	@if [ ! -x $(BIN)/python ]; then $(PYTHON) -m venv $(VENV); fi
	@if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ] || [ "$$(cat $(STAMP))" != "$(TORCH)" ]; then \
		echo "installing into $(VENV) ($(TORCH) + project + test extra)"; \
		$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH) -e '.[test,corpus]' 2> >(grep -v "is ignored: it is neither" >&2) \
		&& echo "$(TORCH)" > $(STAMP); \
	fi

system-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "make setup: please install these Debian packages (or your system's festival, flite," \
			"their kal/ked/slt-hts voices and the CMU lexicon): $$missing" >&2; exit 1; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	@$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status

shards: setup
	@if [ "$(SRC)" = "$(DEMO)/corpus" ] && [ ! -f $(DEMO)/corpus/corpus.json ]; then $(MAKE) corpus DIR=$(DEMO)/corpus; fi
	$(BIN)/python -m pipeline --src $(SRC) --dst $(DST) --workers $(WORKERS) --shard-mb $(SHARD_MB)

# make corpus DIR=... TRAIN=... : synthesised speech in the HW3P2 layout (resumable; same seed, same bytes)
DIR ?= $(DEMO)/corpus
TRAIN ?= 3000
DEV ?= 300
TEST ?= 300
SEED ?= 0
corpus: setup
	$(BIN)/python -m pipeline.corpus --dst $(DIR) --train $(TRAIN) --dev $(DEV) --test $(TEST) --seed $(SEED) --workers $(WORKERS)

# make train DATA=... OUT=... [CONFIG=...] [RANKS=N] [ARGS="epochs=2 lr=1e-3"]: RANKS processes through
# `accelerate launch` (one per GPU, or gloo CPU processes of one thread each on a machine without one;
# max_frames is per rank). Continues OUT's latest checkpoint if it has one (any RANKS: the rest of an
# interrupted epoch is re-planned over the ranks there are).
DATA ?= $(DEMO)/shards
OUT ?= $(DEMO)/run
CONFIG ?= train/configs/cpu.yaml
RANKS ?= 1
ARGS ?=
train: setup
	@if [ "$(DATA)" = "$(DEMO)/shards" ] && [ ! -f $(DEMO)/shards/train/index.json ]; then $(MAKE) shards SRC=$(DEMO)/corpus DST=$(DEMO)/shards SHARD_MB=16; fi
	$(if $(filter 1,$(RANKS)),$(BIN)/python,OMP_NUM_THREADS=$$(( $(WORKERS) / $(RANKS) > 0 ? $(WORKERS) / $(RANKS) : 1 )) \
		$(BIN)/accelerate launch --config_file accelerate_config.yaml --num_processes $(RANKS)) train/main.py --config $(CONFIG) --data $(DATA) --out $(OUT) \
		$(ARGS)

# make lm [DATA=...] [ORDER=3] [LM_FILE=...]: a phoneme n-gram (ARPA) from DATA's train split; prints
# its dev perplexity
ORDER ?= 3
LM_FILE ?= $(DEMO)/lm/phones-$(ORDER).arpa
lm: setup
	@if [ "$(DATA)" = "$(DEMO)/shards" ] && [ ! -f $(DEMO)/shards/train/index.json ]; then $(MAKE) shards SRC=$(DEMO)/corpus DST=$(DEMO)/shards SHARD_MB=16; fi
	$(BIN)/python -m eval lm --data $(DATA) --order $(ORDER) --out $(LM_FILE)

# make eval [CHECKPOINT=model.pt or run folder (its latest; default OUT)] DATA=... SPLIT=test [SOLUTION=...]
#           SUBMISSION=... LEADERBOARD=... [PAGE=...html] [BEAM=50] [LM=ARPA file ALPHA=... BETA=...]
CHECKPOINT ?= $(OUT)
SPLIT ?= test
BEAM ?= 50
SOLUTION ?= $(if $(and $(filter $(DEMO)/shards,$(DATA)),$(filter test,$(SPLIT))),$(DEMO)/corpus/test_solution.csv)
SUBMISSION ?= $(OUT)/submission.csv
LEADERBOARD ?= $(OUT)/leaderboard.csv
PAGE ?= $(basename $(LEADERBOARD)).html
LM ?=
ALPHA ?= 0
BETA ?= 0
eval: setup
	@if [ "$(CHECKPOINT)" = "$(DEMO)/run" ] && [ ! -f $(DEMO)/run/checkpoints/latest.json ]; then $(MAKE) train RANKS=2; fi
	$(BIN)/python eval/main.py --checkpoint $(CHECKPOINT) --data $(DATA) --split $(SPLIT) --beam $(BEAM) \
		--submission $(SUBMISSION) --leaderboard $(LEADERBOARD) --decoders $(WORKERS) $(if $(SOLUTION),--solution $(SOLUTION)) \
		$(if $(LM),--lm $(LM) --alpha $(ALPHA) --beta $(BETA))
	$(BIN)/python -m eval leaderboard $(LEADERBOARD) --html $(PAGE)

# Everything under demo/: demo/corpus (HW3P2 layout) → demo/shards → demo/run (checkpoints, metrics,
# curves, TensorBoard events) → demo/lm/phones-3.arpa → the test split at beam 50 without and with that
# LM, scored against demo/corpus/test_solution.csv as Kaggle would: demo/submission-no-lm.csv and
# demo/submission.csv (+ .ids.csv each), two rows in demo/leaderboard.csv and its page
# demo/leaderboard.html. Each step resumes what is there.
# The LM weights were tuned on the demo's dev split (python -m eval tune; README, "LM figures").
DEMO_ALPHA ?= 0.1
DEMO_BETA ?= 0.5
demo: setup
	$(MAKE) corpus DIR=$(DEMO)/corpus
	$(MAKE) shards SRC=$(DEMO)/corpus DST=$(DEMO)/shards SHARD_MB=16
	$(MAKE) train DATA=$(DEMO)/shards OUT=$(DEMO)/run CONFIG=train/configs/cpu.yaml RANKS=2
	$(MAKE) lm DATA=$(DEMO)/shards ORDER=3 LM_FILE=$(DEMO)/lm/phones-3.arpa
	$(MAKE) eval DATA=$(DEMO)/shards OUT=$(DEMO)/run SPLIT=test SOLUTION=$(DEMO)/corpus/test_solution.csv \
		SUBMISSION=$(DEMO)/submission-no-lm.csv LEADERBOARD=$(DEMO)/leaderboard.csv
	$(MAKE) eval DATA=$(DEMO)/shards OUT=$(DEMO)/run SPLIT=test SOLUTION=$(DEMO)/corpus/test_solution.csv \
		SUBMISSION=$(DEMO)/submission.csv LEADERBOARD=$(DEMO)/leaderboard.csv \
		LM=$(DEMO)/lm/phones-3.arpa ALPHA=$(DEMO_ALPHA) BETA=$(DEMO_BETA)

# make screenshot [SHOT_PAGE=demo/leaderboard.html] [SHOT=docs/leaderboard-demo.png]: the page as headless
# Chromium draws it. Installs Debian's chromium (~290 MB) when missing: on purpose not part of setup.
SHOT_PAGE ?= $(DEMO)/leaderboard.html
SHOT ?= docs/leaderboard-demo.png
screenshot:
	@command -v chromium >/dev/null || $(MAKE) --no-print-directory system-packages DEBIAN_PACKAGES=chromium
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1400,1100 \
		--screenshot=$(abspath $(SHOT)) file://$(abspath $(SHOT_PAGE)) 2>/dev/null

bench: setup
	$(BIN)/python -m bench.sharding
	$(BIN)/python -m bench.corpus
	$(BIN)/python -m bench.loader

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
