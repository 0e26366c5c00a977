"""``flare report``: what flare's commands wrote into a folder, gathered into one HTML page;
and the training-curve picture (``progress.png``) of a training run."""
