import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# A CUDA-only torchvision beside the CPU torch is handled by the import hook that
# `python -m tests.support.comfyui_tree setup` installs into the venv (tests/torchvision_shim.py).


# --- real ComfyUI harness (tests/support/comfyui.py) -------------------------------------------
import os  # noqa: E402

import pytest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "comfyui: needs a real ComfyUI tree + its requirements (python -m tests.support.comfyui_tree setup)")
    config.addinivalue_line(
        "markers", "journey: a stock ComfyUI with the pack in custom_nodes/, driven from headless Chromium")
    config.addinivalue_line("markers", "slow: takes minutes; `pytest -m 'not slow'` leaves it out")


def _require_comfyui():
    """Skip (locally) or fail (CI / TCTS_REQUIRE_COMFYUI=1) when ComfyUI is not set up."""
    from tests.support import comfyui_tree

    try:
        comfyui_tree.ensure_comfyui()  # cheap when cached; downloads the 8 MB wheel on first use
        ok, why = comfyui_tree.comfyui_ready()
    except Exception as exc:  # noqa: BLE001
        ok, why = False, f"ComfyUI tree unavailable: {exc}"
    if not ok:
        if os.environ.get("CI") or os.environ.get("TCTS_REQUIRE_COMFYUI"):
            pytest.fail(why)
        pytest.skip(why)
    return comfyui_tree


@pytest.fixture(scope="session")
def comfyui_root():
    """Path of the ComfyUI tree ($COMFYUI_PATH or .cache/comfyui/ComfyUI-0.3.75)."""
    return _require_comfyui().ensure_comfyui()


@pytest.fixture(scope="session")
def comfyui(comfyui_root, tmp_path_factory):
    """The in-process ComfyUI (tests.support.comfyui.InProcessComfyUI), booted once per session."""
    from tests.support import comfyui as harness

    _require_comfyui()
    return harness.get_comfyui(comfyui_root, base_dir=tmp_path_factory.mktemp("comfyui-inproc"))


@pytest.fixture(scope="session")
def pack(comfyui):
    """Our node pack loaded into the in-process ComfyUI (as ComfyUI loads a custom node folder).

    Returns a function mapping a submodule path such as ``"nodes.clip"`` to the loaded module."""
    comfyui.load_custom_nodes(ROOT)

    def module(name: str):
        target = (ROOT / name.replace(".", "/")).with_suffix(".py").resolve()
        for mod in list(sys.modules.values()):
            file = getattr(mod, "__file__", None)
            if file and Path(file).resolve() == target:
                return mod
        raise LookupError(f"{name} was not loaded with the pack")

    return module


# --- no network at run time: every test runs with non-loopback connections refused ----------------
import ipaddress  # noqa: E402
import socket  # noqa: E402


class NetworkBlocked(RuntimeError):
    """A test tried to reach a non-loopback address."""


def _is_loopback(host) -> bool:
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True, scope="session")
def block_network():
    """Generation must never touch the network: refuse (without sending anything) every connection and
    name lookup that is not loopback, for the whole session."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise NetworkBlocked(f"network access is blocked during tests: {address}")

    def connect(self, address):
        check(self, address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not _is_loopback(host):
            raise NetworkBlocked(f"name lookup is blocked during tests: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = real_connect, real_connect_ex, real_getaddrinfo


# --- our pack with tiny models inside the in-process ComfyUI ------------------------------------------
@pytest.fixture(scope="session")
def comfy_models(tmp_path_factory):
    """A ``models/tcts`` folder holding the tiny aMUSEd as ``shapes-demo`` and the tiny Meissonic."""
    import shutil

    from tests.comfy_prompts import MODEL
    from tests.helpers import AMUSED, MEISSONIC

    root = tmp_path_factory.mktemp("tcts-models")
    shutil.copytree(AMUSED, root / MODEL)
    shutil.copytree(MEISSONIC, root / "meissonic-tiny")
    return root


@pytest.fixture(scope="session")
def comfy(comfyui, pack, comfy_models):
    """In-process ComfyUI with our pack loaded and the tiny models registered."""
    comfyui.add_model_folder("tcts", comfy_models)
    return comfyui


# --- the tiny aMUSEd generator and a CFG text condition, shared by the sampling-rule tests ---------------
@pytest.fixture(scope="module")
def model():
    """The tiny random-weight aMUSEd transformer of the reference fixtures."""
    from tcts.checkpoints import load_transformer
    from tests.helpers import AMUSED

    return load_transformer(AMUSED / "transformer")


@pytest.fixture(scope="module")
def cond():
    """Negative '' and positive 'a photo of a red cat' CLIP states of the fixtures (case a3), 128 px."""
    from tcts.sampling.step import Conditioning
    from tests.helpers import AMUSED, load_case

    ref = load_case(AMUSED / "cases" / "a3_grid8x8_allmask_clip.safetensors")
    hidden, pooled = ref["encoder_hidden_states"], ref["pooled_text_emb"]
    return Conditioning(hidden[1:], pooled[1:], ref["micro_conds"][1:], hidden[:1], pooled[:1])
