"""The lab: the shapes world and its demo models' training, the sampler benchmark, speed measurements and the
GPU runner. Research code that uses the engine (``tcts``); the ComfyUI pack does not import it and the
registry package leaves it out."""
