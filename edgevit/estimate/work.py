"""The work a model gives a backend's runtime, from that backend's cost replay."""
from __future__ import annotations

from ..backends import Backend, get_backend, list_backends
from ..backends.cost import CostReplay, ModelWork
from ..devices import DeviceProfile
from ..errors import EdgevitError
from ..models import prepare_model

__all__ = ["cost_backend", "model_work"]


def cost_backend(profile: DeviceProfile, requested: str = "auto") -> tuple[Backend, CostReplay]:
    """The backend whose lowering is priced: ``requested``, or (auto) the device's preferred backend if it
    has a cost model, else the first of its backends that has one."""
    names = list(profile.compile.backends) if requested in (None, "auto") else [requested]
    if requested in (None, "auto"):
        names.sort(key=lambda n: n != profile.compile.preferred_backend)
    for name in names:
        backend = get_backend(name)
        replay = backend.cost_replay()
        if replay is not None:
            return backend, replay
    if requested in (None, "auto"):
        raise EdgevitError(f"There is no cost model for device '{profile.name}''s backend(s) ({', '.join(names)}): "
                           "none replays its lowering into operators for `edgevit estimate`. Profile the model on "
                           "the device instead (`edgevit compile`, then `edgevit profile`).")
    raise EdgevitError(f"There is no cost model for backend '{requested}' in `edgevit estimate` (it does not "
                       "replay its lowering into operators). Estimate with a backend that does (--backend auto), or "
                       "profile the artifact on the device with `edgevit profile`.")


def model_work(model: str, precision: str, input_shape: tuple[int, ...] | None = None,
               num_classes: int | None = None, replay: CostReplay | None = None) -> ModelWork:
    """Work items of a zoo model (or ``pkg.module:builder``) at ``precision`` (fp32, fp16, int8), as the
    backend of ``replay`` would run them (default: the first registered backend with a cost model)."""
    if replay is None:
        replay = next(r for r in (get_backend(n).cost_replay() for n in list_backends()) if r is not None)
    prepared = prepare_model(model, input_shape, num_classes)
    return replay.model_work(prepared.deployed, prepared.example, precision, prepared.name)
