# Two commands on a fresh machine: `make run` (the whole pipeline) and `make test`.
# Installs are stamped, so a second `make` with an unchanged pyproject.toml installs nothing.

VENV ?= .venv
# The built documentation site (git-ignored).
SITE ?= site
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BIN := $(VENV)/bin
# torch and torchvision are pinned exactly in pyproject.toml: pip takes them from this machine's disk.

.PHONY: run test test-quick test-long docs fuzz chaos install install-dev lint clean-venv

run: $(VENV)/.installed
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

# The tests come in three tiers (pyproject.toml's markers; docs/architecture.md#the-tests):
#   make test-quick  the in-process unit tests, under a minute: the inner loop (a test there that starts a
#                    process fails, naming the `slow` mark it needs)
#   make test        what CI and a developer run: ruff, the strict docs build, every test but the long ones,
#                    in TEST_WORKERS processes (one file per process: a file's tests share its fixtures and order)
#   make test-long   the long ones, listed in LONG_TESTS below; CI runs them after `make test`
# One OpenMP thread per test process: two workers with two threads each fight over the two cores.
TEST_WORKERS ?= 2
PYTEST := OMP_NUM_THREADS=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

test: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir $(SITE)
	$(PYTEST) -n $(TEST_WORKERS) --dist loadfile

test-quick: $(VENV)/.installed-dev
	WGAN_TEST_TIER=quick $(PYTEST) -m "not slow and not long" -p no:xdist -q

# The tests marked `long`, out of `make test` to keep it within five minutes; every assertion still runs here, and
# CI runs this after `make test` (docs/testing.md says why each moved):
#   test_train.py::test_real_mnist_generator_learns_the_background          a real training, 1-2 min
#   test_evaluate.py::test_classifier_reaches_99_percent_on_mnist             the project's classifier in full
#   test_evaluate.py::test_metrics_rank_degraded_samples_on_mnist             the same, ranking degraded samples
#   test_chaos.py::test_every_kill_point_ends_in_the_uninterrupted_run        the two points the docs promise
#   test_chaos.py::test_a_stopped_rank_ends_the_run_within_the_timeout_naming_it
#   test_chaos.py::test_a_user_error_is_not_restarted
#   test_distributed.py::test_sigterm_checkpoints_and_the_run_resumes_in_one_or_two_processes
#   test_distributed.py::test_wgan_gp_under_torchrun_matches_one_process       (the clipping run's 2 processes stay)
#   test_distributed.py::test_the_averaged_generator_under_two_processes_matches_one_process
#   test_distributed.py::test_a_killed_rank_ends_the_run_with_one_line_and_the_next_run_resumes
#   test_pipeline_distributed.py::test_two_process_exp_run_and_sharing_experiments_between_clones
#   test_reliability.py::test_ctrl_c_under_dvc_repro_then_repro_resumes       (/bin/bash and /bin/sh)
#   test_reliability.py::test_a_second_dvc_repro_is_refused_while_the_first_finishes
#   test_reliability.py::test_signal_saves_mid_epoch_and_resume_is_bit_identical   (the two averaged-generator cases)
#   test_quality.py::test_killed_run_resumes_with_exactly_the_kept_generators
#   test_conditional.py::test_unconditional_weights_are_bit_identical_to_the_code_before_this_model
#   test_perf_paths.py::test_gpu_check_runs_every_check_on_the_cpu             the GPU script on the CPU
#   test_perf_paths.py::test_cpu_weights_of_every_configuration_are_bit_identical_to_before_graphs   300 iterations
#   test_compare.py: the four tests on the sweep (seven DVC experiments) and the experiments of earlier commits
#   test_pipeline_full.py::test_a_train_param_reruns_train_never_the_data_or_the_classifier   (lr's exp run stays)
#   test_train.py::test_killed_run_resumes_to_the_uninterrupted_result        (the signal resumes stay)
#   test_export_stage.py::test_two_processes_write_the_same_bytes_and_wgan_sample_reads_the_folder
#   test_export_stage.py::test_the_export_stage_reruns_when_and_only_when_the_generator_its_sections_or_its_code_change
#   test_export_stage.py::test_the_registry_flow_gets_the_exact_bytes_of_a_version_and_a_stage
#   test_rerun.py (all 7: its own pipeline, a clone and a remote, DVC's queue, a killed run and its recovery)
#   test_pipeline_full.py::test_a_judge_param_reruns_judge_and_evaluate_never_quality   (a DVC experiment)
#   test_truncation.py::test_sample_and_interpolate_take_the_flag           the CLI's --truncation: default-size fits
test-long: $(VENV)/.installed-dev
	$(PYTEST) -m long -n $(TEST_WORKERS) --dist loadfile

# The documentation site (docs/, mkdocs.yml) as HTML in $(SITE); --strict fails on a broken link or anchor.
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(SITE)
	@echo "open $(SITE)/index.html"

# A long fuzzing run: FUZZ_EXAMPLES random examples per fuzz test (`make test` runs a fixed few hundred in all).
FUZZ_EXAMPLES ?= 2000
fuzz: $(VENV)/.installed-dev
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest tests/test_fuzz_params.py tests/test_fuzz_files.py \
		--hypothesis-show-statistics

# A long chaos run: CHAOS_POINTS seeded fault points (kills and hangs, tests/test_chaos.py); `make test` runs two.
# Prints each point's recovery time (seconds from the fault to the finished run) and the longest.
CHAOS_POINTS ?= 30
CHAOS_SEED ?= 0
chaos: $(VENV)/.installed-dev
	rm -f chaos-report.tsv
	CHAOS_POINTS=$(CHAOS_POINTS) CHAOS_SEED=$(CHAOS_SEED) CHAOS_REPORT=$(CURDIR)/chaos-report.tsv \
		PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest tests/test_chaos.py -k kill_point
	sort -n -k2 chaos-report.tsv | tail -1 | awk '{print "longest recovery: " $$2 " s (" $$1 ")"}'
	wc -l < chaos-report.tsv | awk '{print "points tried: " $$1}'

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

# --no-compile: pip would byte-compile all ~10,000 modules of the environment (torch alone: 2,352, 5 s of CPU
# here); Python compiles the few hundred a run imports on first use instead.
PIP_FLAGS := --quiet --disable-pip-version-check --no-compile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_FLAGS) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install $(PIP_FLAGS) -e '.[dev]'
	touch $@ $(VENV)/.installed

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src stages tests benchmarks tools

clean-venv:
	rm -rf $(VENV)
