"""The Flax model's per-layer progress signal, in a form a cached program can hold.

A forward pass reports each encoder layer it finishes. jax's host callbacks
(`jax.debug.callback`) would do it, but a program holding one is tied to the process that
compiled it (it calls the callback by its index in that process's table), so jax never writes
such a program to its persistent compilation cache and the Flax model would be compiled anew
by every run. An XLA FFI call names its handler instead: the program holds the name
`owlvit_layer_done`, which every process that imports the model registers, so a program
compiled by one run executes in the next and still signals each layer.

The handler is a ctypes function speaking XLA's FFI C ABI (`xla/ffi/api/c_api.h`, shipped in
jaxlib): asked once for its metadata, it states the API version its few fields come from;
called in the execute stage, it runs `on_layer`. The call's operand is a scalar of the layer's
output, so it runs when that layer is done. Elsewhere than on a CPU (where a handler runs when
work is queued, not when it is done), or if the registration fails, the signal is jax's own
host callback: progress as before, without the cache.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

import jax

TARGET = "owlvit_layer_done"
METADATA_EXTENSION = 1  # XLA_FFI_Extension_Metadata
EXECUTE_STAGE = 3  # XLA_FFI_ExecutionStage_EXECUTE
HANDLER_API_VERSION = (0, 1)  # the fields read and written here exist since FFI 0.1


class _Extension(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("type", ctypes.c_int), ("next", ctypes.c_void_p)]


class _ApiVersion(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.c_void_p),
        ("major_version", ctypes.c_int),
        ("minor_version", ctypes.c_int),
    ]


class _Metadata(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("api_version", _ApiVersion),
        ("traits", ctypes.c_uint32),
    ]


class _MetadataExtension(ctypes.Structure):
    _fields_ = [("extension_base", _Extension), ("metadata", ctypes.POINTER(_Metadata))]


class _CallFrame(ctypes.Structure):  # its leading fields; the rest is not read
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("extension_start", ctypes.POINTER(_Extension)),
        ("api", ctypes.c_void_p),
        ("ctx", ctypes.c_void_p),
        ("stage", ctypes.c_int),
    ]


_Handler = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.POINTER(_CallFrame))
_registered: list[Any] = []  # the ctypes handler: alive as long as the process


def _handler(on_layer: Callable[[], None]) -> Any:
    def handle(frame: Any) -> None:  # None is a null XLA_FFI_Error*: success
        call = frame.contents
        extension = call.extension_start
        if extension and extension.contents.type == METADATA_EXTENSION:
            metadata = ctypes.cast(extension, ctypes.POINTER(_MetadataExtension))
            described = metadata.contents.metadata.contents
            described.api_version.major_version, described.api_version.minor_version = (
                HANDLER_API_VERSION
            )
            described.traits = 0
        elif call.stage == EXECUTE_STAGE:
            on_layer()

    return _Handler(handle)


def _register(on_layer: Callable[[], None]) -> bool:
    """Register the handler once per process (the first `on_layer` is the one called);
    False where this jaxlib refuses it."""
    if not _registered:
        handler = _handler(on_layer)
        try:
            jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
        except Exception:  # an FFI this module does not know: fall back to host callbacks
            return False
        _registered.append(handler)
    return True


def layer_signal(on_layer: Callable[[], None]) -> Callable[[jax.Array], None]:
    """What the model calls, while traced, on a scalar of each layer's output; `on_layer`
    then runs (in a runtime thread) each time a running program passes that point."""
    ffi = _register(on_layer)

    def signal(value: jax.Array) -> None:
        if ffi and jax.default_backend() == "cpu":
            jax.ffi.ffi_call(TARGET, (), has_side_effect=True)(value)
        else:
            jax.debug.callback(lambda _: on_layer(), value)

    return signal
