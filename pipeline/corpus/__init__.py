"""A built-in demo corpus: real synthesised English speech with exact ARPABET labels.

Festival and flite speak random sentences drawn from Festival's own CMU lexicon; the label
of each utterance is the phone sequence the synthesiser itself reports having spoken.
13 MFCCs are computed from the audio, and everything is written in the Spring 2022 HW3P2
layout that ``python -m pipeline`` reads.
"""
