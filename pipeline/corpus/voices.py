"""The synthesisers: Festival (many sentences per process) and flite (one per process).

Each reports the phones it spoke (Festival's segment relation, flite's ``-psdur``) in the US
"radio" phone set: the 39 ARPABET phonemes in lower case plus ``ax`` (→ AH) and ``pau``
(→ SIL). That report is the label, never a dictionary lookup of the text. A synthesiser
warning inside an utterance (Festival's ``UniSyn: using default diphone``) means the audio
does not match the label, so that utterance fails.
"""

import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shards.errors import UserError
from shards.vocab import PHONEMES

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Request:
    key: str  # names the utterance's files; unique within a batch
    text: str
    stretch: float  # duration stretch (1 = the voice's own rate)
    f0: float  # target mean pitch in Hz


@dataclass(frozen=True)
class Spoken:
    audio: np.ndarray  # float32 samples at 16 kHz
    phonemes: list[str]  # HW3P2 phonemes, as spoken


# A synthesiser that hangs (it happens on odd input) is killed and its utterances count as failed
# attempts. Generous: the slowest voice takes ~0.25 s per utterance on a loaded 2-core machine.
TIMEOUT_START_S = 60.0  # a whole flite call; festival's start-up
TIMEOUT_PER_UTTERANCE_S = 10.0  # festival's allowance per utterance of a batch


class SynthesisFailed(Exception):
    """One utterance could not be synthesised with a label that matches its audio."""

    def __init__(self, where: str, kind: str, detail: str):
        super().__init__(f"{where}: {kind}: {detail}")
        self.kind = kind  # a short category for the summary
        self.detail = detail


class VoiceUnavailable(UserError, RuntimeError):
    pass


@dataclass(frozen=True)
class Voice:
    name: str  # festival/<voice> or flite/<voice>
    f0_range: tuple[float, float]  # pitch targets drawn per utterance
    prosody: bool = True  # False: the voice ignores stretch and pitch; vary it by speed perturbation

    @property
    def engine(self) -> str:
        return self.name.split("/", 1)[0]

    @property
    def code(self) -> str:
        return self.name.split("/", 1)[1]


MALE, FEMALE = (85.0, 140.0), (150.0, 230.0)
KNOWN_VOICES = {
    v.name: v
    for v in (
        Voice("festival/kal_diphone", MALE),  # Debian festvox-kallpc16k
        Voice("festival/ked_diphone", MALE),  # festvox-kdlpc16k
        Voice("festival/cmu_us_slt_arctic_hts", FEMALE, prosody=False),  # festvox-us-slt-hts
        Voice("flite/kal16", MALE),
        Voice("flite/slt", FEMALE),
        Voice("flite/awb", MALE),
        Voice("flite/rms", MALE),
    )
}
DEFAULT_VOICES = (
    "festival/kal_diphone",
    "festival/ked_diphone",
    "festival/cmu_us_slt_arctic_hts",
    "flite/kal16",
    "flite/slt",
)


def voice_by_name(name: str) -> Voice:
    if name in KNOWN_VOICES:
        return KNOWN_VOICES[name]
    engine, _, code = name.partition("/")
    if engine not in ("festival", "flite") or not code:
        raise VoiceUnavailable(f"{name!r}: a voice is festival/<voice> or flite/<voice>")
    return Voice(name, MALE)


def check_available(voice: Voice) -> None:
    """Fail early, naming the voice, if its synthesiser or voice data is not installed."""
    try:
        if voice.engine == "flite":
            listed = subprocess.run(
                ["flite", "-lv"], capture_output=True, text=True, check=True, timeout=TIMEOUT_START_S
            ).stdout
            if voice.code not in listed.split(":", 1)[-1].split():
                raise VoiceUnavailable(f"{voice.name}: flite has no such voice ({listed.strip()})")
        else:
            probe = subprocess.run(
                ["festival", "--batch", f"(voice_{voice.code})"],
                capture_output=True,
                text=True,
                timeout=TIMEOUT_START_S,
            )
            if probe.returncode != 0 or "unbound variable" in probe.stdout + probe.stderr:
                raise VoiceUnavailable(f"{voice.name}: festival cannot load voice_{voice.code}")
    except subprocess.TimeoutExpired as error:
        raise VoiceUnavailable(
            f"{voice.name}: {voice.engine} did not answer within {TIMEOUT_START_S:.0f} s"
        ) from error
    except FileNotFoundError as error:
        raise VoiceUnavailable(
            f"{voice.name}: {voice.engine} is not installed (Debian: apt-get install festival flite "
            "festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festlex-cmu; `make setup` does it)"
        ) from error


def to_phonemes(phones: list[str], where: str) -> list[str]:
    """HW3P2 phonemes of radio phones: pau → SIL (runs of pauses merged), ax → AH, the rest upper-cased."""
    phonemes: list[str] = []
    for phone in phones:
        phoneme = {"pau": "SIL", "ax": "AH"}.get(phone, phone.upper())
        if phoneme not in PHONEMES[1:]:
            raise SynthesisFailed(where, "unmapped phone", f"{phone!r} has no HW3P2 phoneme")
        if not (phoneme == "SIL" and phonemes and phonemes[-1] == "SIL"):
            phonemes.append(phoneme)
    if len(phonemes) < 3 or phonemes[0] != "SIL" or phonemes[-1] != "SIL":
        raise SynthesisFailed(
            where, "not a sentence", f"spoke {' '.join(phones)!r}, not phones between pauses"
        )
    return phonemes


def _read_wav(path: Path, where: str) -> np.ndarray:
    with wave.open(str(path), "rb") as handle:
        rate, width, channels = handle.getframerate(), handle.getsampwidth(), handle.getnchannels()
        frames = handle.readframes(handle.getnframes())
    if (rate, width, channels) != (SAMPLE_RATE, 2, 1):
        raise SynthesisFailed(
            where,
            "wrong audio format",
            f"{rate} Hz, {8 * width}-bit, {channels} channel(s); need 16 kHz mono",
        )
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def _festival_script(voice: Voice, requests: list[Request], folder: Path) -> str:
    lines = [f"(voice_{voice.code})"]
    for r in requests:
        lines.append(f'(format stderr "@@begin {r.key}\\n")')
        if voice.prosody:
            lines.append(f"(Parameter.set 'Duration_Stretch {r.stretch:.4f})")
            lines.append(
                f"(set! int_lr_params '((target_f0_mean {r.f0:.1f}) (target_f0_std {0.14 * r.f0:.1f}) "
                "(model_f0_mean 170) (model_f0_std 34)))"
            )
        lines += [
            f"(set! utt (eval (list 'Utterance 'Text \"{r.text}\")))",
            "(utt.synth utt)",
            "(utt.wave.resample utt 16000)",
            f'(utt.save.wave utt "{folder / r.key}.wav" \'riff)',
            f'(utt.save.segs utt "{folder / r.key}.segs")',
            f'(format stderr "@@end {r.key}\\n")',
        ]
    return "\n".join(lines) + "\n"


def _festival(voice: Voice, requests: list[Request], folder: Path) -> dict[str, Spoken | SynthesisFailed]:
    script = folder / "batch.scm"
    script.write_text(_festival_script(voice, requests, folder))
    limit = TIMEOUT_START_S + TIMEOUT_PER_UTTERANCE_S * len(requests)
    try:
        run = subprocess.run(
            ["festival", "--batch", str(script)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=limit,
        )
        output, exit_status = run.stdout.decode(errors="replace"), f"exited with {run.returncode}"
    except subprocess.TimeoutExpired as expired:  # killed; what it finished before hanging still counts
        output, exit_status = (expired.stdout or b"").decode(errors="replace"), None
    finished = {line.split(" ", 1)[1] for line in output.splitlines() if line.startswith("@@end ")}
    complaints: dict[str, list[str]] = {}
    current = None
    for line in output.splitlines():
        if line.startswith("@@begin "):
            current = line.split(" ", 1)[1]
            complaints[current] = []
        elif line.startswith("@@end "):
            current = None
        elif current is not None and line.strip():
            complaints[current].append(line.strip())
    results: dict[str, Spoken | SynthesisFailed] = {}
    for r in requests:
        where = f"{voice.name} {r.key}"
        wav, segs = folder / f"{r.key}.wav", folder / f"{r.key}.segs"
        try:
            if exit_status is None and r.key not in finished:
                raise SynthesisFailed(
                    where, "timeout", f"festival did not finish its batch within {limit:.0f} s"
                )
            if complaints.get(r.key):
                raise SynthesisFailed(where, "synthesiser warning", complaints[r.key][0])
            if not wav.exists() or not segs.exists():
                raise SynthesisFailed(where, "no audio", f"festival {exit_status}")
            phones = [line.split()[2] for line in segs.read_text().splitlines()[1:] if line.strip()]
            results[r.key] = Spoken(_read_wav(wav, where), to_phonemes(phones, where))
        except SynthesisFailed as failed:
            results[r.key] = failed
    return results


def _flite(voice: Voice, request: Request, folder: Path) -> Spoken:
    where = f"{voice.name} {request.key}"
    wav = folder / f"{request.key}.wav"
    command = ["flite", "-voice", voice.code, "-psdur", "-t", request.text, "-o", str(wav)]
    if voice.prosody:
        command += ["--setf", f"duration_stretch={request.stretch:.4f}"]
        command += ["--setf", f"int_f0_target_mean={request.f0:.1f}"]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_START_S)
    except subprocess.TimeoutExpired:
        raise SynthesisFailed(
            where, "timeout", f"flite did not finish within {TIMEOUT_START_S:.0f} s"
        ) from None
    if run.returncode != 0 or not wav.exists():
        raise SynthesisFailed(
            where, "no audio", f"flite exited with {run.returncode}: {run.stderr.strip()[-200:]}"
        )
    phones = [pair.rsplit(":", 1)[0] for pair in run.stdout.split()]
    return Spoken(_read_wav(wav, where), to_phonemes(phones, where))


def synthesise(voice: Voice, requests: list[Request], folder: Path) -> dict[str, Spoken | SynthesisFailed]:
    """Every request spoken by ``voice`` (files kept in ``folder``), or the reason it failed."""
    if voice.engine == "festival":
        return _festival(voice, requests, folder)
    results: dict[str, Spoken | SynthesisFailed] = {}
    for request in requests:
        try:
            results[request.key] = _flite(voice, request, folder)
        except SynthesisFailed as failed:
            results[request.key] = failed
    return results
