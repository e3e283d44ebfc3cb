"""How the experts' masks are learned: the strategies, each a small object behind one interface.

A strategy says everything about itself that differs from another; nothing outside this module (and the
strategies' own losses) names a strategy. Its hooks, in the order a run meets them:

- :meth:`Strategy.networks`: the networks a run trains, each a :class:`Network` that also names the
  per-case files its outputs are saved as (``Network.outputs``);
- :meth:`Strategy.output_channels` and :attr:`Strategy.activation`: the network's output layer;
- :meth:`Strategy.targets`: what each network learns from, and :attr:`Strategy.binary_targets`, how
  the targets survive augmentation (warped bilinearly, then re-binarised at 0.5, or kept soft);
  :attr:`Strategy.masked`: whether missing masks are flagged to the loss;
- :meth:`Strategy.loss`: the Keras loss and metrics for ``--loss`` (:attr:`Strategy.loss_meaning`
  says what that is under the strategy; :meth:`Strategy.check` refuses what does not apply);
- reading a network's saved outputs back, without TensorFlow (the gather step, ``common.predict``):
  :meth:`Strategy.member_maps` (the maps averaged into the ensemble), :meth:`Strategy.rule_maps`
  (other ways of reading the same outputs, scored beside the map), :meth:`Strategy.samples` (the binary
  segmentations the sample-based uncertainty metrics compare with the experts').

Strategies are registered by name in :data:`STRATEGIES` (:func:`register`); a new one is a subclass
and one registration, here or in the caller's own code (the tests register a toy strategy).

- ``per-expert`` (the study): one network per expert, trained on that expert's masks; the ensemble is
  the mean of their maps, and each network is a sample of the annotators.
- ``multi-head``: one network with one sigmoid head per expert; a missing mask is masked out of the
  loss. The heads are the members.
- ``soft-label``: one network trained on the mean expert mask (values k/n); its map is the ensemble's
  map itself, and there are no members to sample.
- ``agreement-classes`` (Zukovec, Dular and Spiclin's QUBIQ 2020 entry): one network whose M + 1
  softmax classes are the number of the M experts who marked the pixel; the map is read from the class
  probabilities by a rule (:class:`AgreementClasses`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.errors import ConfigError


@dataclass(frozen=True)
class Network:
    """One network to train: its name, its seed, the experts it learns from, and the files it writes.

    ``heads`` is ``[e]`` for expert ``e``'s own network, every expert for a network that learns from
    all of them, and ``[None]`` for the soft-label network, whose one output is a consensus map, no
    expert's. ``per_expert`` says whether it is one expert's network (its folder is ``experts/segEE``)
    or a strategy's only network (``network/``). ``outputs`` names, per output channel, the per-case
    file it is saved as (:func:`common.evaluation.predictions.output_path`): an expert's number (that
    expert's map), None (the ensemble's map itself), or a name (a file of the network's own); empty:
    one per head, as ``heads``.
    """

    name: str
    seed: int
    heads: tuple[int | None, ...]
    per_expert: bool
    outputs: tuple[int | str | None, ...] = ()

    @property
    def label(self) -> int | str:
        """What the trainer calls the network in its logs (``seg02``, ``multi-head``)."""
        return self.heads[0] if self.per_expert else self.name

    @property
    def saved(self) -> tuple[int | str | None, ...]:
        """The per-case files of its output channels, in channel order (see the class's docstring)."""
        return self.outputs or self.heads


def expert_name(expert: int) -> str:
    """An expert's name, as in its masks' file names: ``seg01``."""
    return f"seg{expert:02d}"


Targets = tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray | None]


def expert_masks(cases: list, experts: tuple[int, ...]) -> tuple[list, np.ndarray | None, np.ndarray | None]:
    """The cases with a mask of any of ``experts``, their masks ``(N, S, S, E)`` (all 0 where an expert did
    not annotate the case) and which did ``(N, E)`` 0/1; ``([], None, None)`` when no case qualifies."""
    chosen = [c for c in cases if any(e in c.masks for e in experts)]
    if not chosen:
        return [], None, None
    zeros = np.zeros_like(next(iter(chosen[0].masks.values())))
    masks = np.stack([np.concatenate([c.masks.get(e, zeros) for e in experts], axis=-1) for c in chosen])
    available = np.array([[float(e in c.masks) for e in experts] for c in chosen], dtype=np.float32)
    return chosen, masks, available


class Strategy:
    """The interface; see the module's docstring."""

    name: str = ""
    #: One line for ``--strategy``'s help.
    summary: str = ""
    #: The output layer's activation: ``"sigmoid"`` or ``"softmax"`` (:func:`common.training.models.build_unet`).
    activation: str = "sigmoid"
    #: What one of its networks is called in messages ("every expert was trained").
    unit: str = "network"
    #: What an expert's output is called in the report ("Each expert's own network against the consensus").
    member_kind: str = "own network"
    #: What ``--loss`` trains with this strategy (the option's help lists every strategy's).
    loss_meaning: str = ""
    #: Whether each member is one expert's map: scored alone in the report, and a sample of the experts.
    members_are_experts: bool = True
    #: The rule of :meth:`rule_maps` whose map is the member's map (None: the strategy has no rules).
    map_rule: str | None = None

    def networks(self, experts: list[int], seed: int, settings=None) -> list[Network]:
        """The networks a run of ``experts`` trains (``settings``: the run's, for a strategy whose outputs
        depend on them)."""
        raise NotImplementedError

    def output_channels(self, target_channels: int) -> int:
        """The network's output channels for targets of ``target_channels`` channels."""
        return target_channels

    def build(self, settings, channels: int, outputs: int):
        """The network to train, for inputs of ``channels`` channels and ``outputs`` output channels; None:
        the study's U-Net with :attr:`activation` (:func:`common.training.networks.build_model`)."""
        return None

    def sampler(self, settings, seed: int):
        """What turns a saved network into the one that predicts, and gives it its inputs beyond the
        images (:class:`common.training.inference.Predictor`); None: the saved network predicts as it is."""
        return None

    def targets(self, cases: list, network: Network) -> Targets:
        """Images and training targets of ``cases`` (prepared cases: ``image``, ``masks`` by expert) for
        ``network``, and which masks exist (``(N, K)`` 0/1, when :attr:`masked`); ``(None, None)`` when no
        case qualifies."""
        raise NotImplementedError

    def loss(self, loss: str, smooth: float):
        """The Keras loss and metrics for ``--loss`` and ``--dice-smooth``."""
        raise NotImplementedError

    def check(self, settings) -> None:
        """Refuse settings this strategy cannot train with (called by ``Settings`` when it is made)."""

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

    # --- reading saved outputs (numpy only: the gather step runs without TensorFlow) ---------------------------------

    def member_names(self, network: Network) -> list[str]:
        """The names of ``network``'s members, in the order of :meth:`member_maps`: ``seg01`` for an
        expert's output, the network's name for a strategy whose members are not experts' (one map)."""
        if not self.members_are_experts:
            return [network.name]
        return [expert_name(h) for h in network.heads]

    def member_maps(self, network: Network, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """The probability maps ``network`` adds to the ensemble, from its outputs of one case (one array
        per entry of ``network.saved``, on any grid); the ensemble is the mean of every network's."""
        return list(outputs)

    def rule_maps(self, network: Network, outputs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """Other ways of reading the same outputs as a map, scored beside the map (none by default)."""
        return {}

    def samples(self, network: Network, outputs: list[np.ndarray]) -> list[np.ndarray]:
        """Binary segmentations of one case for GED and the Hungarian IoU: by default each member that is
        an expert's map, binarised at 0.5 (none for a consensus map: no sample is invented)."""
        if not self.members_are_experts:
            return []
        return [m >= 0.5 for m in self.member_maps(network, outputs)]

    def sample_names(self, network: Network) -> list[str]:
        """What each of :meth:`samples` is, in order (for ``results.json``)."""
        return self.member_names(network) if self.members_are_experts else []


class PerExpert(Strategy):
    name = "per-expert"
    summary = "one network per expert, their maps averaged (the study)"
    unit = "expert"
    loss_meaning = "each expert's network on its expert's masks"

    def networks(self, experts, seed, settings=None):
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
    summary = "one network, one sigmoid head per expert, the heads averaged"
    member_kind = "head of the multi-head network"
    loss_meaning = "each head on its expert's masks (a missing mask left out)"

    def ensemble_label(self, members):
        return f"mean of {members} expert head(s) of one network"

    def networks(self, experts, seed, settings=None):
        return [Network("multi-head", seed, tuple(experts), False)]

    def targets(self, cases, network):
        chosen, masks, available = expert_masks(cases, network.heads)
        if not chosen:
            return None, None
        return (np.stack([c.image for c in chosen]), masks), available

    def loss(self, loss, smooth):
        from common.training.losses import MultiHeadLoss, multi_head_dice

        return MultiHeadLoss(loss, smooth), [multi_head_dice]

    @property
    def masked(self):
        return True


class SoftLabel(Strategy):
    name = "soft-label"
    summary = "one network trained on the mean expert mask"
    loss_meaning = "not used: its own squared-denominator soft Dice (dice+bce refused)"
    members_are_experts = False

    def ensemble_label(self, members):
        return "one network trained on the mean expert mask"

    def networks(self, experts, seed, settings=None):
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


def agreement_levels(masks: dict[int, np.ndarray], experts: tuple[int, ...]) -> np.ndarray:
    """The nested agreement-level masks of one case: channel k - 1 is "level >= k", k = 1 .. M.

    ``masks`` are the case's experts' 0/1 masks ``(S, S, 1)`` by expert; ``experts`` the M chosen ones.
    A pixel's level is the number of chosen experts who marked it. A case that lacks some chosen experts'
    masks (prostate case09 has 5 of 6) gets the level nearest the fraction of its present experts who
    marked the pixel: round(M x marked / present), halves up, tested in integers as
    ``2 x marked x M >= (2k - 1) x present``; with every expert present that is the count itself. The
    nearest level, rather than the one below (``marked x M >= k x present``), because the score
    thresholds that fraction: for 5 of 6 experts, 3 of 5 (0.6) becomes level 4 of 6 (0.67) and 4 of 5
    (0.8) level 5 (0.83), which agree with the consensus at every one of the thresholds 0.1 .. 0.9 (the
    level below would disagree at 0.6, 0.7 and 0.8); 1 and 2 of 5 disagree at one threshold either way.

    The levels are stored as M nested 0/1 masks, not one integer label, because the augmentation warps
    targets bilinearly and re-binarises them at 0.5: nested masks warped by one transform stay nested
    (bilinear interpolation is monotone), so their sum is again a level, where an integer label would
    be blurred into levels no pixel had.
    """
    present = [e for e in experts if e in masks]
    chosen = len(experts)
    marked = np.sum([masks[e] >= 0.5 for e in present], axis=0).astype(np.int64)
    levels = [2 * marked * chosen >= (2 * k - 1) * len(present) for k in range(1, chosen + 1)]
    return np.concatenate(levels, axis=-1).astype(np.float32)


#: The ways of reading agreement-class probabilities as a map (see :func:`agreement_maps`).
AGREEMENT_RULES = ("argmax", "expectation", "median")


def cumulative_levels(classes: list[np.ndarray]) -> np.ndarray:
    """P(level >= k) for k = 1 .. M, ``(M, rows, cols)``, from the M + 1 class probabilities."""
    return _at_least(np.stack([np.asarray(c, dtype=np.float32) for c in classes]))


def _at_least(probabilities: np.ndarray) -> np.ndarray:
    return np.cumsum(probabilities[::-1], axis=0)[::-1][1:]


#: Each rule of :func:`agreement_maps` on the stacked class probabilities ``(M + 1, rows, cols)``, as a level.
_RULES = {
    "argmax": lambda p: np.argmax(p, axis=0),
    "expectation": lambda p: np.tensordot(np.arange(len(p)), p, axes=1),
    "median": lambda p: np.sum(_at_least(p) >= 0.5, axis=0),
}


def agreement_maps(classes: list[np.ndarray], rules: tuple[str, ...] = AGREEMENT_RULES) -> dict[str, np.ndarray]:
    """The continuous maps of M + 1 class probabilities ``p_0 .. p_M`` (each ``(rows, cols)``), by rule
    (each of ``rules``, by default all):

    - ``argmax``: the most probable level / M;
    - ``expectation``: sum_k k p_k / M, the expected fraction of experts;
    - ``median``: the median level / M, the largest k with P(level >= k) >= 1/2. Only this one agrees
      with every threshold at once: "median >= tM" is exactly "P(level >= tM) >= 1/2", so thresholding
      the map at t gives the pixels where the network finds agreement level tM at least as likely as not.
    """
    probabilities = np.stack([np.asarray(c, dtype=np.float32) for c in classes])
    levels = len(classes) - 1
    return {rule: (_RULES[rule](probabilities) / levels).astype(np.float32) for rule in rules}


class AgreementClasses(Strategy):
    """Agreement levels as classes: one network, M + 1 softmax classes, class k = k of the M experts.

    The targets are :func:`agreement_levels`; the loss (:class:`common.training.losses.AgreementLoss`)
    is the study's soft Dice applied to each cumulative level "P(level >= k) against level >= k", the
    masks the QUBIQ score itself compares at the thresholds on the k/M grid, plus the classes'
    cross-entropy, as the published method's nnU-Net loss (docs/strategies.md says why the Dice is over
    the cumulative levels rather than each class, and what the Dice alone did). ``--loss`` does not
    apply: ``dice+bce`` is refused. Saved per case: the M + 1
    class probabilities (``class0`` .. ``classM``), so the gather step scores every rule of
    :func:`agreement_maps` from files; the map is the :attr:`map_rule` one. Its samples for GED are the
    M nested level masks "median >= k", which reproduce the map's thresholds but not the experts'
    individual shapes.
    """

    name = "agreement-classes"
    summary = "one network, a pixel's class the number of experts who marked it (M + 1 softmax classes)"
    activation = "softmax"
    member_kind = "map"
    loss_meaning = (
        "not used: the soft Dice of each cumulative agreement level plus the classes' cross-entropy (dice+bce refused)"
    )
    members_are_experts = False
    #: The rule whose map is the run's (chosen by measurement: docs/strategies.md).
    map_rule = "median"

    def ensemble_label(self, members):
        return f"agreement levels as classes, map: {self.map_rule} level / M"

    def networks(self, experts, seed, settings=None):
        classes = tuple(f"class{k}" for k in range(len(experts) + 1))
        return [Network(self.name, seed, tuple(experts), False, classes)]

    def output_channels(self, target_channels):
        return target_channels + 1

    def targets(self, cases, network):
        chosen = [c for c in cases if any(e in c.masks for e in network.heads)]
        if not chosen:
            return None, None
        levels = np.stack([agreement_levels(c.masks, network.heads) for c in chosen])
        return (np.stack([c.image for c in chosen]), levels), None

    def loss(self, loss, smooth):
        from common.training.losses import AgreementLoss, agreement_dice

        return AgreementLoss(1.0, smooth), [agreement_dice]

    def check(self, settings):
        if settings.loss != "dice":
            raise ConfigError(
                "strategy agreement-classes trains with the soft Dice of each cumulative agreement level plus the "
                f"classes' cross-entropy, always (the Dice alone leaves the background class untrained); loss "
                f"{settings.loss!r} does not apply to it"
            )

    def member_maps(self, network, outputs):
        return [agreement_maps(outputs, (self.map_rule,))[self.map_rule]]

    def rule_maps(self, network, outputs):
        return agreement_maps(outputs)

    def samples(self, network, outputs):
        return list(cumulative_levels(outputs) >= 0.5)

    def sample_names(self, network):
        return [f"{network.name} level>={k}" for k in range(1, len(network.saved))]


class PriorSampler:
    """How a trained Probabilistic U-Net predicts: its sampling model (``samples`` draws of the prior)
    and the prior noise of each image, from the network's seed and the image's place in the prediction
    (:func:`common.training.prob_unet.sampling_noise`)."""

    def __init__(self, samples: int, latent_dim: int, seed: int):
        self.samples, self.latent_dim, self.seed = samples, latent_dim, seed

    def prepare(self, model):
        from common.training.prob_unet import build_sampling_model

        return build_sampling_model(model, self.samples)

    def inputs(self, count: int, first: int) -> list:
        from common.training.prob_unet import sampling_noise

        return [sampling_noise(self.seed, range(first, first + count), self.samples, self.latent_dim)]


class ProbUNet(Strategy):
    """The Probabilistic U-Net (Kohl et al. 2018; :mod:`common.training.prob_unet`): one network whose prior
    over a latent z gives ``--samples`` segmentations per case.

    Targets: the image packed with every chosen expert's mask and which experts annotated it (the model
    draws one present expert per image and step); the loss: the pixel cross-entropy summed over the
    pixels + ``--kl-weight`` x KL(posterior || prior). Saved per case: each sample's sigmoid map
    (``sample01`` ...). The samples are the members (the map is their mean; ``common.predict
    --save-members`` saves them, ``--uncertainty`` gives their spread), and each binarised at 0.5 is a
    sample for GED and the Hungarian IoU. They are not experts' maps, so the report scores none alone.
    """

    name = "prob-unet"
    summary = "the Probabilistic U-Net: one network whose prior draws --samples segmentations per case"
    member_kind = "map"
    members_are_experts = False
    loss_meaning = "not used: the pixel cross-entropy summed over the pixels + --kl-weight x KL (dice+bce refused)"

    def ensemble_label(self, members):
        return "mean of the Probabilistic U-Net's samples"

    def networks(self, experts, seed, settings=None):
        if settings is None:
            raise ValueError("prob-unet's networks depend on the settings (--samples): pass them")
        saved = tuple(f"sample{s:02d}" for s in range(1, settings.samples + 1))
        return [Network(self.name, seed, tuple(experts), False, saved)]

    def targets(self, cases, network):
        from common.training.prob_unet import pack_inputs

        chosen, masks, available = expert_masks(cases, network.heads)
        if not chosen:
            return None, None
        return (pack_inputs(np.stack([c.image for c in chosen]), masks, available), masks), None

    def build(self, settings, channels, outputs):
        from common.training.models import unet_arguments
        from common.training.prob_unet import build_training_model

        return build_training_model(
            (settings.input_size, settings.input_size, channels - 2 * outputs),
            outputs,
            settings.latent_dim,
            settings.kl_weight,
            **unet_arguments(settings),
        )

    def loss(self, loss, smooth):
        from common.training.prob_unet import SampledCrossEntropy

        return SampledCrossEntropy(), []

    def check(self, settings):
        if settings.loss != "dice":
            raise ConfigError(
                "strategy prob-unet trains with the pixel cross-entropy summed over the pixels plus --kl-weight x "
                f"KL(posterior || prior), as the original; loss {settings.loss!r} does not apply to it"
            )

    def sampler(self, settings, seed):
        return PriorSampler(settings.samples, settings.latent_dim, seed)

    def member_names(self, network):
        return list(network.saved)

    def member_maps(self, network, outputs):
        return list(outputs)  # each sample's map a member: the ensemble is their mean, their spread the std

    def samples(self, network, outputs):
        return [np.asarray(o) >= 0.5 for o in outputs]

    def sample_names(self, network):
        return [f"{network.name} {name}" for name in network.saved]


#: The strategies by name (``--strategy``).
STRATEGIES: dict[str, Strategy] = {}


def register(learner: Strategy) -> Strategy:
    """Add a strategy to :data:`STRATEGIES` (a name taken is refused); returns it."""
    if not learner.name or learner.name in STRATEGIES:
        raise ValueError(f"a strategy needs a new name, got {learner.name!r} (taken: {', '.join(STRATEGIES)})")
    STRATEGIES[learner.name] = learner
    return learner


for _learner in (PerExpert(), MultiHead(), SoftLabel(), AgreementClasses(), ProbUNet()):
    register(_learner)

#: The study's strategy, the default of ``Settings.strategy``.
STUDY_STRATEGY = PerExpert.name


def loss_meanings() -> str:
    """What ``--loss`` means under each strategy, for the option's help."""
    return "; ".join(f"{s.name}: {s.loss_meaning}" for s in STRATEGIES.values())


def summaries() -> str:
    """Each strategy in one line, for ``--strategy``'s help."""
    return "; ".join(f"{s.name} ({s.summary})" for s in STRATEGIES.values())


def strategy(name: str) -> Strategy:
    """The strategy called ``name``, or a refusal naming the choices."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}") from None
