"""The recipe format: a whole segmentation system as data (typed views, one per section).

A recipe file (JSON, ``schema_version`` 1) declares:

* ``stages``: every network the system trains -- role, network, input geometry,
  orientation, intensity, augmentation, training method, loss, optimiser, schedule;
* ``models``: inference graphs. A model folder holds one trained bundle per stage of a graph:
  which stage gives the region of interest, which stage heads give the output labels (merged
  in order, later over earlier: tumor over organs), and the post-processing;
* ``pipeline``: the ordered steps that make the system from a dataset (train, pseudolabel,
  correct, retrain), run by one generic runner;
* ``subsets``: named sets of cases a step trains on or pseudo-labels;
* ``demo``: the synthetic dataset ``flare demo`` makes for it
  (:class:`SynthConfig`);
* ``presets``: named overrides (``paper``, ``cpu``, ``smoke``), resolved by
  :mod:`flarecli.core.recipes.load`.

Geometry convention: sizes, spacings and patches are ``zyx`` (array order) in the stage's
orientation; orientations are ITK/DICOM codes of the voxel axes x, y, z ('LPS' is an
identity-direction scan: array axes towards superior, posterior, patient's left).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from flarecli.core.errors import InputError
from flarecli.core.labels import CASE_KINDS, CLASSES, MAX_LABEL, MIN_TUMOR_MM3, ORGANS, TUMOR

SCHEMA_VERSION = 1

#: Largest network input per axis a recipe may ask for (a 1024^3 float volume is 4 GB).
MAX_INPUT_VOXELS = 1024

#: Anatomical axes by name: superior-inferior, anterior-posterior, left-right.
ANATOMICAL_AXES: tuple[str, ...] = ("SI", "AP", "LR")


def _positive(name: str, value: float | int | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _fraction(name: str, value: float, *, upper_open: bool = False) -> None:
    if not (0.0 <= value < 1.0 if upper_open else 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be within [0, 1{')' if upper_open else ']'}, got {value}")


# ---------------------------------------------------------------------------------------------
# data subsets
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Subset:
    """Cases selected by what they carry; every given condition must hold.

    ``kinds``: FL, CPL, PL (from ``flare correct``), ``partial`` or ``unlabeled`` (from an
    audit); ``groups``: audit label patterns (``13_organs``, ``5_organs_tumor``, ...);
    ``annotates_all`` / ``annotates_any``: classes the case's annotation holds (all of them /
    at least one); ``annotates_only``: nothing outside these classes is annotated;
    ``any_of``: the union of other subsets (names or inline).
    """

    kinds: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None
    annotates_all: tuple[int, ...] = ()
    annotates_any: tuple[int, ...] = ()
    annotates_only: tuple[int, ...] | None = None
    any_of: tuple[str | Subset, ...] = ()

    def __post_init__(self) -> None:
        for name in ("annotates_all", "annotates_any"):
            _check_classes(name, getattr(self, name))
        if self.annotates_only is not None:
            _check_classes("annotates_only", self.annotates_only)
        for kind in self.kinds or ():
            if kind not in CASE_KINDS:
                raise ValueError(f"kinds: '{kind}' is not one of {', '.join(CASE_KINDS)}")


def _check_classes(name: str, classes) -> None:
    bad = [c for c in classes if c not in CLASSES]
    if bad:
        raise ValueError(f"{name}: {bad[0]} is not a FLARE class id (1..{MAX_LABEL})")


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Network:
    """A registered architecture (``flarecli.models.registry``), its arguments and its heads.

    ``heads`` maps a head name to its classes: entry k is network class k + 1 (0 is
    background); an entry is a FLARE id, or a list of ids merged into one class (the coarse
    abdomen head merges 1..14). ``init``: 'default' (PyTorch's) or 'he_normal'.
    """

    arch: str
    args: dict[str, Any] = field(default_factory=dict)
    heads: dict[str, tuple[int | tuple[int, ...], ...]] = field(default_factory=dict)
    init: Literal["default", "he_normal"] = "default"

    def __post_init__(self) -> None:
        if not self.heads:
            raise ValueError("heads: a network needs at least one head")
        for head, classes in self.heads.items():
            if not classes:
                raise ValueError(f"heads.{head}: no classes")
            flat = [c for entry in classes for c in (entry if isinstance(entry, tuple)
                                                     else (entry,))]
            bad = [c for c in flat if not 1 <= c <= MAX_LABEL]
            if bad:
                raise ValueError(f"heads.{head}: {bad[0]} is not a FLARE id (1..{MAX_LABEL}; "
                                 "0, background, is implicit)")
            if len(set(flat)) != len(flat):
                raise ValueError(f"heads.{head}: a class appears twice")
        for reserved in ("in_channels", "num_classes", "heads"):
            if reserved in self.args:
                raise ValueError(f"args.{reserved}: set by flare from the heads")


@dataclass(frozen=True)
class StageGeometry:
    """What a stage's network sees.

    ``region``: 'whole' (the whole scan) or 'roi' (the region of interest of the model's ROI
    stage, plus ``margin_mm``). Then either ``size_zyx`` (the region resampled to this fixed
    size, one forward pass) or ``spacing_zyx`` with ``patch_zyx`` (the region resampled to
    this spacing, None = keep the scan's own, cut into patches: random patches in training,
    a sliding window with ``overlap`` at inference). ``infer_spacing_zyx`` replaces the
    spacing at inference (seed 002 trains at the scan's own slice spacing and infers at
    2.5 mm). ``pad``: 'aspect' pads the region (air) to the physical aspect ratio of
    ``size_zyx`` before resampling, so the anatomy is not stretched. In training the ROI box is
    jittered by up to ``jitter`` of its size; the cache keeps ``context`` of it around.
    ``foreground_fraction`` of training patches hold a labelled voxel (a class present drawn
    first, then one of its voxels, anywhere in the patch); ``focus`` gives classes a share of
    the patches of their own before that (``{14: 0.33}``: a third hold a lesion voxel, in the
    cases that have one). ``slice_sigma_mm`` (2-D networks, [1, H, W] patches): at inference
    the probabilities are smoothed along the slice axis by a Gaussian of this sigma (mm)
    before the argmax, so that a label must hold across neighbouring slices: a lesion spans
    several, the texture spot a slice-by-slice network mistakes for one spans one or two
    (0: each slice alone).
    """

    region: Literal["whole", "roi"] = "whole"
    size_zyx: tuple[int, int, int] | None = None
    spacing_zyx: tuple[float | None, float | None, float | None] | None = None
    infer_spacing_zyx: tuple[float | None, float | None, float | None] | None = None
    patch_zyx: tuple[int, int, int] | None = None
    margin_mm: float = 10.0
    pad: Literal["none", "aspect"] = "none"
    jitter: float = 0.1
    context: float = 0.15
    overlap: float = 0.5
    foreground_fraction: float = 0.33
    focus: dict[str, float] = field(default_factory=dict)  # FLARE id (JSON key) -> share
    slice_sigma_mm: float = 0.0

    def __post_init__(self) -> None:
        for name in ("size_zyx", "patch_zyx"):
            value = getattr(self, name)
            if value is not None and max(value) > MAX_INPUT_VOXELS:
                raise ValueError(f"{name} {list(value)}: at most {MAX_INPUT_VOXELS} voxels "
                                 "per axis")
        if (self.size_zyx is None) == (self.spacing_zyx is None):
            raise ValueError("give either size_zyx or spacing_zyx (with patch_zyx)")
        if self.size_zyx is not None:
            if min(self.size_zyx) < 1:
                raise ValueError(f"size_zyx must be positive, got {list(self.size_zyx)}")
            if self.patch_zyx is not None or self.infer_spacing_zyx is not None:
                raise ValueError("patch_zyx and infer_spacing_zyx go with spacing_zyx")
        else:
            if self.patch_zyx is None:
                raise ValueError("spacing_zyx needs patch_zyx (the network input)")
            if min(self.patch_zyx) < 1:
                raise ValueError(f"patch_zyx must be positive, got {list(self.patch_zyx)}")
            for s in (*self.spacing_zyx, *(self.infer_spacing_zyx or ())):
                _positive("spacing", s)
        if self.pad == "aspect" and self.size_zyx is None:
            raise ValueError("pad 'aspect' needs size_zyx")
        if self.margin_mm < 0:
            raise ValueError(f"margin_mm must be >= 0, got {self.margin_mm}")
        if self.slice_sigma_mm < 0:
            raise ValueError(f"slice_sigma_mm must be >= 0, got {self.slice_sigma_mm}")
        if self.slice_sigma_mm > 0 and (self.patch_zyx is None or self.patch_zyx[0] != 1):
            raise ValueError("slice_sigma_mm is for 2-D networks (patch_zyx [1, H, W]), got "
                             f"{'size_zyx' if self.patch_zyx is None else 'patch_zyx'} "
                             f"{list(self.input_zyx)}")
        _fraction("jitter", self.jitter)
        _fraction("context", self.context)
        _fraction("overlap", self.overlap, upper_open=True)
        _fraction("foreground_fraction", self.foreground_fraction)
        bad = [k for k in self.focus if not (k.isdigit() and int(k) in CLASSES)]
        if bad:
            raise ValueError(f"focus: '{bad[0]}' is not a FLARE class id (1..{MAX_LABEL})")
        if any(v < 0 for v in self.focus.values()) or sum(self.focus.values()) > 1:
            raise ValueError("focus: shares must be >= 0 and sum to at most 1")

    @property
    def input_zyx(self) -> tuple[int, int, int]:
        """The network's input size."""
        return self.size_zyx or self.patch_zyx  # type: ignore[return-value]

    def spacing(self, training: bool):
        return self.spacing_zyx if training else (self.infer_spacing_zyx or self.spacing_zyx)


@dataclass(frozen=True)
class IntensityScheme:
    """``foreground``: clip to these percentiles of labelled foreground voxels and z-score with
    their mean/std (computed from the training cases, nnU-Net's CT scheme); ``window``: clip
    to ``hu`` and map linearly onto ``to``; ``zscore_image``: z-score with the mean and std of
    the region the stage sees, per image (seed 003)."""

    scheme: Literal["foreground", "window", "zscore_image"] = "foreground"
    percentiles: tuple[float, float] = (0.5, 99.5)
    hu: tuple[float, float] | None = None
    to: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self) -> None:
        if self.scheme == "window" and self.hu is None:
            raise ValueError("scheme 'window' needs hu: [lower, upper]")
        if self.hu is not None and not self.hu[0] < self.hu[1]:
            raise ValueError(f"hu must be [lower, upper] with lower < upper, got {self.hu}")
        lo, hi = self.percentiles
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"percentiles must be 0 <= low < high <= 100, got {lo, hi}")
        if not self.to[0] < self.to[1]:
            raise ValueError(f"to must be [low, high] with low < high, got {self.to}")


@dataclass(frozen=True)
class SyntheticLesions:
    """Lesions painted into training samples, so that a tumor stage sees thousands of lesions
    instead of memorising the few of its training cases (the idea of Hu et al., "Label-free
    liver tumor segmentation", CVPR 2023, made generic over hosts).

    With ``probability`` a sample whose patch holds one of ``hosts`` (FLARE ids) gets
    ``count`` (low, high, inclusive) lesions, each in one host organ of the sample (drawn
    first, each organ present as likely as another, then one of its voxels as the centre):
    an ellipsoid (axes 0.75-1.25 of the diameter, turned in-plane, a lobulated outline) of a
    diameter drawn log-uniformly from ``diameter_mm``, shrunk until its organ is seen all
    round it (dropped when that leaves it under the smallest diameter), cut to its organ,
    partial-volumed over
    one voxel at its edge, and offset from the host by ``contrast_hu`` (darker with
    probability ``darker``, else brighter). The host's texture and noise stay. A lesion of at
    least 20 mm gets, with probability ``rim``, an enhancing rim (a tenth to a fifth of its
    radius, as bright above the host as the body is dark). Its voxels become tumor (14) in
    the label. In a 2-D patch the centre lies up to 0.6 radii off the slice, so the network
    sees a lesion's smaller cross-sections too."""

    probability: float = 0.5
    hosts: tuple[int, ...] = (1, 2, 4, 11, 13)
    count: tuple[int, int] = (1, 2)
    diameter_mm: tuple[float, float] = (8.0, 50.0)
    contrast_hu: tuple[float, float] = (20.0, 60.0)
    darker: float = 0.8
    rim: float = 0.3

    def __post_init__(self) -> None:
        for name in ("probability", "darker", "rim"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not self.hosts or any(not 1 <= h <= MAX_LABEL or h == TUMOR for h in self.hosts):
            raise ValueError(f"hosts must be organ ids 1..13, got {list(self.hosts)}")
        if not 1 <= self.count[0] <= self.count[1]:
            raise ValueError(f"count must be [low, high] with 1 <= low <= high, got "
                             f"{list(self.count)}")
        for name in ("diameter_mm", "contrast_hu"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be [low, high] with 0 < low <= high, got "
                                 f"{[low, high]}")


@dataclass(frozen=True)
class Augmentation:
    """Online augmentation. ``mirror``: anatomical axes flipped in training (each with
    ``p_flip``), which are also the model's mirror TTA views; a left-right mirror swaps the
    left/right organ pairs with it. ``rotation_about``: anatomical axes rotated about.
    ``settings``: any other field of :class:`flarecli.core.training.augment.AugmentConfig`
    (probabilities and ranges), checked when training starts, on top of ``base``: 'nnunet'
    (AugmentConfig's nnU-Net-like defaults) or 'none' (every probability 0 but the flips',
    so only what ``settings`` names runs: a paper's own augmentation list). ``lesions``:
    synthetic lesions painted in before the other transforms (:class:`SyntheticLesions`)."""

    mirror: tuple[Literal["SI", "AP", "LR"], ...] = ("SI", "AP")
    rotation_about: tuple[Literal["SI", "AP", "LR"], ...] = ("SI", "AP", "LR")
    settings: dict[str, Any] = field(default_factory=dict)
    base: Literal["nnunet", "none"] = "nnunet"
    lesions: SyntheticLesions | None = None

    def __post_init__(self) -> None:
        for name in ("mirror", "rotation_about"):
            axes = getattr(self, name)
            if len(set(axes)) != len(axes):
                raise ValueError(f"{name}: an axis appears twice")
        for reserved in ("flip_axes", "rotation_axes"):
            if reserved in self.settings:
                raise ValueError(f"settings.{reserved}: use mirror / rotation_about")


# -- training methods (named strategies, independent of the target) ---------------------------

@dataclass(frozen=True)
class Supervised:
    """Plain supervised training: every sample's loss counts once."""

    TAG: ClassVar[str] = "supervised"
    TAG_FIELD: ClassVar[str] = "name"


@dataclass(frozen=True)
class SelfTraining:
    """StMt's student: batches hold the data kinds in equal proportions (``balance_kinds``),
    and ``L = sum_k weights[k] * L_k`` (FL 1.0, CPL 1.0, PL 0.5 in the paper)."""

    TAG: ClassVar[str] = "self_training"
    TAG_FIELD: ClassVar[str] = "name"
    weights: dict[str, float] = field(default_factory=lambda: {"FL": 1.0, "CPL": 1.0,
                                                               "PL": 0.5})
    balance_kinds: bool = True

    def __post_init__(self) -> None:
        for kind, w in self.weights.items():
            if kind not in CASE_KINDS:
                raise ValueError(f"weights: '{kind}' is not one of {', '.join(CASE_KINDS)}")
            if w < 0:
                raise ValueError(f"weights.{kind} must be >= 0")


@dataclass(frozen=True)
class MeanTeacher:
    """Mean teacher: the loss on the annotation plus ``weight`` x the loss on the EMA
    teacher's prediction, corrected in real time (annotated voxels forced), with a sigmoid
    ramp-up over the first ``rampup`` of the steps. ``export``: which network becomes the
    bundle (the EMA teacher in StMt)."""

    TAG: ClassVar[str] = "mean_teacher"
    TAG_FIELD: ClassVar[str] = "name"
    ema_decay: float = 0.99
    rampup: float = 0.25
    weight: float = 1.0
    export: Literal["teacher", "student"] = "teacher"

    def __post_init__(self) -> None:
        _fraction("ema_decay", self.ema_decay, upper_open=True)
        _fraction("rampup", self.rampup)
        if self.weight < 0:
            raise ValueError("weight must be >= 0")


@dataclass(frozen=True)
class StagedStep:
    """One step of staged training: its data, the parameters it trains (name prefixes, or
    'all'; the rest stay frozen, bit for bit), the heads its loss trains (default all), and
    its own learning rate and length (default: the stage's)."""

    name: str
    data: str | Subset = "all"
    train: tuple[str, ...] = ("all",)
    heads: tuple[str, ...] | None = None
    lr: float | None = None
    epochs: int | None = None
    iterations: int | None = None

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("epochs", self.epochs)
        _positive("iterations", self.iterations)
        if not self.train:
            raise ValueError("train: name at least one parameter group (or 'all')")


@dataclass(frozen=True)
class Staged:
    """Staged training (seed 002): ordered steps, each starting from the previous one's
    weights, each with its own data, trained parameter groups and heads."""

    TAG: ClassVar[str] = "staged"
    TAG_FIELD: ClassVar[str] = "name"
    steps: tuple[StagedStep, ...] = ()

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("steps: staged training needs at least one step")
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise ValueError("steps: step names must be unique")


Method = Supervised | SelfTraining | MeanTeacher | Staged


@dataclass(frozen=True)
class Loss:
    """Dice + cross-entropy per head (nnU-Net's batch Dice); ``balanced_ce`` weights the
    cross-entropy per class by count^-1/2 within each batch."""

    name: Literal["dice_ce"] = "dice_ce"
    balanced_ce: bool = False


@dataclass(frozen=True)
class Optimizer:
    """Optimiser and learning-rate schedule. ``poly``: (1 - t)^poly_power; ``cosine``;
    ``step``: times ``step_factor`` every ``step_epochs``; ``constant``; ``plateau``: times
    ``plateau_factor`` when the validation loss (the training loss without validation) has
    not improved by 1e-3 for ``plateau_patience`` epochs (nnU-Net v1's ReduceLROnPlateau);
    all after ``warmup_epochs`` of linear warm-up."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.99
    nesterov: bool = True
    weight_decay: float = 3e-5
    schedule: Literal["poly", "cosine", "step", "constant", "plateau"] = "poly"
    poly_power: float = 0.9
    warmup_epochs: int = 0
    step_epochs: int = 200
    step_factor: float = 0.5
    plateau_patience: int = 30
    plateau_factor: float = 0.2
    grad_clip: float = 12.0

    def __post_init__(self) -> None:
        _positive("lr", self.lr)
        _positive("step_epochs", self.step_epochs)
        _positive("plateau_patience", self.plateau_patience)
        _positive("grad_clip", self.grad_clip)
        if not 0 < self.plateau_factor < 1 or not 0 < self.step_factor <= 1:
            raise ValueError("plateau_factor must lie in (0, 1), step_factor in (0, 1]")
        if self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ValueError("weight_decay and warmup_epochs must be >= 0")
        _fraction("momentum", self.momentum, upper_open=True)


@dataclass(frozen=True)
class Stage:
    """One trainable network of the system and everything about how it is trained and fed.

    ``role``: 'roi' (locates the region of interest; its classes are foreground) or 'segment'
    (its heads give output labels). ``data``: the subset it trains on by default (a pipeline
    step may name another). ``heads``: the heads its loss trains (default all). ``select``:
    which weights are 'best': the highest validation Dice, the lowest validation loss
    (Dice + CE), or the lowest validation Dice loss.
    """

    role: Literal["roi", "segment"]
    network: Network
    geometry: StageGeometry
    intensity: IntensityScheme = field(default_factory=IntensityScheme)
    orientation: str = "LPS"
    augmentation: Augmentation | None = None
    method: Method = field(default_factory=Supervised)
    loss: Loss = field(default_factory=Loss)
    optimizer: Optimizer = field(default_factory=Optimizer)
    epochs: int = 500
    iterations: int = 250
    batch_size: int = 2
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    val_fraction: float = 0.1
    select: Literal["dice", "loss", "dice_loss"] = "dice"
    data: str | Subset = "all"
    heads: tuple[str, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        from flarecli.core.preprocessing.orientation import check_orientation_code

        check_orientation_code(self.orientation)
        for name in ("epochs", "iterations", "batch_size"):
            _positive(name, getattr(self, name))
        _fraction("val_fraction", self.val_fraction, upper_open=True)
        for head in self.heads or ():
            if head not in self.network.heads:
                raise ValueError(f"heads: '{head}' is not a head of the network "
                                 f"({', '.join(self.network.heads)})")
        if isinstance(self.method, Staged):
            for step in self.method.steps:
                for head in step.heads or ():
                    if head not in self.network.heads:
                        raise ValueError(f"method.steps.{step.name}.heads: '{head}' is not a "
                                         f"head of the network ({', '.join(self.network.heads)})")

    @property
    def trained_heads(self) -> tuple[str, ...]:
        return self.heads or tuple(self.network.heads)


# ---------------------------------------------------------------------------------------------
# inference graphs
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Roi:
    """The stage whose foreground gives the region of interest: the box of its components of
    at least ``min_fraction`` of the largest one (a mask in two pieces keeps both)."""

    stage: str
    min_fraction: float = 0.1

    def __post_init__(self) -> None:
        _fraction("min_fraction", self.min_fraction)


@dataclass(frozen=True)
class Output:
    """A head whose classes become output labels; ``required``: the model folder must hold
    this stage (an optional one, like StMt's tumor model, is used when present).

    An output merged over earlier ones (StMt's tumor over the organs) can be held to where it
    belongs: ``hosts`` are FLARE ids of the earlier outputs its labels grow in; a voxel
    more than ``host_margin_mm`` from every host voxel is not painted (None: anywhere), nor
    is a voxel an earlier output gave a class that is no host. A
    voxel an earlier output labelled takes this output's label only where the head is sure of
    it -- its label at least p / (1 - p) times as likely as the runner-up, p being
    ``replace_probability``: for a two-class head, a probability of at least p (0.5 is the
    argmax; more keeps an unsure head off the organs), however sure the earlier head was of
    its own (an organ stage too coarse to see a lesion is sure of its organ across it); an
    unlabelled voxel takes the argmax where its component holds a sure voxel.

    ``tta``: the stage always averages its softmax over the mirror views it was trained on,
    as ``flare infer --tta`` does for every stage (a stage that learned with a left-right
    mirror and still tells the sides apart is unsure where the views disagree)."""

    stage: str
    head: str | None = None
    required: bool = True
    hosts: tuple[int, ...] | None = None
    host_margin_mm: float = 0.0
    replace_probability: float = 0.5
    tta: bool = False

    def __post_init__(self) -> None:
        if self.hosts is not None:
            if not self.hosts:
                raise ValueError("hosts: name at least one class (or leave it out)")
            _check_classes("hosts", self.hosts)
        if self.host_margin_mm < 0:
            raise ValueError(f"host_margin_mm must be >= 0, got {self.host_margin_mm}")
        if not 0.5 <= self.replace_probability <= 1.0:
            raise ValueError(f"replace_probability must lie in [0.5, 1], got "
                             f"{self.replace_probability}")


@dataclass(frozen=True)
class Postprocess:
    """Connected components: ``largest_component`` classes keep their largest component;
    tumor components below ``min_tumor_mm3`` are dropped."""

    largest_component: tuple[int, ...] = ORGANS
    min_tumor_mm3: float = MIN_TUMOR_MM3
    connectivity: Literal[6, 18, 26] = 26

    def __post_init__(self) -> None:
        _check_classes("largest_component", self.largest_component)
        if self.min_tumor_mm3 < 0:
            raise ValueError("min_tumor_mm3 must be >= 0")


@dataclass(frozen=True)
class Graph:
    """An inference graph: ROI (or none), outputs merged in order (later over earlier where
    they label a voxel), post-processing (or none)."""

    outputs: tuple[Output, ...]
    roi: Roi | None = None
    postprocess: Postprocess | None = field(default_factory=Postprocess)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.outputs:
            raise ValueError("outputs: a model needs at least one output")

    @property
    def stages(self) -> tuple[str, ...]:
        names = [self.roi.stage] if self.roi else []
        return tuple(dict.fromkeys(names + [o.stage for o in self.outputs]))

    @property
    def required(self) -> tuple[str, ...]:
        names = [self.roi.stage] if self.roi else []
        return tuple(dict.fromkeys(names + [o.stage for o in self.outputs if o.required]))


# ---------------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------------

def _folder_name(what: str, name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{what} '{name}' must be a plain folder name")


@dataclass(frozen=True)
class TrainStep:
    """Train ``stage`` into model folder ``model`` (``RUN/<model>/<stage>/``) on ``data``
    (default: the stage's subset) of ``source``: 'audit' (the audit manifest of the dataset),
    'dataset' (the labels taken as complete), or the name of a correct step. ``init`` warm-starts
    from a trained bundle ('MODEL/STAGE'). ``set`` overrides fields of the stage for this
    step. 'retrain' trains a stage again from scratch, replacing an earlier model."""

    TAG: ClassVar[str] = "train"
    TAG_FIELD: ClassVar[str] = "kind"
    name: str
    stage: str
    model: str
    source: str = "audit"
    data: str | Subset | None = None
    init: str | None = None
    set: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _folder_name("name", self.name)
        _folder_name("model", self.model)


@dataclass(frozen=True)
class RetrainStep(TrainStep):
    TAG: ClassVar[str] = "retrain"


@dataclass(frozen=True)
class PseudolabelStep:
    """Pseudo-label the ``cases`` subset of the dataset with the model folder ``model`` (its
    ``graph``, or the first graph it holds completely) into ``RUN/<name>/`` (mirror TTA when
    ``tta``, connected-component clean-up when ``clean``)."""

    TAG: ClassVar[str] = "pseudolabel"
    TAG_FIELD: ClassVar[str] = "kind"
    name: str
    model: str
    graph: str | None = None
    cases: str | Subset = "all"
    tta: bool = False
    with_tumor: bool = False
    clean: bool = True

    def __post_init__(self) -> None:
        _folder_name("name", self.name)


@dataclass(frozen=True)
class CorrectStep:
    """Correct the pseudo-labels of step ``pseudo`` with the dataset's partial labels by
    ``rule`` ('stmt': the annotation wins; 'supplement': seed 004's rule, the same result;
    'none': the pseudo-label as it is, the partial annotation unused) into ``RUN/<name>/``
    with its manifest (each case FL, CPL or PL). Only the ``cases`` subset is corrected; the
    other labelled cases go into the manifest as they are (FL, or ``partial``)."""

    TAG: ClassVar[str] = "correct"
    TAG_FIELD: ClassVar[str] = "kind"
    name: str
    pseudo: str
    rule: Literal["stmt", "supplement", "none"] = "stmt"
    cases: str | Subset = "all"

    def __post_init__(self) -> None:
        _folder_name("name", self.name)


Step = TrainStep | RetrainStep | PseudolabelStep | CorrectStep


@dataclass(frozen=True)
class Pipeline:
    """The steps that make the system; ``final``: the model folder ``flare demo`` evaluates
    (with ``final_graph``, or the first graph it holds completely)."""

    steps: tuple[Step, ...]
    final: str
    final_graph: str | None = None

    def __post_init__(self) -> None:
        names = [s.name for s in self.steps]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"steps: step name '{sorted(dup)[0]}' appears twice")


@dataclass(frozen=True)
class SynthConfig:
    """How big a synthetic dataset is: the recipe's ``demo`` section (the dataset ``flare
    demo`` makes for it) and ``flare synth``'s options, one dataclass for both.

    Partially labeled training, unlabeled and fully labeled test cases, and the in-plane
    matrix size (``size x size``; the slice count follows from the anatomy). The defaults
    are the recipe section's, 40/10/6 at 96: every built-in recipe's ``cpu`` preset uses
    them, and a recipe file without a ``demo`` section has always meant them; ``flare synth``
    passes its own options. The seed is not part of it: it is the run's, and two datasets of
    one size differ by it alone. It lives with the recipe format, below the synth package
    that makes the dataset."""

    train: int = 40
    unlabeled: int = 10
    test: int = 6
    size: int = 96

    def validate(self) -> None:
        """InputError, naming the ``flare synth`` option, unless a dataset can be made: no
        count below 0, at least one case, an in-plane size in 32..1024."""
        for name in ("train", "unlabeled", "test"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name} must be >= 0")
        if self.train + self.unlabeled + self.test == 0:
            raise InputError("nothing to generate: all split sizes are 0")
        if not 32 <= self.size <= 1024:
            raise InputError(f"--size {self.size}: choose an in-plane size in 32..1024")


@dataclass(frozen=True)
class Recipe:
    """A resolved recipe: a preset applied, stage inheritance resolved."""

    schema_version: int
    name: str
    title: str
    stages: dict[str, Stage]
    models: dict[str, Graph]
    pipeline: Pipeline
    description: str = ""
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    subsets: dict[str, Subset] = field(default_factory=dict)
    demo: SynthConfig = field(default_factory=SynthConfig)
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(f"schema_version {self.schema_version} is not supported "
                             f"(this flare reads {SCHEMA_VERSION})")
        # what flare demo needs of its dataset (flare synth checks the rest when it runs)
        _positive("demo.train", self.demo.train)
        _positive("demo.test", self.demo.test)
        if self.demo.unlabeled < 0:
            raise ValueError("demo.unlabeled must be >= 0")
        if self.demo.size < 16:
            raise ValueError("demo.size must be >= 16")

    def stage(self, name: str) -> Stage:
        return self.stages[name]

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)
