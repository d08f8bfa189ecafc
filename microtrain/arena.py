"""The arena: one contiguous uint8 buffer of exactly plan.peak bytes; every tensor is a view into it.

The Plan decides where each buffer lives; the Arena only hands out NumPy views at those offsets. It is
TFLM's SingleArenaBufferAllocator over a user `tensor_arena` (arena_allocator/single_arena_buffer_allocator.cc)
with the planning already done, so a training step allocates nothing.
"""

from __future__ import annotations

import numpy as np

from microtrain.errors import ArenaOverflowError, InputError, PlanError
from microtrain.planner import ALIGNMENT, Plan


class Arena:
    """The bytes of one Plan: `buffer` is a 1-D uint8 array, len(buffer) == plan.peak exactly.

    Arena(plan) allocates plan.peak + alignment - 1 zeroed bytes and starts the arena at the first
    16-byte aligned address inside them (alignment = max(16, plan.alignment)), so every planned offset,
    a multiple of 16, is aligned for every NumPy dtype. Arena(plan, buffer=b) wraps a caller's uint8
    buffer instead: like TFLM's MicroAllocator::Create it skips to the first aligned address of b, so b
    must hold plan.peak bytes after that padding (at most alignment - 1 bytes; none if b is aligned).
    """

    def __init__(self, plan: Plan, buffer: np.ndarray | None = None):
        if not isinstance(plan, Plan):
            raise PlanError(f"Arena needs a microtrain.planner.Plan, got {type(plan).__name__}")
        align = max(ALIGNMENT, plan.alignment)
        if buffer is None:
            raw = np.zeros(plan.peak + align - 1, np.uint8)
        else:
            if not isinstance(buffer, np.ndarray) or buffer.dtype != np.uint8 or buffer.ndim != 1:
                raise InputError("the arena buffer must be a 1-D numpy uint8 array, got "
                                 f"{getattr(buffer, 'dtype', type(buffer).__name__)} "
                                 f"with shape {getattr(buffer, 'shape', None)}")
            if not buffer.flags.c_contiguous or not buffer.flags.writeable:
                raise InputError("the arena buffer must be contiguous and writeable: pass np.zeros(n, np.uint8)")
            raw = buffer
        pad = (-raw.ctypes.data) % align  # bytes skipped to reach an aligned start
        if raw.size < pad + plan.peak:
            short = pad + plan.peak - raw.size
            raise ArenaOverflowError(
                f"the arena buffer holds {raw.size} bytes but the plan needs {plan.peak} bytes"
                f"{f' after {pad} bytes of alignment padding' if pad else ''}: {short} bytes short; pass at "
                f"least {plan.peak + align - 1} bytes (any start address) or a {align}-byte aligned buffer of "
                f"{plan.peak} bytes")
        self._plan = plan
        self._buffer = raw[pad:pad + plan.peak]
        self._views: dict = {}

    @property
    def plan(self) -> Plan:
        return self._plan

    @property
    def buffer(self) -> np.ndarray:
        """The whole arena, 1-D uint8, exactly plan.peak bytes, starting at an aligned address."""
        return self._buffer

    def __len__(self) -> int:
        return len(self._buffer)

    def read_only_view(self, name: str, shape, dtype) -> np.ndarray:
        """view(name, shape, dtype) made read-only (cached like view): how a kernel that only reads an arena
        buffer gets it bound (see read_only)."""
        v = self.view(name, shape, dtype)
        key = (name, v.shape, v.dtype, "read-only")
        if key not in self._views:
            self._views[key] = read_only(v)
        return self._views[key]

    def view(self, name: str, shape, dtype) -> np.ndarray:
        """A C-contiguous view of buffer `name` with this shape and dtype, at the buffer's planned offset.

        The view may cover at most the buffer's requested nbytes (else ArenaOverflowError). The same
        (name, shape, dtype) returns the same cached array object, so a step that asks again allocates
        nothing. Views of buffers whose lifetimes do not overlap may share bytes: that is the plan.
        """
        key = (name, shape, dtype)
        try:
            return self._views[key]
        except (KeyError, TypeError):  # TypeError: unhashable shape (a list); normalise below
            pass
        b = self._plan[name]  # PlanError for an unknown name
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        dtype = np.dtype(dtype)
        norm = (name, shape, dtype)
        if norm in self._views:
            return self._views[norm]
        if any(s < 0 for s in shape):
            raise InputError(f"view {name!r}: shape {shape} has a negative dimension")
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if need > b.nbytes:
            raise ArenaOverflowError(
                f"view {name!r} of shape {shape} {dtype} needs {need} bytes but the plan gave {name!r} "
                f"{b.nbytes} bytes: {need - b.nbytes} bytes too many; request at least {need} bytes for "
                f"{name!r} when planning, or view a smaller shape")
        if (self._buffer.ctypes.data + b.offset) % dtype.alignment:
            raise PlanError(f"view {name!r}: offset {b.offset} is not aligned for {dtype} "
                            f"({dtype.alignment} bytes); build the plan with alignment >= {dtype.alignment}")
        v = self._buffer[b.offset:b.offset + need].view(dtype).reshape(shape)
        self._views[norm] = v
        try:
            self._views[key] = v
        except TypeError:
            pass
        return v


def read_only(a):
    """`a` itself if it is read-only, else a read-only view of the same memory.

    Why: Numba compiles one specialisation of a kernel per combination of argument types, and an array's
    writability is part of its type. A kernel input that is a flash constant (read-only) in one binding and an
    arena buffer or a writable NumPy array in another would compile the whole kernel twice, which is seconds of
    first-call time for a parallel kernel. So every array a kernel only reads is bound read-only.
    """
    if not a.flags.writeable:
        return a
    v = a.view()
    v.setflags(write=False)
    return v
