#!/bin/bash
# Issue 15's load check: N rounds of every multi-process test beside one busy-looping process.
#   bench/stress.sh 10      (run it from a separate clone with its own venv: make setup there)
# Prints one line per round; each round's pytest output is kept in stress-round-<i>.log.
cd "$(dirname "$0")/.."
yes > /dev/null &
HOG=$!
trap 'kill $HOG' EXIT
for i in $(seq 1 "${1:-10}"); do
  start=$(date +%s)
  .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_preemption.py \
    tests/test_train.py::test_two_accelerate_ranks_train_from_s3 \
    tests/test_eval.py::test_two_processes_write_the_same_submission_as_one \
    tests/test_eval.py::test_tune_scores_the_grid_on_all_ranks_as_on_one \
    tests/test_reader.py::test_two_accelerate_ranks_get_equal_batches_covering_everything > "stress-round-$i.log" 2>&1
  echo "round $i: rc $? $(( $(date +%s) - start )) s $(tail -1 "stress-round-$i.log")"
done
