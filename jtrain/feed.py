"""Training batches copied to the device many at a time, then handed to the jitted calls from there.

Copying a batch to the device has a fixed cost, and while a step is running the copy also waits for the step's
compute threads: fed one batch per step, small models ran well below their speed on batches already on the
device (BENCHMARKS.md). So the pipeline stacks T
consecutive batches into one element (T, B, ...) and the loop copies each element once. With k steps per call
(train.steps_per_call), each scanned call slices its k batches out of the chunk itself, and so does a call of
one step on small batches (up to 32 KB). A call of one step on larger batches instead takes the NEXT call's
batch out of the chunk (and finishes it: uint8 images scaled) as an extra output, so that its own step reads a
whole array. Either way a step is one dispatch, and batch indices are device scalars made once, so nothing is
copied from the host between transfers. The examples and their order are those of T single batches
(tests/test_feed.py).

Checkpoints record the position as the number of global batches trained on, which T does not change: a run
saved in the middle of a chunk resumes on exactly the next batch, with any T.
"""

from __future__ import annotations

import json
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Sharding

from jtrain.errors import UserError

AUTO_BATCHES = 32
# A transfer has a fixed cost (the pipeline's next element and the copy's launch) that is large beside a tiny
# model's step, even shared by 32 batches. Small batches therefore travel in larger stacks, up to AUTO_MIN_BYTES.
AUTO_MIN_BYTES = 1 << 20
AUTO_MAX_BATCHES = 1024
AUTO_MAX_BYTES = 64 << 20  # a transfer's bytes; device memory the chunk holds besides the state
# One step per call on batches up to this size slices its batch out of the chunk itself (faster for tiny models);
# larger batches are taken by the call before, since matmuls run faster on an array the call did not slice or
# convert (BENCHMARKS.md, "the loop's per-step path").
TAKE_IN_CALL_MAX_BYTES = 32 << 10


def batches_per_transfer(configured: int, steps_per_call: int, batch_bytes: int) -> int:
    """data.transfer_batches, or for 0 (auto) as many whole calls as fit in 64 MB and in 32 batches, or in 1 MB
    (at most 1024 batches) when that is more; at least one call."""
    if configured:
        return configured
    batch_bytes = max(batch_bytes, 1)
    wanted = min(AUTO_MAX_BATCHES, max(AUTO_BATCHES, AUTO_MIN_BYTES // batch_bytes))
    fit = max(1, min(wanted, AUTO_MAX_BYTES // batch_bytes))
    return max(steps_per_call, fit // steps_per_call * steps_per_call)


def batch_bytes(spec, batch: int) -> int:
    """Bytes of one training batch's inputs (float32 or int32, 4 bytes an element), the bulk of what is copied."""
    return 4 * batch * math.prod(spec.input_shape)


class DeviceFeed:
    """Feeds the loop's jitted calls (jtrain/components.py packed_call) from chunks on the device: `calls` makes
    the loop's `(state arrays, n) -> (state arrays, metrics)`.

    `iterator` (kept as `pipeline`) yields host chunks (T, B, ...) (a grain iterator, data.prefetch ahead);
    `put` copies one to the device, sharded over B. The feed is what checkpoints save as the data position (`get_state` / `set_state`,
    as a grain iterator offers them).
    """

    def __init__(self, iterator, put: Callable[[dict], dict], per_transfer: int, per_call: int,
                 batch_sharding: Sharding, chunk_sharding: Sharding, index_sharding: Sharding,
                 finish: Callable[[dict], dict] | None = None, take_in_call: bool = False):
        self.pipeline = iterator
        self._put = put
        self.per_transfer = per_transfer
        finish = finish or (lambda batch: batch)  # e.g. uint8 images scaled and standardised (a source's device_finish)
        self.per_call = per_call
        # One step per call: the call takes its own batch out of the chunk (small batches, TAKE_IN_CALL_MAX_BYTES),
        # or the step before took it.
        self.take_in_call = take_in_call and per_call == 1
        if per_call == 1:
            # The take is fused into the step's call: a separate small jitted call would double the dispatches.
            # For larger batches the take follows the step, whose matmuls then read a whole array rather than
            # one sliced or converted inside the same call (slower on CPU).
            def take(chunk, index):  # (T, B, ...) per key, () -> (B, ...) per key
                batch = jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, index, keepdims=False), chunk)
                return jax.lax.with_sharding_constraint(finish(batch), batch_sharding)

            self._take_in = take
            self._take = jax.jit(take)  # the first batch, and the first after a restore
        else:
            self._finish = jax.jit(finish, out_shardings=chunk_sharding)
            # old[start:] followed by new[:count], one call's batches (n, B, ...)
            self._join = jax.jit(lambda old, new, start, count: jax.tree.map(
                lambda a, b: jnp.concatenate([a[start:], b[:count]]), old, new), static_argnums=(2, 3),
                out_shardings=chunk_sharding)
        self._index_sharding = index_sharding
        # Batch offset -> device int32 scalar. Made here, all at once: made as first needed, each costs far more
        # than a tiny model's step, which slowed the first stack.
        self._indices: dict[int, jax.Array] = {}
        for offset in range(0, per_transfer, per_call):
            self._index(offset)
        self._chunk = None  # the current chunk on the device: (T, B, ...) per key
        self._taken = 0  # batches of the current chunk handed out
        self._position = None  # the pipeline's state before the current chunk
        self._skip = 0  # after a restore: batches of the next chunk already trained on
        self._batch = None  # one step per call: the next call's batch, taken by the call before
        self.waited = 0.0  # seconds spent fetching chunks from the pipeline and copying them (the loop's data wait)

    def calls(self, train_call: Callable[[int], Callable]) -> Callable:
        """The loop's call `(state arrays, n) -> (state arrays, metrics)` over `train_call(n)` (Run.train_call):
        with several steps per call, `train_call(n)(arrays, chunk, index)`; with one, `train_call(1)(arrays,
        batch)` jitted together with its batch's take from the chunk (take_in_call) or with the next call's."""
        if self.per_call > 1:
            return lambda arrays, n: train_call(n)(arrays, *self.next(n))
        step = train_call(1)
        if self.take_in_call:
            on_chunk = jax.jit(lambda arrays, chunk, index: step(arrays, self._take_in(chunk, index)),
                               donate_argnums=0)

            indices = self._indices

            def sliced_step(arrays, n):  # next(1), written out: this runs tens of thousands of times a second
                assert n == 1
                taken = self._taken
                if self._chunk is None or taken == self.per_transfer:
                    self._next_chunk()
                    taken = self._taken
                self._taken = taken + 1
                return on_chunk(arrays, self._chunk, indices[taken])

            return sliced_step

        def step_then_take(arrays, batch, chunk, index):
            arrays, metrics = step(arrays, batch)
            # The take waits for the step: left free to run beside the step's matmuls, it competes with them
            # for the CPU's threads.
            arrays, metrics, chunk = jax.lax.optimization_barrier((arrays, metrics, chunk))
            return arrays, metrics, self._take_in(chunk, index)

        # The state and the batch are donated: the next batch can reuse this one's buffer.
        fused = jax.jit(step_then_take, donate_argnums=(0, 1))

        def one_step(arrays, n):
            assert n == 1
            if self._chunk is None:
                self._next_chunk()
            batch = self._batch if self._batch is not None else self._take(self._chunk, self._index(self._taken))
            self._taken += 1
            if self._taken == self.per_transfer:  # the next batch is in the next chunk: fetch it now
                self._next_chunk()
            arrays, metrics, self._batch = fused(arrays, batch, self._chunk, self._index(self._taken))
            return arrays, metrics

        return one_step

    def next(self, n: int) -> tuple:
        """The device arguments (chunk, index of the first batch) of the next call of `n` steps that slices its
        batches out of the chunk itself."""
        rest = self.per_transfer - self._taken if self._chunk is not None else 0
        if 0 < rest < n:
            # A call straddling two chunks: only after a resume from a run whose last call was shorter than
            # steps_per_call. Its batches are joined on the device, so none is skipped (rare: compiles once).
            old, old_taken = self._chunk, self._taken
            self._next_chunk()
            self._taken = n - rest
            return self._join(old, self._chunk, old_taken, n - rest), self._index(0)
        if rest == 0:  # none yet, or the current one used up
            self._next_chunk()
        first = self._taken
        self._taken += n
        return self._chunk, self._index(first)

    def _next_chunk(self) -> None:
        began = time.perf_counter()
        self._position = self.pipeline.get_state()
        chunk = next(self.pipeline)  # (T, B, ...) per key; (B, ...) when T = 1
        chunk = self._put(chunk if self.per_transfer > 1 else {k: v[None] for k, v in chunk.items()})
        self._chunk = chunk if self.per_call == 1 else self._finish(chunk)  # one step: finished as taken
        self._taken, self._skip = self._skip, 0
        self.waited += time.perf_counter() - began

    def _index(self, offset: int) -> jax.Array:
        if offset not in self._indices:  # an offset only a resume after a shorter last call starts a call at
            self._indices[offset] = jax.make_array_from_callback((), self._index_sharding, lambda _: np.int32(offset))
        return self._indices[offset]

    # ------------------------------------------------------------------ checkpointed position

    def get_state(self) -> bytes:
        """{"batches": global batches trained on}: the pipeline's element i holds batches i*T ... i*T + T - 1
        (grain's map-dataset iterators count elements in `next_index`). Another iterator's own state is kept
        as it is, with the batches taken from its element, and then resumes with the same T only."""
        if self._chunk is None or self._taken == self.per_transfer:  # at a chunk boundary
            position, taken = self.pipeline.get_state(), self._skip
        else:
            position, taken = self._position, self._taken
        if isinstance(position, dict) and set(position) == {"next_index"}:
            return json.dumps({"batches": position["next_index"] * self.per_transfer + taken}).encode()
        return json.dumps({"pipeline": position, "taken": taken, "per_transfer": self.per_transfer}).encode()

    def set_state(self, state: bytes) -> None:
        state = json.loads(state)
        if "batches" in state:
            self.pipeline.set_state({"next_index": state["batches"] // self.per_transfer})
            skip = state["batches"] % self.per_transfer
        else:
            if state["per_transfer"] != self.per_transfer:
                raise UserError(f"config key 'data.transfer_batches': this data source's iterator resumes only in "
                                f"stacks of {state['per_transfer']} batches, as it was saved; resume with "
                                f"--config.data.transfer_batches={state['per_transfer']}")
            self.pipeline.set_state(state["pipeline"])
            skip = state["taken"]
        self._chunk, self._taken, self._skip, self._batch = None, 0, skip, None

    def start_prefetch(self) -> None:  # the grain checkpoint handler calls it after set_state
        start = getattr(self.pipeline, "start_prefetch", None)
        if start:
            start()


def for_run(run, seed: int, process_index: int = 0, process_count: int = 1) -> DeviceFeed:
    """The training feed of a built run (jtrain/components.py Run): its pipeline stacking T batches, uint8
    images finished on the device where possible (the source's device_finish), sharded over the run's mesh."""
    from jtrain import mesh as mesh_lib

    config = run.config
    per_call = config.train.steps_per_call
    local_bytes = batch_bytes(run.data.spec, config.data.batch_size // process_count)
    per_transfer = batches_per_transfer(config.data.transfer_batches, per_call, local_bytes)
    finish = run.data.device_finish(config.data)
    pipeline = iter(run.data.train_dataset(config.data, seed, process_index, process_count, per_transfer,
                                           raw=finish is not None))
    return DeviceFeed(pipeline, lambda chunk: run.put_batch(chunk, stacked=True), per_transfer, per_call,
                      mesh_lib.batch_sharding(run.mesh), mesh_lib.batch_sharding(run.mesh, stacked=True),
                      mesh_lib.replicated(run.mesh), finish, take_in_call=local_bytes <= TAKE_IN_CALL_MAX_BYTES)
