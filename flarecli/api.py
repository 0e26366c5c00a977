"""flare's public Python API: segmenting, scoring and measuring scans; recipes and the
generic pipeline runner. The same engine as the command line.

Everything here is plain, typed and silent: it prints nothing (an OpenVINO fallback is a
:mod:`warnings` warning) and raises :class:`flarecli.core.errors.FlareError` subclasses (with
an ``exit_code`` and a ``hint``). Images are SimpleITK images or NIfTI paths.

    import flarecli

    seg = flarecli.Segmenter("model")                 # loads the model once
    labels = seg.segment("case_0000.nii.gz")          # a SimpleITK label image on its grid
    flarecli.segment(image, "model")                  # one call
    flarecli.evaluate(labels, "case.nii.gz")          # {class id: {"dsc", "nsd"}}
    flarecli.stats(labels, image)                     # volumes, HU, lesions by class id

    from flarecli.api import PipelineRun, load_recipe, run_pipeline

    recipe = load_recipe("stmt", preset="cpu")                 # or a recipe file
    result = run_pipeline(PipelineRun(recipe, dataset=Path("data"), out=Path("run")))
    print(result.final)                                        # the model folder to infer with
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from flarecli.core.pipeline.runner import (
    PipelineProgress,
    PipelineResult,
    PipelineRun,
    StepReport,
    run_pipeline,
)
from flarecli.core.recipes.load import builtin_names, load_recipe, recipe_to_json
from flarecli.core.recipes.spec import Recipe

__all__ = [
    "Segmenter",
    "segment",
    "evaluate",
    "stats",
    "PipelineProgress",
    "PipelineResult",
    "PipelineRun",
    "Recipe",
    "StepReport",
    "builtin_names",
    "load_recipe",
    "recipe_to_json",
    "run_pipeline",
]


def _volume(image: Any, what: str):
    """(array, Geometry) of a SimpleITK image or a NIfTI path."""
    import SimpleITK as sitk

    from flarecli.core.errors import InputError
    from flarecli.core.io.nifti import from_sitk, read_volume

    if isinstance(image, sitk.Image):
        return from_sitk(image, what)
    if isinstance(image, (str, Path)):
        return read_volume(Path(image))
    raise InputError(f"{what}: expected a SimpleITK image or a NIfTI path, got "
                     f"{type(image).__name__}", hint="a NumPy array has no geometry: wrap it "
                     "with SimpleITK.GetImageFromArray and set spacing, origin and direction")


def _labels(image: Any, what: str):
    from flarecli.core.errors import InputError
    from flarecli.core.labels import check_label_values

    array, geometry = _volume(image, what)
    labels, problems = check_label_values(array)
    if labels is None or problems:
        raise InputError(f"{what}: " + "; ".join(problems))
    return labels, geometry


class Segmenter:
    """A model folder loaded once, to segment many scans.

    ``model``: a folder made by ``flare train`` / ``flare demo`` (one bundle per stage and
    ``recipe.json``), or its ``flare export`` zip. ``device``, ``backend``, ``precision``,
    ``cache_dir``, ``calibration``, ``graph``, ``weights`` and ``tta`` mean what the ``flare
    infer`` options of those names mean;
    ``postprocess`` None applies the recipe's post-processing, False none.
    """

    def __init__(self, model: str | Path, device: str = "auto", backend: str = "auto",
                 precision: str = "auto", tta: bool = False, postprocess: bool | None = None,
                 graph: str | None = None, weights: str | None = None,
                 cache_dir: str | Path | None = None,
                 calibration: str | Path | None = None) -> None:
        from flarecli.core.inference.backends import BackendChoice
        from flarecli.core.inference.folder import load_engine, resolved_postprocess
        from flarecli.core.io.archive import opened_model
        from flarecli.core.runtime import inference_device

        self.device = inference_device(device)
        choice = BackendChoice(backend, precision, Path(cache_dir) if cache_dir else None,
                               Path(calibration) if calibration else None)
        choice.check(self.device)
        with opened_model(Path(model)) as folder:  # a model folder or an exported zip
            self.engine = load_engine(folder, self.device, choice, which=weights, graph=graph,
                                      probabilities=tta,
                                      warn=lambda text: warnings.warn(text, stacklevel=3))
        self.tta = tta
        self.postprocess = resolved_postprocess(self.engine, postprocess)

    @property
    def backends(self) -> dict[str, dict[str, Any]]:
        """Per stage: the runtime and the precision it computes in."""
        return self.engine.backends()

    def segment(self, image: Any):
        """The labels (FLARE ids 0-14, uint8) of a CT scan -- a SimpleITK image or a NIfTI
        path -- as a SimpleITK image with exactly its grid."""
        from flarecli.core.io.nifti import to_sitk

        array, geometry = _volume(image, "image")
        pred = self.engine.predict(array, geometry, tta=self.tta, postprocess=self.postprocess)
        return to_sitk(pred.label, geometry)


def segment(image: Any, model: str | Path, **options: Any):
    """Segment one scan with a model folder: ``Segmenter(model, **options).segment(image)``."""
    return Segmenter(model, **options).segment(image)


def evaluate(pred: Any, gt: Any, protocol: str = "exact", nsd_threshold: float = 0.2
             ) -> dict[int, dict[str, float | None]]:
    """FLARE DSC and NSD per class (1-14) of a prediction against the ground truth (SimpleITK
    images or NIfTI paths on the same grid), as ``flare evaluate`` scores one case."""
    from flarecli.core.errors import InputError, check_choice
    from flarecli.core.metrics.evaluate import PROTOCOLS, score_labels

    check_choice("protocol", protocol, PROTOCOLS)
    p, p_geometry = _labels(pred, "prediction")
    g, geometry = _labels(gt, "ground truth")
    mismatch = geometry.mismatches(p_geometry)
    if mismatch:
        raise InputError("prediction vs ground truth " + "; ".join(mismatch))
    return {s.label: {"dsc": s.dsc, "nsd": s.nsd}
            for s in score_labels(g, p, geometry, protocol, nsd_threshold)}


def stats(labels: Any, image: Any = None, min_tumor_mm3: float = 100.0,
          case: str | None = None) -> dict[str, Any]:
    """``flare stats`` of one label map (with HU statistics when the CT is given): the
    ``cases[]`` entry of its JSON, except that ``classes`` is keyed by the FLARE id as an
    ``int`` (as :func:`evaluate` is; JSON files need string keys, Python does not).

    ``id``: ``case`` if given, else the case id of a NIfTI path (``b0`` of ``b0.nii.gz``), else
    None (an in-memory image has no name)."""
    from flarecli.core.errors import InputError
    from flarecli.core.io.nifti_header import strip_nifti_suffix
    from flarecli.core.quantification.stats import case_stats

    if case is None and isinstance(labels, (str, Path)):
        case = strip_nifti_suffix(Path(labels))
    array, geometry = _labels(labels, "labels")
    ct = None
    if image is not None:
        ct, ct_geometry = _volume(image, "image")
        mismatch = geometry.mismatches(ct_geometry)
        if mismatch:
            raise InputError("labels vs image " + "; ".join(mismatch))
    found = case_stats(case, array, geometry, ct, min_tumor_mm3).to_json()
    found["classes"] = {int(c): v for c, v in found["classes"].items()}
    return found
