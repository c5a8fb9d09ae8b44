# Every target installs what it needs first (make setup), so a fresh clone needs only `make demo` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# torch: a CUDA torch the base Python already has (Colab, NGC and cloud GPU images) is kept (the venv
# sees it); otherwise TORCH is installed, in a pip call of its own, from TORCH_INDEX when set. From the
# public index a Linux `pip install torch==2.13.0` is the CUDA build; this project's CI machines keep
# a CPU wheel of it on disk. CPU-only elsewhere: TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Every target runs as it stands on a fresh clone: its defaults live under $(DEMO), and a default
# input that is missing is made first (corpus → shards → run), as make demo does.
DEMO ?= demo

# make shards SRC=... DST=...: any fsspec URL (local folder or s3://bucket/prefix); WORKERS local
# processes, or SCHEDULER=tcp://HOST:PORT (or the file `dask scheduler --scheduler-file` wrote): its cluster
SRC ?= $(DEMO)/corpus
DST ?= $(DEMO)/shards
WORKERS ?= $(shell nproc 2>/dev/null || echo 2)
SCHEDULER ?=
PLACEMENT = $(if $(SCHEDULER),$(if $(findstring ://,$(SCHEDULER)),--scheduler,--scheduler-file) $(SCHEDULER),--workers $(WORKERS))
SHARD_MB ?= 64
PYTEST_ARGS ?=

.PHONY: setup system-packages kenlm python-version test test-all lint format corpus shards train lm eval demo screenshot bench mutation clean

# The synthesisers behind the demo corpus (pipeline/corpus) and the lexicon its sentences come from.
DEBIAN_PACKAGES := festival flite festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festlex-cmu

# Idempotent: installs only what is missing; pip runs only when pyproject.toml or the torch choice
# changed. Needs no Debian packages: only the targets that synthesise speech (corpus, demo, test) do.
# (asked once per make run, and only by the targets that install)
BASE_CUDA_TORCH = $(eval BASE_CUDA_TORCH := $(shell $(PYTHON) -c \
	"import torch; print(torch.__version__ if torch.version.cuda else '')" 2>/dev/null))$(BASE_CUDA_TORCH)
TORCH_CHOICE = $(if $(BASE_CUDA_TORCH),keep torch $(BASE_CUDA_TORCH) of $(PYTHON),$(TORCH)$(if $(TORCH_INDEX), from $(TORCH_INDEX)))
PIP = $(BIN)/pip install --quiet --disable-pip-version-check 2> >(grep -v "is ignored: it is neither" >&2)
setup:
	@if [ ! -x $(BIN)/python ]; then \
		$(PYTHON) -m venv $(if $(BASE_CUDA_TORCH),--system-site-packages) $(VENV) >/dev/null 2>&1 || { rm -rf $(VENV); \
		echo "make setup: $(PYTHON) cannot create a virtual environment: install its venv module" \
			"(Debian/Ubuntu: apt-get install python3-venv) or name another Python with PYTHON=..." >&2; exit 1; }; fi
	@if [ ! -f $(STAMP) ] || [ pyproject.toml -nt $(STAMP) ] || [ "$$(cat $(STAMP))" != "$(TORCH_CHOICE)" ]; then \
		echo "installing into $(VENV): torch ($(TORCH_CHOICE)), the project and its test and export extras"; \
		$(if $(BASE_CUDA_TORCH),true,$(PIP) $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))) \
		&& $(PIP) -e '.[test,export]' \
		&& echo "$(TORCH_CHOICE)" > $(STAMP); \
	fi

system-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian packages (the demo corpus's speech synthesisers, a compiler for KenLM): $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	elif command -v apt-get >/dev/null && command -v sudo >/dev/null; then \
		sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "make: the demo corpus needs these Debian packages; please install them (or your system's festival, flite," \
			"their kal/ked/slt-hts voices and the CMU lexicon): $$missing" >&2; exit 1; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The oldest Python the code needs, checked against requires-python (vermin reads the code, not a runtime).
MIN_PYTHON = $(shell sed -n 's/^requires-python = ">=\([0-9.]*\)"/\1/p' pyproject.toml)
# (--exclude str.decode: vermin reads bytes.decode calls as Python 2's str.decode)
PYTHON_SOURCES ?= pipeline shards train eval loopback bench tests
python-version: setup
	$(BIN)/vermin --no-tips --violations --eval-annotations --exclude str.decode -t=$(MIN_PYTHON)- $(PYTHON_SOURCES)

# KenLM's build_binary (ARPA → KenLM binary), which the tests of binary LMs use: compiled from the kenlm
# source package on PyPI (its query-only build: no Boost, no CMake), g++ installed first if missing.
KENLM_VERSION ?= 0.3.0
KENLM_SRC = $(VENV)/src/kenlm-$(KENLM_VERSION)
$(BIN)/build_binary:
	@$(MAKE) --no-print-directory setup
	@command -v g++ >/dev/null || $(MAKE) --no-print-directory system-packages DEBIAN_PACKAGES=g++
	@echo "compiling KenLM $(KENLM_VERSION)'s build_binary into $(BIN) (about a minute)"
	@rm -rf $(KENLM_SRC) && mkdir -p $(VENV)/src
	@$(BIN)/pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: --no-build-isolation \
		kenlm==$(KENLM_VERSION) -d $(VENV)/src 2> >(grep -v "is ignored: it is neither" >&2)
	@tar xzf $(VENV)/src/kenlm-$(KENLM_VERSION).tar.gz -C $(VENV)/src
	@cd $(KENLM_SRC) && CXXFLAGS=-O1 bash compile_query_only.sh >build.log 2>&1 || { tail -20 build.log >&2; exit 1; }
	@cp $(KENLM_SRC)/bin/build_binary $@
kenlm: $(BIN)/build_binary

# make test: the CI set (every guarantee's test; .ci/run); make test-all: also the cases marked slow.
# TEST_PROCESSES pytest processes (pytest-xdist), each taking whole test files, so a module's fixtures
# are built once: most tests wait on subprocesses, servers and files, so 2 on 2 cores finish in about
# two thirds of the time of 1 (docs/design.md, "Tests and CI"). TEST_PROCESSES=0: one process, in file order.
TEST_SELECTION ?= -m "not slow"
TEST_PROCESSES ?= $(WORKERS)
test: lint python-version system-packages $(BIN)/build_binary
	@$(BIN)/python -m pytest $(TEST_SELECTION) -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$status
test-all:
	@$(MAKE) --no-print-directory test TEST_SELECTION=

# make mutation [MODULES=store,kaggle,...]: mutation testing (cosmic-ray) of the modules that hold the
# README's guarantees, on a git worktree of HEAD under mutation/ (never the checkout); hours for all of
# them on 2 cores, so not part of make test. Resumable; docs/mutation.md reads its results.
COSMIC_RAY ?= cosmic-ray==8.7.0
MODULES ?=  # default: every module tests/mutation.py names
mutation: setup system-packages $(BIN)/build_binary
	@[ -x $(BIN)/cosmic-ray ] || $(PIP) $(COSMIC_RAY)
	$(BIN)/python -m tests.mutation $(if $(MODULES),--modules $(MODULES))

shards: setup
	@if [ "$(SRC)" = "$(DEMO)/corpus" ] && [ ! -f $(DEMO)/corpus/corpus.json ]; then $(MAKE) corpus DIR=$(DEMO)/corpus; fi
	$(BIN)/python -m pipeline --src $(SRC) --dst $(DST) $(PLACEMENT) --shard-mb $(SHARD_MB)

# make corpus DIR=... TRAIN=... : synthesised speech in the HW3P2 layout (resumable; same seed, same bytes)
DIR ?= $(DEMO)/corpus
TRAIN ?= 3000
DEV ?= 300
TEST ?= 300
SEED ?= 0
corpus: setup system-packages
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
# The LM weights were tuned on the demo's dev split (python -m eval tune; docs/results.md, "The phoneme LM").
DEMO_ALPHA ?= 0.1
DEMO_BETA ?= 0.5
demo: setup system-packages
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
