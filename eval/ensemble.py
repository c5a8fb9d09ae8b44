"""Several checkpoints decoded as one model: every member runs once per batch, and their frame
posteriors are combined before the one beam search (greedy or beam, with or without the LM).

Two ways to combine the members' log-probabilities ``l_k`` (each a log-softmax over the 41 classes):

    probs       log( mean_k exp(l_k) )            the mean of the probabilities (a mixture)
    log_probs   log_softmax( mean_k l_k )          the mean of the log-probabilities (a product of
                                                   experts, renormalised per frame)

Both give a model given twice exactly its own posteriors back (the mixture is computed around the
members' maximum, so ``exp(0) = 1`` exactly; the mean of equal numbers is exact, and the per-frame
renormalisation shifts every class alike), so its transcripts are the single model's. Members must
agree on what their outputs and inputs mean: the vocabulary, the features' dimension, the time
stride (the same output frames for every input length), the front end and the normalisation
statistics; otherwise one line names the first difference. docs/results.md measures both ways.
"""

import dataclasses

import torch
from torch import nn

from eval.model import interface_differences, load_model, model_url
from eval.options import COMBINE, Models
from train.checkpoint import CheckpointError, ModelCard
from train.model import CTCModel

LENGTHS_COMPARED = torch.arange(1, 4097)  # input lengths whose output lengths members must share


class MembersDiffer(CheckpointError):
    """An ensemble's checkpoints disagree on something their outputs or inputs depend on."""


def combined(log_probs: list[torch.Tensor], combine: str) -> torch.Tensor:
    """The members' (B, T', C) log-probabilities combined per frame as ``combine`` says."""
    stacked = torch.stack(log_probs)
    if combine == "probs":
        top = stacked.max(dim=0).values
        return top + (stacked - top).exp().mean(dim=0).log()
    if combine == "log_probs":
        return stacked.mean(dim=0).log_softmax(dim=-1)
    raise ValueError(f"combine must be one of {COMBINE}, not {combine!r}")


class Ensemble(nn.Module):
    """Members (each a :class:`CTCModel` of the same time stride) as one model: the same
    ``forward(features, lengths) → (log_probs, out_lengths)`` and ``output_lengths``."""

    def __init__(self, members: list[CTCModel], combine: str = COMBINE[0]):
        super().__init__()
        if combine not in COMBINE:
            raise ValueError(f"combine must be one of {COMBINE}, not {combine!r}")
        self.members = nn.ModuleList(members)
        self.combine = combine

    @property
    def time_stride(self) -> int:
        return self.members[0].time_stride

    def output_lengths(self, frames: torch.Tensor) -> torch.Tensor:
        return self.members[0].output_lengths(frames)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = [member(features, lengths) for member in self.members]
        return combined([log_probs for log_probs, _ in outputs], self.combine), outputs[0][1]


def resolved(models: Models) -> Models:
    """The same models with every run folder replaced by the model.pt it names now (its latest)."""
    return dataclasses.replace(models, checkpoints=tuple(model_url(c) for c in models.checkpoints))


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def load_models(models: Models) -> tuple[CTCModel | Ensemble, list[ModelCard]]:
    """One checkpoint's model, or an :class:`Ensemble` of several (checked to agree), in eval mode,
    with each one's card; the total parameter count is logged and held to ``max_params``."""
    urls = list(resolved(models).checkpoints)
    loaded = [load_model(url, models.weights) for url in urls]
    members, cards = [member for member, _ in loaded], [card for _, card in loaded]
    for url, member, card in zip(urls[1:], members[1:], cards[1:], strict=True):
        check_member(urls[0], members[0], cards[0], url, member, card)
    model = members[0] if len(members) == 1 else Ensemble(members, models.combine).eval()
    how = "" if len(members) == 1 else f" (an ensemble of {len(members)}, combining {models.combine})"
    models.check_size(parameter_count(model), " + ".join(urls), how)
    return model, cards


def check_member(
    first_url: str, first: CTCModel, first_card: ModelCard, url: str, model: CTCModel, card: ModelCard
) -> None:
    """One line naming what ``url`` does not share with the ensemble's first member."""
    differences = interface_differences(card, first_card)
    if not torch.equal(model.output_lengths(LENGTHS_COMPARED), first.output_lengths(LENGTHS_COMPARED)):
        differences.append(f"time stride ({model.time_stride} against {first.time_stride})")
    if differences:
        raise MembersDiffer(
            f"{url}: cannot join an ensemble with {first_url}: its {', '.join(differences)} differ"
        )
