"""How the experts' masks are learned: the strategies, each a small object behind one interface.

A strategy says which networks a run trains (:meth:`Strategy.networks`), what each one learns from
(:meth:`Strategy.targets`), with which loss (:meth:`Strategy.loss`), and which of its outputs are
members of the ensemble (:meth:`Strategy.members`). Everything else (the plan, training, gathering,
scoring) is the same for every strategy. Strategies are registered by name in :data:`STRATEGIES`; a
new one is a subclass here and one entry there; nothing else names a strategy.

- ``per-expert`` (the study): one network per expert, trained on that expert's masks; the ensemble is
  the mean of their maps, and each network is a sample of the annotators.
- ``multi-head``: one network with one sigmoid head per expert; a missing mask is masked out of the
  loss. The heads are the members.
- ``soft-label``: one network trained on the mean expert mask (values k/n); its map is the ensemble's
  map itself, and there are no members to sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError


@dataclass(frozen=True)
class Network:
    """One network to train: its name, its seed, and the experts its outputs stand for, in order.

    ``heads`` is ``[e]`` for expert ``e``'s own network, every expert for a multi-head network, and
    ``[None]`` for the soft-label network, whose one output is a consensus map, no expert's.
    ``per_expert`` says whether it is one expert's network (its folder is ``experts/segEE``) or a
    strategy's only network (``network/``).
    """

    name: str
    seed: int
    heads: tuple[int | None, ...]
    per_expert: bool

    @property
    def label(self) -> int | str:
        """What the trainer calls the network in its logs (``seg02``, ``multi-head``)."""
        return self.heads[0] if self.per_expert else self.name


def expert_name(expert: int) -> str:
    """An expert's name, as in its masks' file names: ``seg01``."""
    return f"seg{expert:02d}"


Targets = tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray | None]


class Strategy:
    """The interface; see the module's docstring."""

    name: str = ""

    def networks(self, experts: list[int], seed: int) -> list[Network]:
        raise NotImplementedError

    def targets(self, cases: list, network: Network) -> Targets:
        """Images and training targets of ``cases`` (prepared cases: ``image``, ``masks`` by expert) for
        ``network``, and which masks exist (``(N, K)`` 0/1, multi-head only); ``(None, None)`` when no
        case qualifies."""
        raise NotImplementedError

    def loss(self, loss: str, smooth: float):
        """The Keras loss and metrics for ``--loss`` and ``--dice-smooth``."""
        raise NotImplementedError

    def check(self, settings) -> None:
        """Refuse settings this strategy cannot train with (called by ``Settings`` when it is made)."""

    def members(self, network: Network) -> list[int | None]:
        """The ensemble members that ``network``'s outputs are, in output order (None: not a member)."""
        return list(network.heads)

    #: What one of its networks is called in messages ("every expert was trained").
    unit: str = "network"
    #: What an expert's output is called in the report ("Each expert's own network against the consensus").
    member_kind: str = "own network"
    #: What ``--loss`` trains with this strategy (the option's help lists every strategy's).
    loss_meaning: str = ""

    def ensemble_label(self, members: int) -> str:
        """What the reported map is, on the score's line: ``QUBIQ score (<this>): 0.9121``."""
        raise NotImplementedError

    @property
    def masked(self) -> bool:
        """Whether missing masks are flagged to the loss (the stream carries the availability)."""
        return False

    @property
    def binary_targets(self) -> bool:
        """Whether targets are 0/1 masks (re-binarised after augmentation), not soft values."""
        return True


class PerExpert(Strategy):
    name = "per-expert"
    unit = "expert"
    loss_meaning = "each expert's network on its expert's masks"

    def networks(self, experts, seed):
        return [Network(expert_name(e), seed + e, (e,), True) for e in experts]

    def targets(self, cases, network):
        expert = network.heads[0]
        chosen = [c for c in cases if expert in c.masks]
        if not chosen:
            return None, None
        return (np.stack([c.image for c in chosen]), np.stack([c.masks[expert] for c in chosen])), None

    def loss(self, loss, smooth):
        from common.training.losses import dice_coefficient, make_loss

        return make_loss(loss, smooth), [dice_coefficient]

    def ensemble_label(self, members):
        return f"ensemble of {members} expert network(s)"


class MultiHead(Strategy):
    name = "multi-head"
    member_kind = "head of the multi-head network"
    loss_meaning = "each head on its expert's masks (a missing mask left out)"

    def ensemble_label(self, members):
        return f"mean of {members} expert head(s) of one network"

    def networks(self, experts, seed):
        return [Network("multi-head", seed, tuple(experts), False)]

    def targets(self, cases, network):
        heads = network.heads
        chosen = [c for c in cases if any(e in c.masks for e in heads)]
        if not chosen:
            return None, None
        zeros = np.zeros_like(next(iter(chosen[0].masks.values())))
        masks = np.stack([np.concatenate([c.masks.get(e, zeros) for e in heads], axis=-1) for c in chosen])
        available = np.array([[float(e in c.masks) for e in heads] for c in chosen], dtype=np.float32)
        return (np.stack([c.image for c in chosen]), masks), available

    def loss(self, loss, smooth):
        from common.training.losses import MultiHeadLoss, multi_head_dice

        return MultiHeadLoss(loss, smooth), [multi_head_dice]

    @property
    def masked(self):
        return True


class SoftLabel(Strategy):
    name = "soft-label"
    loss_meaning = "not used: its own squared-denominator soft Dice (dice+bce refused)"

    def ensemble_label(self, members):
        return "one network trained on the mean expert mask"

    def networks(self, experts, seed):
        return [Network("soft-label", seed, (None,), False)]

    def targets(self, cases, network):
        chosen = [c for c in cases if c.masks]
        if not chosen:
            return None, None
        means = np.stack([np.mean(list(c.masks.values()), axis=0) for c in chosen]).astype(np.float32)
        return (np.stack([c.image for c in chosen]), means), None

    def loss(self, loss, smooth):
        from common.training.losses import SoftLabelLoss, dice_coefficient

        return SoftLabelLoss(), [dice_coefficient]

    def check(self, settings):
        if settings.loss != "dice":
            raise ConfigError(
                "strategy soft-label trains on the mean expert mask with a squared-denominator soft Dice (a loss "
                f"minimised at p = g); loss {settings.loss!r} does not apply to it"
            )

    @property
    def binary_targets(self):
        return False


#: The strategies by name (``--strategy``).
STRATEGIES: dict[str, Strategy] = {s.name: s for s in (PerExpert(), MultiHead(), SoftLabel())}


def loss_meanings() -> str:
    """What ``--loss`` means under each strategy, for the option's help."""
    return "; ".join(f"{s.name}: {s.loss_meaning}" for s in STRATEGIES.values())


def strategy(name: str) -> Strategy:
    """The strategy called ``name``, or a refusal naming the choices."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}") from None
