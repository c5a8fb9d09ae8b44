"""Mutation testing of the modules that hold the README's guarantees (cosmic-ray), by hand or `make mutation`.

    python -m tests.mutation [--modules store,kaggle] [--out mutation]

For each module, cosmic-ray makes every small change its operators know (a comparison flipped, a
constant moved, a condition negated, a statement removed ...), one at a time, and runs the tests
that hold that module's guarantees; a mutant the tests fail on is killed, one they pass is a
survivor: either an equivalent mutant (no behaviour changed) or a guarantee no test checks.

It works on a copy of the committed code (a git worktree under OUT), never on the checkout,
because cosmic-ray edits the module's file in place while a mutant runs; PYTHONPATH points every
process the tests start (pipeline workers, training ranks) at that copy. Writes OUT/<name>.sqlite
(cosmic-ray's session: an interrupted run continues), OUT/<name>.survivors.txt (each survivor's
diff) and prints killed/survived per module. docs/mutation.md is the reading of those files.

    python -m tests.mutation --recheck [--modules store] [--out mutation]

applies each survivor of OUT/<name>.survivors.txt, one at a time, to a worktree of the current
HEAD (OUT/recheck) and runs the module's tests there, as they are now: the survivors that the
tests added since the run kill, and OUT/<name>.survivors-now.txt with the ones that still pass
(its "incompetent" column counts the survivors whose code has changed since, so no longer apply).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# module → the tests that hold its guarantees (fast ones: each mutant runs them), as files, or as
# node ids where a file also holds slow tests: a name that no longer exists fails the selection's
# check (tests/test_mutation.py) instead of silently dropping out, as a `-k` string would let it
MODULES: dict[str, tuple[str, list[str]]] = {
    "store": (
        "shards/store.py",
        ["tests/test_store.py", "tests/test_checkpoint.py", "tests/test_page.py", "tests/test_validate.py"],
    ),
    "kaggle": ("shards/kaggle.py", ["tests/test_kaggle.py"]),
    "sample": ("shards/sample.py", ["tests/test_sample.py"]),
    "writer": ("shards/writer.py", ["tests/test_writer.py"]),
    "batch": ("shards/batch.py", ["tests/test_batch.py"]),
    "retry": ("shards/retry.py", ["tests/test_retry.py"]),
    "layout": ("pipeline/layout.py", ["tests/test_layout.py"]),
    "progress": ("shards/progress.py", ["tests/test_progress.py"]),
    "s3": (
        "shards/s3.py",
        [
            "tests/test_s3.py",
            "tests/test_pipeline.py::test_a_store_that_answers_slow_down_is_retried_and_counted",
        ],
    ),
    "scan": ("pipeline/scan.py", ["tests/test_scan.py"]),
    "source": ("pipeline/source.py", ["tests/test_source.py"]),
    "report": ("train/report.py", ["tests/test_report.py"]),
    "rendezvous": ("train/rendezvous.py", ["tests/test_rendezvous.py"]),
    "options": ("eval/options.py", ["tests/test_options.py"]),
    "score": ("eval/score.py", ["tests/test_score.py"]),
    "validate": (
        "pipeline/validate.py",
        [
            "tests/test_validate.py",
            "tests/test_hostile.py::test_randomly_damaged_npy_files_are_each_kept_or_rejected",
            "tests/test_hostile.py::test_non_utf8_file_names_are_rejected_and_reported_visibly",
        ],
    ),
    "checkpoint": ("train/checkpoint.py", ["tests/test_checkpoint.py", "tests/test_config.py"]),
    # the quick ones first: pytest -x keeps this order, so most mutants die within seconds
    "leaderboard": ("eval/leaderboard.py", ["tests/test_leaderboard.py", "tests/test_page.py"]),
    "plan": ("shards/plan.py", ["tests/test_plan.py"]),
    "preemption": (
        "train/preemption.py",
        [
            "tests/test_preemption.py::test_the_watch_reports_a_signal_and_a_due_checkpoint_one_step_later",
            "tests/test_preemption.py::test_a_second_signal_to_the_watch_exits_at_once_with_128_plus_its_number",
            "tests/test_preemption.py::test_the_same_signal_again_at_once_is_an_echo_and_later_exits",
            "tests/test_preemption.py::test_only_the_same_signal_within_five_seconds_is_an_echo",
            "tests/test_preemption.py::test_sigterm_to_one_rank_stops_both_at_one_step_and_the_rerun_finishes_the_same",
            "tests/test_preemption.py::test_a_second_signal_to_a_training_rank_exits_at_once",
        ],
    ),
    "decode": (
        "eval/decode.py",
        [
            "tests/test_decode.py::test_ctcdecode_signature_is_its_order_and_defaults",
            "tests/test_decode.py::test_ctcdecode_positional_order_and_defaults",
            "tests/test_decode.py::test_settings_out_of_range_are_refused",
            "tests/test_decode.py::test_the_edges_of_each_range_are_accepted",
            "tests/test_decode.py::test_probs_of_another_shape_are_refused",
            "tests/test_decode.py::test_softmax_input_takes_exact_zeros_and_refuses_any_negative_value",
            "tests/test_decode.py::test_ctcdecode_greedy_results_are_the_best_paths",
            "tests/test_decode.py::test_ctcdecode_beam_search_decoder_1_and_2",
            "tests/test_decode.py::test_ctcdecode_beam_search_decoder_batch_and_batch_log",
            "tests/test_decode.py::test_ctcdecode_online_decoder_no_lm_one_call_and_two_calls",
            "tests/test_decode.py::test_ctcdecode_online_decoder_a_lot_of_calls_check_size",
            "tests/test_decode.py::test_ctcdecode_lm_cases_refuse_a_word_lm_naming_its_words",
            "tests/test_decode.py::test_every_beam_is_a_labelling_with_its_exact_probability_best_first",
            "tests/test_decode.py::test_a_blank_anywhere_gives_the_same_labellings",
            "tests/test_decode.py::test_cutoff_prob_keeps_the_fewest_labels_that_reach_it",
            "tests/test_decode.py::test_timesteps_are_where_each_label_peaks",
            "tests/test_decode.py::test_beam_search_never_loses_to_greedy",
            "tests/test_decode.py::test_greedy_matches_a_straightforward_reference",
            "tests/test_decode.py::test_threads_give_what_one_thread_gives",
            "tests/test_decode.py::test_num_processes_utterances_are_decoded_at_once_on_up_to_a_thread_per_core",
            "tests/test_decode.py::test_a_script_without_a_main_guard_decodes_on_threads",
            "tests/test_decode.py::test_online_decoding_needs_a_state_per_item_and_is_empty_until_the_end",
            "tests/test_decode.py::test_without_an_lm_alpha_and_beta_change_nothing_as_in_ctcdecode",
            "tests/test_decode.py::test_evaluations_decoder_is_greedy_below_beam_2_and_the_beam_takes_log_probs_and_a_bonus",
            "tests/test_decode.py::test_an_lm_at_alpha_0_and_beta_0_is_no_lm",
            "tests/test_decode.py::test_evaluations_defaults_are_beam_50_of_the_10_likeliest_on_one_thread_without_an_lm",
            "tests/test_decode.py::test_the_leaderboard_records_the_lm_and_its_weights_only_where_they_were_used",
            "tests/test_decode.py::test_emissions_reach_the_host_as_float32_whatever_their_tensor_s_precision",
        ],
    ),
    "metric": ("train/metric.py", ["tests/test_metric.py"]),
    "hardware": (
        "train/hardware.py",
        [
            "tests/test_hardware.py",
            "tests/test_model.py::test_the_lstm_leaves_a_cuda_bf16_autocast_and_keeps_every_other",
        ],
    ),
}
TIMEOUT_S = 600.0  # per mutant: a mutant that hangs a collective is killed by it (counted as killed)


def _worktree(out: Path, name: str = "tree") -> Path:
    tree = out / name
    if not tree.exists():  # an OUT deleted by hand leaves its worktrees registered: forget them first
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), "HEAD"], check=True)
    return tree


def _check_out_head(tree: Path) -> None:
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    )
    subprocess.run(["git", "-C", str(tree), "checkout", "-q", "--detach", head.stdout.strip()], check=True)


def _test_command(tests: list[str]) -> str:
    return f"{sys.executable} -m pytest -x -q -p no:cacheprovider {' '.join(tests)}"


def _check_baseline(name: str, tree: Path, tests: list[str], env: dict) -> None:
    """The selection passes on the unmutated tree; else every mutant would count as killed."""
    baseline = subprocess.run(_test_command(tests), shell=True, cwd=tree, env=env, capture_output=True)
    if baseline.returncode != 0:
        raise SystemExit(f"{name}: its tests fail on the tree itself, unmutated: {_test_command(tests)}")


def _config(tree: Path, module: str, tests: list[str]) -> str:
    command = _test_command(tests)
    return "\n".join(
        [
            "[cosmic-ray]",
            f'module-path = "{tree / module}"',
            f"timeout = {TIMEOUT_S}",
            "excluded-modules = []",
            f"test-command = {json.dumps(command)}",
            "[cosmic-ray.distributor]",
            'name = "local"',
            "",
        ]
    )


def _cosmic_ray(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    tool = Path(sys.executable).with_name("cosmic-ray")
    return subprocess.run([str(tool), *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)


def _outcomes(session: Path, tree: Path, env: dict) -> list[tuple[dict, dict | None]]:
    dump = _cosmic_ray("dump", str(session), cwd=tree, env=env).stdout
    return [tuple(json.loads(line)) for line in dump.splitlines() if line.strip()]


def run_module(name: str, tree: Path, out: Path) -> dict:
    module, tests = MODULES[name]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    config, session = out / f"{name}.toml", out / f"{name}.sqlite"
    config.write_text(_config(tree, module, tests))
    # a run killed mid-mutant leaves the mutant in the tree
    subprocess.run(["git", "-C", str(tree), "checkout", "--", module], check=True)
    if not session.exists():  # a new session mutates today's code; a resumed one the code it began on
        _check_out_head(tree)
    _check_baseline(name, tree, tests, env)
    if not session.exists():
        _cosmic_ray("init", str(config), str(session), cwd=tree, env=env)
    started = time.monotonic()
    # exec runs the pending mutants, restoring the file after each; progress: the session's done count
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("cosmic-ray")), "exec", str(config), str(session)],
        cwd=tree,
        env=env,
    )
    while process.poll() is None:
        time.sleep(30)
        done = [r for _, r in _outcomes(session, tree, env) if r is not None]
        total = len(_outcomes(session, tree, env))
        print(f"{name}: {len(done)}/{total} mutants run, {time.monotonic() - started:.0f} s", flush=True)
    if process.returncode != 0:
        raise SystemExit(f"{name}: cosmic-ray exec failed (exit {process.returncode})")
    subprocess.run(["git", "-C", str(tree), "checkout", "--", module], check=True)  # never left mutated
    results = [result for _, result in _outcomes(session, tree, env)]
    counts = {
        kind: sum(1 for r in results if r and r.get("test_outcome") == kind)
        for kind in ("killed", "survived", "incompetent")
    }
    survivors = [r["diff"] for r in results if r and r.get("test_outcome") == "survived"]
    (out / f"{name}.survivors.txt").write_text("\n".join(survivors))
    return {"module": module, "mutants": len(results), **counts}


def recheck_module(name: str, out: Path) -> dict:
    """Each survivor of an earlier run applied to the current HEAD, against the current tests."""
    module, tests = MODULES[name]
    tree = _worktree(out, "recheck")
    _check_out_head(tree)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    _check_baseline(name, tree, tests, env)
    text = (out / f"{name}.survivors.txt").read_text()
    survivors = [f"--- mutation diff ---{d}" for d in text.split("--- mutation diff ---") if d.strip()]
    still, gone, started = [], 0, time.monotonic()
    for k, diff in enumerate(survivors, 1):
        applied = subprocess.run(
            # fuzz 3: a hunk at the end of a file carries a blank context line past the last one
            # (cosmic-ray's diffs), which patch would otherwise reject; the changed line must match
            ["patch", "-s", "--fuzz=3", "--no-backup-if-mismatch", "-r", "-", str(tree / module)],
            input=diff,
            text=True,
            capture_output=True,
        )
        try:
            if applied.returncode != 0:
                gone += 1  # the code it mutated has changed since
                continue
            tested = subprocess.run(
                _test_command(tests), shell=True, cwd=tree, env=env, capture_output=True, timeout=TIMEOUT_S
            )
            if tested.returncode == 0:
                still.append(diff)
        except subprocess.TimeoutExpired:
            pass  # a hang is a kill, as in cosmic-ray's run
        finally:
            subprocess.run(["git", "-C", str(tree), "checkout", "--", module], check=True)
        print(
            f"{name}: {k}/{len(survivors)} survivors rechecked, {len(still)} still pass, "
            f"{time.monotonic() - started:.0f} s",
            flush=True,
        )
    (out / f"{name}.survivors-now.txt").write_text("\n".join(still))
    killed = len(survivors) - len(still) - gone
    return {
        "module": module,
        "mutants": len(survivors),
        "killed": killed,
        "survived": len(still),
        "incompetent": gone,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--modules", default=",".join(MODULES), help=f"comma-separated, of: {', '.join(MODULES)}"
    )
    parser.add_argument("--out", type=Path, default=REPO / "mutation", help="sessions, survivors, the copy")
    parser.add_argument("--recheck", action="store_true", help="rerun the survivors against today's tests")
    args = parser.parse_args()
    names = args.modules.split(",")
    unknown = [name for name in names if name not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.recheck:
        unrun = [name for name in names if not (args.out / f"{name}.survivors.txt").exists()]
        if unrun:
            parser.error(
                f"no run of {', '.join(unrun)} in {args.out} to recheck: run it first (without --recheck)"
            )
        rows = [recheck_module(name, args.out.resolve()) for name in names]
    else:
        tree = _worktree(args.out.resolve())
        rows = [run_module(name, tree, args.out.resolve()) for name in names]
    print(f"{'module':24} {'mutants':>8} {'killed':>7} {'survived':>9} {'incompetent':>12}")
    for row in rows:
        print(
            f"{row['module']:24} {row['mutants']:8} {row['killed']:7} {row['survived']:9} {row['incompetent']:12}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
