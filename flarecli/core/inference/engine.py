"""The inference engine behind ``flare infer`` and ``flare pseudolabel``: a model folder's
inference graph, run on one scan.

A model folder holds one bundle per trained stage (``MODEL/<stage>/``) and the recipe that
trained them (``MODEL/recipe.json``, its graphs under ``models``). The engine runs the graph
asked for, or the first whose required stages are all there; a folder without
``recipe.json`` (written before recipes existed) is read as the ``stmt`` recipe.

Per scan (any orientation, spacing or slice count), in the canonical orientation (a
transpose and flips, undone at the end):

1. the ROI stage, if the graph has one, sees the whole scan; the box of its foreground
   components of at least ``min_fraction`` of the largest, mapped back to the scan's voxels,
   is the region of interest (the whole scan when it finds nothing);
2. each output stage sees the ROI plus its own margin (or the whole scan); its head's classes
   become FLARE ids, and the outputs are merged in order, later over earlier where they
   label a voxel (StMt: tumor over organs);
3. each output is post-processed on its region (largest component per organ, small tumor
   specks dropped) before the merge, and the merged labels are pasted into a volume of the
   scan's size.

Resampling runs on the CPU and only network-size tensors go to the device, so device memory
does not grow with the slice count (measured: ../shared/PERFORMANCE.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flarecli.core.errors import ModelError, did_you_mean
from flarecli.core.inference import stages as ST
from flarecli.core.inference.backends import BackendChoice, torch_settings
from flarecli.core.inference.int8 import Int8Calibration
from flarecli.core.inference.profiling import step
from flarecli.core.io.files import read_json
from flarecli.core.io.geometry import Geometry
from flarecli.core.labels import TUMOR
from flarecli.core.postprocessing.components import postprocess as clean
from flarecli.core.preprocessing.boxes import (
    Box,
    box_of,
    crop,
    expand_box,
    margin_voxels,
    pad_to_aspect,
    paste,
    whole,
)
from flarecli.core.preprocessing.connected import main_components
from flarecli.core.preprocessing.orientation import to_canonical
from flarecli.core.recipes import spec as S
from flarecli.core.recipes.heads import plain_classes
from flarecli.core.recipes.load import load_recipe, output_head, recipe_from_json
from flarecli.core.runtime import return_large_frees


@dataclass
class Prediction:
    label: np.ndarray  # uint8 FLARE ids, the scan's shape
    roi: Box  # in the canonical orientation
    seconds: dict[str, float] = field(default_factory=dict)
    confidence: float | None = None  # mean max-probability inside the first output's labels
    agreement: float | None = None  # mean agreement of the TTA views with the final labels


def read_model_recipe(model_dir: Path) -> S.Recipe:
    """The recipe of a model folder (``stmt`` for folders written before recipes existed)."""
    path = Path(model_dir) / "recipe.json"
    if not path.is_file():
        return _as_before_recipes(load_recipe("stmt", "paper"))
    return recipe_from_json(read_json(path, "model recipe", ModelError), str(path))


def _as_before_recipes(recipe: S.Recipe) -> S.Recipe:
    """stmt as folders written before recipes were run: each output painted over the earlier
    ones by its argmax alone (the merge rules came later; such a folder keeps its labels)."""
    from dataclasses import replace

    plain = {name: replace(graph, outputs=tuple(
        S.Output(o.stage, o.head, o.required) for o in graph.outputs))
        for name, graph in recipe.models.items()}
    return replace(recipe, models=plain)


def stage_folders(recipe: S.Recipe, model_dir: Path) -> tuple[set[str], dict[str, str]]:
    """(the recipe's stages whose folder holds a model.json, {stage: why its folder is
    unusable}). A stage without a folder is absent, which is fine for an optional one; a
    folder that is there but holds no model.json file (weights alone, model.json a folder,
    a file where the folder should be) is unusable: skipping it would silently run a
    different model than the one the folder seems to hold."""
    present, broken = set(), {}
    for stage in recipe.stages:
        folder = Path(model_dir) / stage
        if not (folder.exists() or folder.is_symlink()):
            continue
        meta = folder / "model.json"
        if meta.is_file():
            present.add(stage)
        elif not folder.is_dir():
            broken[stage] = f"{folder}: stage '{stage}' is not a folder"
        elif meta.exists():
            broken[stage] = f"{meta}: not a file"
        else:
            broken[stage] = f"{folder}: stage folder without a model.json"
    return present, broken


def choose_graph(recipe: S.Recipe, model_dir: Path, name: str | None = None
                 ) -> tuple[str, S.Graph]:
    """Graph ``name`` of the recipe, or the first whose required stages the folder holds.
    Raises ModelError when a stage of that graph has a folder that is unusable
    (:func:`stage_folders`), or no graph is complete."""
    present, broken = stage_folders(recipe, model_dir) if Path(model_dir).is_dir() \
        else (set(), {})

    def refuse_broken(graph: S.Graph) -> None:
        for stage in graph.stages:
            if stage in broken:
                raise ModelError(f"{broken[stage]} (an unfinished or damaged stage)",
                                 hint=f"finish it with flare train --stage {stage}, or remove "
                                 "the folder")
    if name is not None and name not in recipe.models:
        raise ModelError(f"{model_dir}: recipe '{recipe.name}' has no model '{name}'",
                         hint=did_you_mean(name, list(recipe.models))
                         or f"models: {', '.join(recipe.models)}")
    for graph_name, graph in recipe.models.items():
        if name not in (None, graph_name):
            continue
        if all(s in present for s in graph.required):
            refuse_broken(graph)
            return graph_name, graph
    for graph_name, graph in recipe.models.items():
        if name in (None, graph_name):
            refuse_broken(graph)
    wanted = "; ".join(f"{n}: {', '.join(g.required)}" for n, g in recipe.models.items())
    raise ModelError(f"{model_dir}: holds no complete model of recipe '{recipe.name}' "
                     f"(found {', '.join(sorted(present)) or 'no bundles'}; needs {wanted})",
                     hint="train the missing stages with flare train --stage")


def produces_tumor(stage: S.Stage, head: str) -> bool:
    return TUMOR in stage.network.heads[head]


def only_tumor(stage: S.Stage, head: str) -> bool:
    """The head labels tumor and nothing else (a class merging host organs labels none)."""
    return plain_classes(stage.network.heads[head]) == {TUMOR}


def merged_over(ids: np.ndarray, earlier: np.ndarray, rule: S.Output, spacing_zyx,
                sure: np.ndarray | None) -> np.ndarray:
    """An output's labels (FLARE ids on its box) as they may go over the earlier outputs'
    labels ``earlier`` (same box): only within ``rule.host_margin_mm`` of a host class and
    never over a class that is no host (a liver lesion may take liver voxels, never the
    gallbladder's), and over a labelled voxel only where ``sure`` (the labels the head is
    sure of at ``rule.replace_probability``: :mod:`flarecli.core.inference.sure`; None: the
    argmax is enough) says so too. With ``sure``, a painted component (26-connected, per
    label) is kept only if it holds a sure voxel: an unlabelled voxel takes the argmax only
    beside a sure one, so a region the head is lukewarm about throughout is no lesion
    (hysteresis, as in edge detection). How sure the earlier head was plays no part: an
    organ stage too coarse to see a lesion is sure of its organ across it."""
    from flarecli.core.postprocessing.components import near
    from flarecli.core.preprocessing.connected import labelled_components

    keep = ids > 0
    if rule.hosts is not None:
        host = np.isin(earlier, rule.hosts)
        keep = near(keep, host, spacing_zyx, rule.host_margin_mm) & (host | (earlier == 0))
    if sure is not None:
        keep &= (earlier == 0) | (sure == ids)
        for value in np.unique(ids[keep]):
            mine = keep & (ids == value)
            components, _ = labelled_components(mine, 26)
            seeded = np.zeros(int(components.max()) + 1, bool)
            seeded[components[mine & (sure == ids)]] = True
            seeded[0] = False
            keep &= ~mine | seeded[components]
    return np.where(keep, ids, 0).astype(ids.dtype)


class Engine:
    """The loaded graph of a model folder."""

    def __init__(self, model_dir: Path, device, with_tumor: bool = True,
                 which: str | None = None, graph: str | None = None,
                 backend: BackendChoice | None = None,
                 warn: Callable[[str], None] | None = None, probabilities: bool = False,
                 calibration: Int8Calibration | None = None,
                 progress: Callable[[str], None] | None = None) -> None:
        """``probabilities``: the run asks for TTA or confidence scores, so the output
        stages' backends are built for softmax outputs, not labels only (a backend builds the
        other kind when asked, so this is about speed, not correctness). ``calibration``: the
        inputs that quantize the networks, with ``backend.precision`` 'int8' (and only then;
        :func:`flarecli.core.inference.folder.load_engine` makes both from a run's options).
        ``progress(text)``: told when a stage's OpenVINO compilation starts and ends (the
        first run on a CPU: 30-50 s before any scan)."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelError(f"{model_dir}: model folder not found")
        int8 = backend is not None and backend.precision == "int8"
        if int8 != (calibration is not None):
            raise ValueError("an int8 engine needs its calibration, and only an int8 engine")
        self.model_dir, self.device = model_dir, device
        self.backend_choice, self.warn, self.progress = backend, warn, progress
        self.fallbacks: list[str] = []  # why OpenVINO was not used (backend 'auto')
        self.recipe = read_model_recipe(model_dir)
        self.graph_name, self.graph = choose_graph(self.recipe, model_dir, graph)
        self.calibration = calibration
        choice = backend or BackendChoice("torch")  # load_stage's default
        if choice.runs_torch(device):  # before the stages load in threads
            torch_settings(device, choice)
        else:
            return_large_frees()
        self.outputs: list[tuple[str, str]] = []  # (stage, head) in merge order
        self.merge: dict[tuple[str, str], S.Output] = {}  # how each is merged over the others
        # without tumor: a head of tumor only is not run (nor loaded); one that labels organs
        # and tumor (a 14-class network) runs, and its tumor voxels are left unlabelled --
        # FLARE's organ labels do not hold the lesions inside them either
        self.tumor_left_out: set[tuple[str, str]] = set()
        skipped = []
        for i, out in enumerate(self.graph.outputs):
            folder = model_dir / out.stage
            if not (folder / "model.json").is_file():
                continue  # an optional stage that was not trained
            spec = ST.stage_spec(folder)
            head = output_head(spec, out,
                               f"{model_dir}/recipe.json: models.{self.graph_name}.outputs[{i}]")
            if not with_tumor and only_tumor(spec, head):
                skipped.append(out.stage)
                continue
            if not with_tumor and produces_tumor(spec, head):
                self.tumor_left_out.add((out.stage, head))
            self.outputs.append((out.stage, head))
            self.merge[(out.stage, head)] = out
        if skipped and not self.outputs:
            raise ModelError(f"{model_dir}: model '{self.graph_name}' labels only tumor "
                             f"({', '.join(skipped)}), and tumor was left out",
                             hint="include it (pseudolabel --with-tumor)")
        # the probability each head's labels must reach to count as sure (its merge rule's)
        self.sure_at = {key: self.merge[key].replace_probability for key in self.outputs
                        if self.merge[key].replace_probability > 0.5}
        # the stages that average their mirror views on every run (their outputs' tta)
        self.always_tta = {name for (name, _), out in self.merge.items() if out.tta}
        self.stages: dict[str, ST.LoadedStage] = {}
        self._load_all(which, probabilities)
        self.roi_stage = None
        if self.graph.roi is not None:
            self.roi_stage = self.stages[self.graph.roi.stage]
        if self.fallbacks and warn is not None:
            torch_stages = [n for n, s in self.stages.items() if s.backend.name == "torch"]
            warn(f"warning: OpenVINO not used: {'; '.join(dict.fromkeys(self.fallbacks))}; "
                 f"running {', '.join(torch_stages)} with torch")

    def _load_all(self, which: str | None, probabilities: bool) -> None:
        """Load the graph's stages at once, in threads: reading a cached OpenVINO model is
        native code that runs beside the others (three paper-size stages: 1.1 -> 0.35 s).
        The ROI stage only ever gives labels; output stages give probabilities when asked,
        else labels and the sure labels of their merge rules."""
        from concurrent.futures import ThreadPoolExecutor

        wanted: dict[str, bool] = {}  # the stages that run (not one left out) -> probabilities
        for (name, _), out in self.merge.items():
            wanted[name] = wanted.get(name, False) or probabilities or out.tta
        if self.graph.roi is not None:
            wanted[self.graph.roi.stage] = wanted.get(self.graph.roi.stage, False)

        def load(name: str) -> ST.LoadedStage:
            sure = {h: p for (n, h), p in self.sure_at.items() if n == name}
            return ST.load_stage(name, self.model_dir / name, self.device, which,
                                 self.backend_choice, self.warn, self.fallbacks, wanted[name],
                                 self.calibration, self.progress, sure)

        choice = self.backend_choice
        if self.device.type == "cpu" and (choice is None or choice.name != "torch"):
            # the first import of openvino on two threads at once once deadlocked on
            # logging's lock (seen in a demo's pseudo-label step): import it here, first
            from flarecli.core.inference.openvino import NotInstalled, _openvino

            with contextlib.suppress(NotInstalled):
                _openvino()
        with ThreadPoolExecutor(max(1, len(wanted))) as pool:
            loaded = {name: pool.submit(load, name) for name in wanted}
        for name, future in loaded.items():  # the first failure, in graph order
            self.stages[name] = future.result()

    @property
    def labels_tumor(self) -> bool:
        """Whether any output may label tumor (the run record's ``with_tumor``)."""
        return any(produces_tumor(self.stages[s].stage, h) for s, h in self.outputs
                   if (s, h) not in self.tumor_left_out)

    def checksums(self) -> dict[str, str]:
        """SHA-256 of the weights each stage actually runs with."""
        return {name: s.sha256 for name, s in self.stages.items()}

    def weights(self) -> dict[str, str]:
        return {name: s.which for name, s in self.stages.items()}

    def backends(self) -> dict[str, dict[str, Any]]:
        """Per stage: the runtime and the precision it computes in (the run record's)."""
        out = {}
        for name, s in self.stages.items():
            b = s.backend
            out[name] = {"backend": b.name, "precision": b.precision}
            if getattr(b, "entry", None) is not None:
                out[name]["cache"] = str(b.entry)
                out[name]["cached"] = b.cached
            if b.precision == "int8" and self.calibration is not None:
                out[name]["calibration_sha256"] = self.calibration.digest
        return out

    def tta_for(self, name: str, tta: bool) -> bool:
        """Whether stage ``name`` averages its mirror views: the run's ``--tta``, or always
        where one of its outputs asks for it."""
        return tta or name in self.always_tta

    def views(self, tta: bool) -> dict[str, int]:
        """TTA views per output stage (``tta``: the run's ``--tta``)."""
        return {name: len(self.stages[name].views(self.tta_for(name, tta)))
                for name, _ in dict.fromkeys(self.outputs)}

    # -- the pipeline ----------------------------------------------------------------------

    def roi(self, image: np.ndarray, spacing_zyx, fill: float) -> Box:
        """Box (canonical voxels) of the ROI stage's main foreground components.

        Components are taken at the ROI stage's grid and the box scaled to the scan
        (outward), which avoids labelling a full-size mask. Every component of at least
        ``min_fraction`` of the largest is kept: a coarse mask that came out in pieces (liver
        side and spleen side) must not lose half the abdomen; specks are still dropped.
        """
        ls = self.roi_stage
        assert ls is not None and self.graph.roi is not None
        net_in, shape, r = ST.prepare(ls, image, whole(image.shape), spacing_zyx, fill)
        with step(f"network {ls.name}"):
            labels = ST.network_labels(ls, net_in, tta=False, slice_mm=ST.grid_slice_mm(
                net_in, shape, r.spacing(spacing_zyx)))
        mask = next(iter(labels.values())) > 0
        with step("roi box"):
            found = main_components(mask, self.graph.roi.min_fraction)
        if found is None:
            return whole(image.shape)
        box = box_of(found)
        scale = [s / m for s, m in zip(shape, mask.shape, strict=True)]
        box = tuple((int(np.floor(a * f)), int(np.ceil(b * f)))
                    for (a, b), f in zip(box, scale, strict=True))  # type: ignore[assignment]
        return ST.invert_box(box, r, shape)

    def region(self, ls: ST.LoadedStage, roi: Box | None, image_shape, spacing_zyx) -> Box:
        """The box a stage sees: the whole scan, or the ROI plus the stage's margin (padded
        to its aspect when it asks)."""
        g = ls.stage.geometry
        if g.region == "whole" or roi is None:
            box = whole(image_shape)
        else:
            box = expand_box(roi, margin_voxels(g.margin_mm, spacing_zyx), image_shape)
        if g.pad == "aspect":
            r = ls.orient
            size = [0, 0, 0]
            for c, p in enumerate(r.perm):  # the stage's size in canonical axis order
                size[p] = g.size_zyx[c]  # type: ignore[index]
            box = pad_to_aspect(box, spacing_zyx, size)
        return box

    def predict(self, image: np.ndarray, geometry: Geometry, tta: bool = False,
                stats: bool = False, postprocess: S.Postprocess | None = None) -> Prediction:
        """Labels of one scan (see the module docstring). ``postprocess`` cleans each output
        before the outputs are merged: an organ's largest component is found before tumors
        are overlaid, so a tumor across an organ does not cut it into pieces that are then
        thrown away."""
        t0 = time.perf_counter()
        # the scan and its labels are seen in canonical order through views: no copy of
        # either (every stage crops and normalises its region into arrays of its own)
        reorient = to_canonical(geometry.direction)
        labels_of_scan = np.zeros(image.shape, np.uint8)
        image = reorient.view(image)
        spacing = reorient.spacing(geometry.spacing_zyx)
        fill = float(image.min()) if image.size else 0.0
        roi = self.roi(image, spacing, fill) if self.roi_stage is not None else None
        t1 = time.perf_counter()
        out = reorient.view(labels_of_scan)
        info: dict[str, Any] = {}
        done: dict[str, tuple[Box, dict[str, np.ndarray]]] = {}
        memo: dict = {}  # network inputs, shared by stages that read a region alike
        last = {name: i for i, (name, _) in enumerate(self.outputs)}  # a stage's last head
        for i, (name, head) in enumerate(self.outputs):
            ls = self.stages[name]
            rule = self.merge[(name, head)]
            if name not in done:
                box = self.region(ls, roi, image.shape, spacing)
                sure = {h: p for (n, h), p in self.sure_at.items() if n == name}
                done[name] = (box, ST.segment(ls, image, box, spacing, fill,
                                              self.tta_for(name, tta),
                                              info if stats and not done else None, memo,
                                              sure))
            box, labels = done[name]
            with step("class ids"):
                lut = ls.ids(head)
                if (name, head) in self.tumor_left_out:
                    lut = np.where(lut == TUMOR, 0, lut).astype(np.uint8)
                ids = lut[labels[head]]
                sure_ids = lut[labels[head + ST.SURE]] if head + ST.SURE in labels else None
            if rule.hosts is not None or rule.replace_probability > 0.5:
                with step("merge rule"):
                    ids = merged_over(ids, crop(out, box, 0), rule, spacing,
                                      sure_ids)
            if postprocess is not None:
                with step("postprocess"):
                    ids, _ = clean(ids, geometry.voxel_volume_mm3, postprocess.connectivity,
                                   postprocess.min_tumor_mm3,
                                   tuple(postprocess.largest_component))
            with step("paste"):
                paste(out, ids, box, labelled_only=True)
            # free this output's arrays before the next network runs (its peak is the run's)
            del ids, sure_ids
            if last[name] == i:
                del done[name], labels
        memo.clear()
        t2 = time.perf_counter()
        return Prediction(labels_of_scan, roi if roi is not None else whole(image.shape),
                          {"coarse": t1 - t0, "fine": t2 - t1}, info.get("confidence"),
                          info.get("agreement"))
