"""The beam decoders: ctcdecode's own test cases, its interface, exhaustive search, token LMs, online decoding."""

import inspect
import itertools
import math
import subprocess
import sys
import threading
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

from eval import token_lm
from eval.arpa import END, arpa_bytes
from eval.decode import CTCBeamDecoder, DecoderState, Decoding, GreedyDecoder, OnlineCTCBeamDecoder, on_host
from eval.lm import estimate
from eval.prefix_beam import _candidates
from eval.token_lm import LMError
from shards.errors import UserError
from shards.vocab import BLANK as BLANK_INDEX
from shards.vocab import PHONEME_MAP, PHONEMES
from train.metric import collapse

# --- ctcdecode's tests/test_decode.py (parlance/ctcdecode, master): its inputs and expected outputs

VOCAB = ["'", " ", "a", "b", "c", "d", "_"]
BLANK = VOCAB.index("_")
BEAM = 20
PROBS_1 = [
    [0.06390443, 0.21124858, 0.27323887, 0.06870235, 0.0361254, 0.18184413, 0.16493624],
    [0.03309247, 0.22866108, 0.24390638, 0.09699597, 0.31895462, 0.0094893, 0.06890021],
    [0.218104, 0.19992557, 0.18245131, 0.08503348, 0.14903535, 0.08424043, 0.08120984],
    [0.12094152, 0.19162472, 0.01473646, 0.28045061, 0.24246305, 0.05206269, 0.09772094],
    [0.1333387, 0.00550838, 0.00301669, 0.21745861, 0.20803985, 0.41317442, 0.01946335],
    [0.16468227, 0.1980699, 0.1906545, 0.18963251, 0.19860937, 0.04377724, 0.01457421],
]
PROBS_2 = [
    [0.08034842, 0.22671944, 0.05799633, 0.36814645, 0.11307441, 0.04468023, 0.10903471],
    [0.09742457, 0.12959763, 0.09435383, 0.21889204, 0.15113123, 0.10219457, 0.20640612],
    [0.45033529, 0.09091417, 0.15333208, 0.07939558, 0.08649316, 0.12298585, 0.01654384],
    [0.02512238, 0.22079203, 0.19664364, 0.11906379, 0.07816055, 0.22538587, 0.13483174],
    [0.17928453, 0.06065261, 0.41153005, 0.1172041, 0.11880313, 0.07113197, 0.04139363],
    [0.15882358, 0.1235788, 0.23376776, 0.20510435, 0.00279306, 0.05294827, 0.22298418],
]
GREEDY = ["ac'bdc", "b'da"]
BEAM_SEARCH = ["acdc", "b'a", "a a"]  # the third: PROBS_2 with ctcdecode's word LM test.arpa


def _best_string(outputs, item: int) -> str:
    results, _, _, out_lens = outputs
    return "".join(VOCAB[k] for k in results[item][0][: out_lens[item][0]])


@pytest.mark.parametrize(("probs", "expected"), [(PROBS_1, BEAM_SEARCH[0]), (PROBS_2, BEAM_SEARCH[1])])
def test_ctcdecode_beam_search_decoder_1_and_2(probs, expected):
    decoder = CTCBeamDecoder(VOCAB, beam_width=BEAM, blank_id=BLANK)
    assert _best_string(decoder.decode(torch.FloatTensor([probs])), 0) == expected


@pytest.mark.parametrize("log_probs_input", [False, True])
def test_ctcdecode_beam_search_decoder_batch_and_batch_log(log_probs_input):
    probs = torch.FloatTensor([PROBS_1, PROBS_2])
    decoder = CTCBeamDecoder(
        VOCAB, beam_width=BEAM, blank_id=BLANK, num_processes=24, log_probs_input=log_probs_input
    )
    outputs = decoder.decode(probs.log() if log_probs_input else probs)
    assert [_best_string(outputs, 0), _best_string(outputs, 1)] == BEAM_SEARCH[:2]
    decoder.close()


def test_ctcdecode_greedy_results_are_the_best_paths():
    log_probs = torch.FloatTensor([PROBS_1, PROBS_2]).log()
    blank_first = log_probs[..., [BLANK, *range(BLANK)]]  # the greedy decoder's blank is index 0
    found = GreedyDecoder().best(blank_first, torch.tensor([6, 6]))
    labels = ["_", *VOCAB[:BLANK]]
    assert ["".join(labels[k] for k in h[0].labels) for h in found] == GREEDY


def test_ctcdecode_online_decoder_no_lm_one_call_and_two_calls():
    decoder = OnlineCTCBeamDecoder(
        VOCAB, beam_width=BEAM, blank_id=BLANK, log_probs_input=True, num_processes=24
    )
    probs = torch.FloatTensor([PROBS_1, PROBS_2]).log()
    states = [DecoderState(decoder), DecoderState(decoder)]
    outputs = decoder.decode(probs, states, [True, True])
    assert [_best_string(outputs, 0), _best_string(outputs, 1)] == BEAM_SEARCH[:2]
    states = [DecoderState(decoder), DecoderState(decoder)]
    decoder.decode(probs[:, :2], states, [False, False])
    outputs = decoder.decode(probs[:, 2:], states, [True, True])
    assert [_best_string(outputs, 0), _best_string(outputs, 1)] == BEAM_SEARCH[:2]


def test_ctcdecode_online_decoder_a_lot_of_calls_check_size():
    decoder = OnlineCTCBeamDecoder(
        VOCAB, beam_width=BEAM, blank_id=BLANK, log_probs_input=True, num_processes=24
    )
    state = DecoderState(decoder)
    probs = torch.FloatTensor([PROBS_1]).log()
    for _ in range(1000):
        decoder.decode(probs, [state], [False, False])
    results, _, timesteps, out_lens = decoder.decode(probs, [state], [True, True])
    assert results.shape[2] >= out_lens.max() > 0
    assert timesteps[0, 0, out_lens[0, 0] - 1] < 1001 * 6  # frames count on across the calls


def _word_lm(tmp_path) -> str:
    """An English word trigram like ctcdecode's test.arpa (its words: 'a', 'little', 'higher', …)."""
    sentences = [s.split() for s in ("a little higher", "a little", "also consider a call", "i a")]
    path = tmp_path / "words.arpa"
    path.write_bytes(arpa_bytes(estimate(sentences, 3, sorted({w for s in sentences for w in s}))))
    return str(path)


@pytest.mark.parametrize("online", [False, True])
def test_ctcdecode_lm_cases_refuse_a_word_lm_naming_its_words(online, tmp_path):
    """ctcdecode's decoder_3 and its online LM cases expect 'a a' from a word LM, which ctcdecode
    scores at the space label with words spelled from a dictionary: unsupported, so refused."""
    kind = OnlineCTCBeamDecoder if online else CTCBeamDecoder
    with pytest.raises(LMError, match=r"words.arpa: 6 of its 7 words are not labels .*'also'.*word LM"):
        kind(VOCAB, beam_width=BEAM, blank_id=BLANK, model_path=_word_lm(tmp_path))


# --- ctcdecode's interface: what its suite does not test -----------------------------------


def test_ctcdecode_positional_order_and_defaults():
    probs = torch.FloatTensor([PROBS_1, PROBS_2])
    positional = CTCBeamDecoder(VOCAB, None, 0, 0, 3, 1.0, 5, 1, BLANK, False)
    keywords = CTCBeamDecoder(VOCAB, cutoff_top_n=3, beam_width=5, num_processes=1, blank_id=BLANK)
    assert all(
        torch.equal(a, b) for a, b in zip(positional.decode(probs), keywords.decode(probs), strict=True)
    )
    defaults = CTCBeamDecoder(VOCAB, blank_id=BLANK)
    results, scores, timesteps, out_lens = defaults.decode(probs)  # seq_lens optional: the full length
    # ctcdecode's defaults: beam 100, softmax input, every beam returned; int32 and float32
    assert results.shape == timesteps.shape == (2, 100, 6) and scores.shape == out_lens.shape == (2, 100)
    assert (results.dtype, timesteps.dtype, scores.dtype, out_lens.dtype) == (torch.int32,) * 2 + (
        torch.float32,
        torch.int32,
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            defaults.decode(probs, None), defaults.decode(probs, torch.tensor([6, 6])), strict=True
        )
    )
    assert (defaults.character_based(), defaults.max_order(), defaults.dict_size()) == (None, None, None)
    with pytest.raises(ValueError, match="negative values: log-probabilities. pass log_probs_input=True"):
        defaults.decode(probs.log())  # ctcdecode would take the log of a log, silently


def test_ctcdecode_signature_is_its_order_and_defaults():
    parameters = inspect.signature(CTCBeamDecoder).parameters
    ctcdecode = {
        "labels": inspect.Parameter.empty,
        "model_path": None,
        "alpha": 0,
        "beta": 0,
        "cutoff_top_n": 40,
        "cutoff_prob": 1.0,
        "beam_width": 100,
        "num_processes": 4,
        "blank_id": 0,
        "log_probs_input": False,
    }
    positional = [n for n, p in parameters.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    assert positional == list(ctcdecode)
    assert {name: parameters[name].default for name in ctcdecode} == ctcdecode


@pytest.mark.parametrize(
    "setting",
    [
        {"beam_width": 0},
        {"cutoff_top_n": 0},
        {"cutoff_prob": 0.0},
        {"cutoff_prob": -0.5},
        {"cutoff_prob": 1.5},
        {"blank_id": -1},
        {"blank_id": len(VOCAB)},
        {"blank_id": len(VOCAB) + 1},
    ],
)
def test_settings_out_of_range_are_refused(setting):
    with pytest.raises(ValueError, match=next(iter(setting))):
        CTCBeamDecoder(VOCAB, **{"blank_id": BLANK, **setting})


def test_the_edges_of_each_range_are_accepted():
    probs = torch.FloatTensor([PROBS_1, PROBS_2])  # two items: num_processes 0 still decodes on threads
    for setting in (
        {"beam_width": 1},
        {"cutoff_top_n": 1},
        {"cutoff_prob": 1e-6},
        {"cutoff_prob": 1.0},
        {"blank_id": 0},
        {"blank_id": len(VOCAB) - 1},
        {"num_processes": 0},
    ):
        *_, out_lens = CTCBeamDecoder(VOCAB, **{"blank_id": BLANK, **setting}).decode(probs)
        assert out_lens[:, 0].min() > 0, setting


@pytest.mark.parametrize("shape", [(6, 7), (1, 1, 6, 7), (1, 6, 7, 7), (1, 6, 6), (1, 6, 8)])
def test_probs_of_another_shape_are_refused(shape):
    with pytest.raises(ValueError, match=r"probs must be \(batch, time, 7 labels\)"):
        CTCBeamDecoder(VOCAB, blank_id=BLANK).decode(torch.full(shape, 1 / 7))


def test_softmax_input_takes_exact_zeros_and_refuses_any_negative_value():
    one_hot = torch.eye(len(VOCAB))[[2, 2, BLANK, 3]][None]  # "a", blank, "b": probability 1
    results, scores, _, out_lens = CTCBeamDecoder(VOCAB, beam_width=3, blank_id=BLANK).decode(one_hot)
    assert results[0, 0, : out_lens[0, 0]].tolist() == [2, 3] and scores[0, 0] == pytest.approx(0, abs=1e-5)
    log_probs = torch.full((1, 2, len(VOCAB)), 1 / len(VOCAB))
    log_probs[0, 1, 0] = -0.5  # a log-probability above -1 is negative too
    with pytest.raises(ValueError, match="negative values"):
        CTCBeamDecoder(VOCAB, blank_id=BLANK).decode(log_probs)


def test_online_decoding_needs_a_state_per_item_and_is_empty_until_the_end():
    decoder = OnlineCTCBeamDecoder(VOCAB, beam_width=BEAM, blank_id=BLANK)
    probs = torch.FloatTensor([PROBS_1, PROBS_2])
    for count in (1, 3):
        with pytest.raises(ValueError, match=f"{count} decoder states for a batch of 2"):
            decoder.decode(probs, [DecoderState(decoder) for _ in range(count)], [True] * count)
    results, _, timesteps, out_lens = decoder.decode(probs, [DecoderState(decoder)] * 2, [False, False])
    assert results.shape == timesteps.shape == (2, BEAM, 0) and int(out_lens.sum()) == 0


def test_without_an_lm_alpha_and_beta_change_nothing_as_in_ctcdecode(tmp_path):
    probs = torch.FloatTensor([PROBS_1, PROBS_2])
    plain = CTCBeamDecoder(VOCAB, beam_width=BEAM, blank_id=BLANK).decode(probs)
    weighted = CTCBeamDecoder(VOCAB, None, 2.0, 3.0, beam_width=BEAM, blank_id=BLANK).decode(probs)
    assert all(torch.equal(a, b) for a, b in zip(plain, weighted, strict=True))
    # an LM given without alpha or beta weighs nothing either: ctcdecode's defaults are 0
    lm_only = CTCBeamDecoder("abc_", _character_lm(tmp_path, 3), beam_width=16, blank_id=3)
    four = (torch.randn(2, 20, 4, generator=torch.Generator().manual_seed(1)) * 3).softmax(-1)
    no_lm = CTCBeamDecoder("abc_", beam_width=16, blank_id=3)
    assert all(torch.equal(a, b) for a, b in zip(no_lm.decode(four), lm_only.decode(four), strict=True))


def test_evaluations_decoder_is_greedy_below_beam_2_and_the_beam_takes_log_probs_and_a_bonus():
    logits = torch.randn(1, 12, 41, generator=torch.Generator().manual_seed(3))
    logits[..., BLANK_INDEX] += 4  # mostly blank: a short best labelling, which a bonus lengthens
    log_probs, lengths = logits.log_softmax(-1), torch.tensor([12])
    for beam in (0, 1):
        greedy = Decoding(beam, 10).decoder()
        assert isinstance(greedy, GreedyDecoder)
        (best,) = greedy.best(log_probs, lengths)[0]
        assert (best.frames, best.score) == ([], 0.0)  # transcribe's "score 0 greedy"
        for lm, beta in (("phones.arpa", 0.0), (None, 0.5), (None, -0.5)):
            with pytest.raises(UserError, match="needs a beam search"):
                Decoding(beam, 10, lm=lm, beta=beta).decoder()
    beam = Decoding(2, 10).decoder()
    plain = beam.decode(log_probs, lengths)  # log-probabilities: no "negative values" refusal
    with_bonus = Decoding(2, 10, beta=5.0).decoder().best(log_probs, lengths)[0][0]
    assert len(with_bonus.labels) > int(plain[3][0, 0])  # a per-phoneme bonus without an LM


def test_evaluations_defaults_are_beam_50_of_the_10_likeliest_on_one_thread_without_an_lm():
    """Decoding is the one home of evaluate's, watch's, tune's and transcribe's decoding defaults."""
    default = Decoding()
    assert (default.beam, default.top_n, default.decoders, default.lm, default.alpha, default.beta) == (
        50,
        10,
        1,
        None,
        0.0,
        0.0,
    )
    beam = default.decoder()
    assert (beam._beam_width, beam._cutoff_top_n, beam._threads.count) == (50, 10, 1)


def test_the_leaderboard_records_the_lm_and_its_weights_only_where_they_were_used():
    assert Decoding().cells() == {"lm": "", "alpha": "", "beta": ""}
    assert Decoding(beta=0.5).cells() == {"lm": "", "alpha": "", "beta": 0.5}  # a bonus without an LM
    assert Decoding(lm="lm.arpa", alpha=0.3, beta=0.0).cells() == {"lm": "lm.arpa", "alpha": 0.3, "beta": 0.0}


def test_emissions_reach_the_host_as_float32_whatever_their_tensor_s_precision():
    values = [[[0.25, 0.75], [0.5, 0.5]]]
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        on_cpu = on_host(torch.tensor(values, dtype=dtype, requires_grad=dtype == torch.float32))
        assert on_cpu.dtype == np.float32 and on_cpu.tolist() == values
    assert on_host(torch.tensor([3, 1])).dtype == np.int64  # lengths keep their integers
    assert on_host([[1, 2]]).tolist() == [[1, 2]]
    array = np.zeros((1, 2, 2), np.float32)
    assert on_host(array) is array  # numpy is taken as it is, not copied


def _labelling_log_probs(log_probs: torch.Tensor, blank: int = 0) -> dict[tuple[int, ...], float]:
    """ln P(labelling) for every labelling, summing over all alignments (brute force)."""
    frames, classes = log_probs.shape
    total: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=frames):
        labels = tuple(collapse(path, blank)[0])
        total[labels] = total.get(labels, 0.0) + math.exp(
            sum(float(log_probs[t, p]) for t, p in enumerate(path))
        )
    return {labels: math.log(p) for labels, p in total.items()}


@pytest.mark.parametrize("seed", range(6))
def test_every_beam_is_a_labelling_with_its_exact_probability_best_first(seed):
    """A beam wide enough for every prefix: the beams are the likeliest labellings in order, each
    scored −ln P(labelling) summed over all its alignments; the blank last as in ctcdecode's labels."""
    generator = torch.Generator().manual_seed(seed)
    log_probs = (torch.randn(5, 4, generator=generator) * 2).log_softmax(-1)
    truth = _labelling_log_probs(log_probs, blank=3)
    decoder = CTCBeamDecoder("abc_", beam_width=400, blank_id=3, log_probs_input=True, num_processes=1)
    results, scores, _, out_lens = decoder.decode(log_probs[None])
    found = [tuple(results[0, j, : out_lens[0, j]].tolist()) for j in range(len(truth))]
    assert found == sorted(truth, key=lambda labels: -truth[labels])
    assert scores[0, : len(truth)].tolist() == pytest.approx([-truth[f] for f in found], abs=1e-4)
    assert (scores[0, len(truth) :] == math.inf).all() and (out_lens[0, len(truth) :] == 0).all()


def test_a_blank_anywhere_gives_the_same_labellings():
    generator = torch.Generator().manual_seed(7)
    log_probs = (torch.randn(2, 30, 5, generator=generator) * 3).log_softmax(-1)
    first = CTCBeamDecoder("_abcd", beam_width=8, blank_id=0, log_probs_input=True).best(log_probs)
    moved = log_probs[..., [1, 2, 0, 3, 4]]  # the blank at 2: labels "ab_cd"
    middle = CTCBeamDecoder("ab_cd", beam_width=8, blank_id=2, log_probs_input=True).best(moved)
    to_first = {0: 1, 1: 2, 3: 3, 4: 4}
    for a, b in zip(first, middle, strict=True):
        assert [h.labels for h in a] == [[to_first[k] for k in h.labels] for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)


def test_cutoff_prob_keeps_the_fewest_labels_that_reach_it():
    row = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    assert _candidates(row, 4, 0.8).tolist() == [0, 1]  # 0.5 + 0.3 reach 0.8
    assert _candidates(row, 4, 0.81).tolist() == [0, 1, 2]
    assert _candidates(row, 2, 0.99).tolist() == [0, 1]  # cutoff_top_n still caps it
    assert _candidates(row, 4, 1.0).tolist() == [0, 1, 2, 3]
    # end to end: 'b' (0.1 at every frame) is outside the 0.9 that the blank and 'a' reach
    probs = torch.tensor([[[0.45, 0.45, 0.10]] * 6])
    beams = CTCBeamDecoder("_ab", beam_width=20).best(probs)[0]
    cut = CTCBeamDecoder("_ab", beam_width=20, cutoff_prob=0.9).best(probs)[0]
    assert any(2 in h.labels for h in beams) and len(cut) > 1
    assert not any(2 in h.labels for h in cut)


def test_timesteps_are_where_each_label_peaks():
    """ctcdecode's timestep: the frame with the label's highest probability among those adding it."""
    frames = [[0.1, 0.5, 0.4], [0.1, 0.8, 0.1], [0.9, 0.05, 0.05], [0.2, 0.1, 0.7], [0.1, 0.1, 0.8]]
    _, _, timesteps, out_lens = CTCBeamDecoder("_ab", beam_width=10).decode(torch.tensor([frames]))
    assert out_lens[0, 0] == 2 and timesteps[0, 0, :2].tolist() == [1, 4]


def test_beam_search_never_loses_to_greedy():
    generator = torch.Generator().manual_seed(5)
    for _ in range(10):
        log_probs = (torch.randn(6, 4, generator=generator) * 3).log_softmax(-1)
        truth = _labelling_log_probs(log_probs)
        greedy = GreedyDecoder().best(log_probs[None], torch.tensor([6]))[0][0]
        beam = CTCBeamDecoder("_abc", beam_width=2, log_probs_input=True).best(log_probs[None])[0][0]
        assert truth[tuple(beam.labels)] >= truth[tuple(greedy.labels)] - 1e-9


def test_greedy_matches_a_straightforward_reference():
    generator = torch.Generator().manual_seed(1)
    log_probs = torch.randn(5, 40, 41, generator=generator).log_softmax(-1)
    lengths = torch.tensor([40, 33, 10, 1, 2])
    found = [h[0].labels for h in GreedyDecoder().best(log_probs, lengths)]
    for i, n in enumerate(lengths.tolist()):
        best = [int(log_probs[i, t].argmax()) for t in range(n)]
        expected = [c for t, c in enumerate(best) if c != 0 and (t == 0 or c != best[t - 1])]
        assert found[i] == expected


def test_threads_give_what_one_thread_gives():
    generator = torch.Generator().manual_seed(2)
    probs = torch.randn(6, 30, 41, generator=generator).log_softmax(-1)
    lengths = torch.tensor([30, 25, 12, 3, 1, 30])
    one = CTCBeamDecoder(PHONEME_MAP, beam_width=8, log_probs_input=True, num_processes=1)
    with CTCBeamDecoder(PHONEME_MAP, beam_width=8, log_probs_input=True, num_processes=2) as threaded:
        assert all(
            torch.equal(a, b)
            for a, b in zip(one.decode(probs, lengths), threaded.decode(probs, lengths), strict=True)
        )
    assert threaded._threads.pool is None  # closed by the with block


@pytest.mark.parametrize(
    "asked, items, on_threads",
    [(1, 3, False), (4, 1, False), (4, 2, True), (4, 3, True), (0, 3, False), (10**6, 3, True)],
)
def test_num_processes_utterances_are_decoded_at_once_on_up_to_a_thread_per_core(
    monkeypatch, asked, items, on_threads
):
    """num_processes threads (at least one, at most the cores) decode a batch of two or more; one
    utterance, or one thread, is decoded on the caller's thread."""
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    caller = threading.current_thread()
    with CTCBeamDecoder(PHONEME_MAP, num_processes=asked) as decoder:
        assert decoder._threads.count == max(1, min(asked, 4))
        callers = decoder._threads.map(lambda _: threading.current_thread(), range(items))
    if on_threads:
        assert caller not in callers
    else:
        assert callers == [caller] * items


UNGUARDED = """
import torch
from eval.decode import CTCBeamDecoder
decoder = CTCBeamDecoder(["_", "a", "b"], num_processes=4)  # no __main__ guard, as in a notebook export
probs = torch.softmax(torch.randn(8, 50, 3), -1)
print(decoder.decode(probs)[3][:, 0].tolist())
import multiprocessing
print("children", len(multiprocessing.active_children()))
"""


def test_a_script_without_a_main_guard_decodes_on_threads(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "children 0"


# --- token LMs -----------------------------------------------------------------------------


def _lm_objective(labels: tuple[int, ...], words: list[str], arpa: str, alpha: float, beta: float) -> float:
    """alpha · ln P_LM(labels </s>) + beta · len, asking the ARPA model itself."""
    model = token_lm.read_model(arpa)
    return alpha * model.sentence_logprob([words[k] for k in labels]) * math.log(10) + beta * len(labels)


def _character_lm(tmp_path, order: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    sentences = [[str(c) for c in rng.choice(list("abc"), size=int(rng.integers(1, 6)))] for _ in range(40)]
    path = tmp_path / f"chars-{order}.arpa"
    path.write_bytes(arpa_bytes(estimate(sentences, order, "abc")))
    return str(path)


def _kenlm_binary(arpa: str) -> str:
    """KenLM's own build_binary (``make kenlm``, which ``make test`` runs first)."""
    build_binary = Path(sys.executable).parent / "build_binary"
    assert build_binary.is_file(), "KenLM's build_binary is missing: run `make kenlm`"
    subprocess.run([str(build_binary), arpa, arpa + ".bin"], check=True, capture_output=True)
    return arpa + ".bin"


@pytest.mark.parametrize(("seed", "form"), [(s, f) for s in range(4) for f in ("dense", "rows", "binary")])
def test_lm_beam_search_maximises_ctc_plus_lm_plus_bonus(seed, form, tmp_path, monkeypatch):
    """Exhaustively, a character 5-gram over labels with the blank last: as a dense table, row by
    row, and as a KenLM binary."""
    if form == "rows":
        monkeypatch.setattr(token_lm, "DENSE_ENTRIES", 0)
    generator = torch.Generator().manual_seed(seed)
    log_probs = (torch.randn(5, 4, generator=generator) * 2).log_softmax(-1)
    alpha, beta = [(0.8, 0.0), (0.5, 1.5), (1.2, -1.0), (0.3, 2.0)][seed]
    arpa = _character_lm(tmp_path, 5, seed)
    path = _kenlm_binary(arpa) if form == "binary" else arpa
    decoder = CTCBeamDecoder(
        "abc_", path, alpha, beta, beam_width=400, blank_id=3, log_probs_input=True, num_processes=1
    )
    assert decoder._lm.dense == (form == "dense")
    assert (decoder.character_based(), decoder.max_order(), decoder.dict_size()) == (True, 5, 0)
    truth = _labelling_log_probs(log_probs, blank=3)
    words = decoder._lm.words
    objective = {labels: p + _lm_objective(labels, words, arpa, alpha, beta) for labels, p in truth.items()}
    (best, *_) = decoder.best(log_probs[None])[0]
    # Invariant: the decoder's labelling is the objective's maximum; its score is the CTC part alone
    assert tuple(best.labels) == max(objective, key=objective.get)
    assert best.score == pytest.approx(truth[tuple(best.labels)], abs=1e-4)


def test_a_kenlm_binary_on_s3_decodes_as_its_arpa_file(tmp_path, s3_bucket):
    arpa = _character_lm(tmp_path, 4, seed=8)
    url = f"{s3_bucket}/chars-4.bin"
    fsspec.filesystem("s3").put(_kenlm_binary(arpa), url)
    generator = torch.Generator().manual_seed(8)
    probs = (torch.randn(3, 30, 4, generator=generator) * 3).softmax(-1)
    settings = dict(alpha=0.9, beta=0.3, beam_width=12, blank_id=3)
    from_arpa = CTCBeamDecoder("abc_", arpa, **settings).decode(probs)
    from_binary = CTCBeamDecoder("abc_", url, **settings).decode(probs)
    assert all(
        torch.equal(a, b) for a, b in zip(from_arpa[::2], from_binary[::2], strict=True)
    )  # labels, lengths
    assert torch.allclose(from_arpa[1], from_binary[1], atol=1e-4)


def test_a_word_lm_as_a_kenlm_binary_is_refused_too(tmp_path):
    with pytest.raises(LMError, match=r"6 of its 7 words are not labels"):
        CTCBeamDecoder(VOCAB, _kenlm_binary(_word_lm(tmp_path)), blank_id=BLANK)


def test_an_lm_at_alpha_0_and_beta_0_is_no_lm(tmp_path):
    generator = torch.Generator().manual_seed(4)
    probs = (torch.randn(3, 40, 4, generator=generator) * 3).softmax(-1)
    plain = CTCBeamDecoder("abc_", beam_width=16, blank_id=3).decode(probs)
    with_lm = CTCBeamDecoder("abc_", _character_lm(tmp_path, 3), 0.0, 0.0, beam_width=16, blank_id=3)
    assert (with_lm.character_based(), with_lm.max_order(), with_lm.dict_size()) == (True, 3, 0)
    assert all(torch.equal(a, b) for a, b in zip(plain, with_lm.decode(probs), strict=True))
    with_lm.reset_params(2.0, 0.0)
    assert not torch.equal(plain[0], with_lm.decode(probs)[0])


def test_a_phoneme_lm_serves_the_hw3p2_labels_by_phoneme_name(tmp_path):
    sentences = [["SIL", "AA", "B", "SIL"], ["SIL", "B", "AA", "SIL"]] * 5
    path = tmp_path / "phones.arpa"
    path.write_bytes(arpa_bytes(estimate(sentences, 2)))
    decoder = CTCBeamDecoder(PHONEME_MAP, str(path), 1.0, 0.0, beam_width=4, log_probs_input=True)
    assert decoder._lm.words == [END, *PHONEMES[1:]]


@pytest.mark.parametrize("with_lm", [False, True])
def test_a_stream_fed_in_chunks_ends_as_the_whole_utterance(with_lm, tmp_path):
    generator = torch.Generator().manual_seed(9)
    log_probs = (torch.randn(2, 37, 4, generator=generator) * 3).log_softmax(-1)
    lm = _character_lm(tmp_path, 4) if with_lm else None
    settings = dict(model_path=lm, alpha=0.7, beta=0.5, beam_width=12, blank_id=3, log_probs_input=True)
    whole = CTCBeamDecoder("abc_", **settings).decode(log_probs)
    online = OnlineCTCBeamDecoder("abc_", **settings)
    for chunk in (1, 5, 16, 37):
        states = [DecoderState(online), DecoderState(online)]
        for start in range(0, 37, chunk):
            outputs = online.decode(log_probs[:, start : start + chunk], states, [start + chunk >= 37] * 2)
        width = outputs[0].shape[2]
        assert torch.equal(outputs[0], whole[0][..., :width]) and torch.equal(
            outputs[2], whole[2][..., :width]
        )
        assert torch.equal(outputs[1], whole[1]) and torch.equal(outputs[3], whole[3])
