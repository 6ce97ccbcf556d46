"""API-format prompts for tests that drive our nodes in a real ComfyUI."""
from __future__ import annotations

MODEL = "shapes-demo"  # the bundled demo model's folder name; tests place the tiny aMUSEd there


def sampler_settings(**overrides):
    settings = {"width": 96, "height": 128, "batch_size": 1, "steps": 4, "cfg": 10.0, "seed": 0,
                "schedule": "cosine", "choice_temperature": 2.0, "temperature": 1.0, "preview": "colours"}
    return {**settings, **overrides}


def txt2img(sampler="purity", prompt="a photo of a red cat", model=MODEL, node="TCTSPersistentSampler",
            extra=None, **overrides):
    inputs = {"sampler": sampler, "model": ["1", 0], "positive": ["2", 0], "negative": ["2", 1],
              **sampler_settings(**overrides), **(extra or {})}
    return {
        "1": {"class_type": "TCTSLoadModel", "inputs": {"model_name": model, "dtype": "auto"}},
        "2": {"class_type": "TCTSTextEncode", "inputs": {"clip": ["1", 2], "prompt": prompt, "negative": ""}},
        "3": {"class_type": node, "inputs": inputs},
        "4": {"class_type": "TCTSVQDecode", "inputs": {"vq": ["1", 1], "tokens": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "tcts"}},
    }
