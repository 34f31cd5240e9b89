"""Would playing the env steps in a second thread, during the gradient step, pay on this machine?

    python benchmarks/speed/overlap_acting.py                          # 1 env, padding valid
    python benchmarks/speed/overlap_acting.py model.padding=same env.num_envs=4

A bare loop on Pong with the real network, loss, optimizer and envs, timed two ways in
alternating repeats (``--repeats`` of each, ``--updates`` update cycles per repeat):

- sequential, as the training loop runs: forward and backward pass, Adam, then the
  ``train_freq`` env steps (acting forward pass, env step) with the updated network;
- overlapped: the same env steps run in a second Python thread (one torch thread) while
  the main thread computes the forward and backward pass; Adam waits for the env steps, so
  the actor reads the same parameters as in the sequential loop. In training, the batch
  would then have to be drawn before those steps are stored (as if they were), redoing the
  rare rows they touch; here the batch is fixed, which only favours the overlap.

It prints the median milliseconds per update cycle of each and their ratio. A ratio
below 1 means the second core had idle time the env steps could use.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch
from _common import FixedBatchUpdate, compose_config
from _common import COMMON

from emdqn.envs.vector import make_envs


class EnvStepsInThread:
    """A worker thread that plays ``steps`` env steps each time it is started."""

    def __init__(self, play):
        self.play = play
        self.start_signal, self.done_signal = threading.Event(), threading.Event()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # One torch thread here: the main thread's two already fill both cores.
        torch.set_num_threads(1)
        while True:
            self.start_signal.wait()
            self.start_signal.clear()
            if self.stopping:
                return
            self.play()
            self.done_signal.set()

    def start(self) -> None:
        self.start_signal.set()

    def wait(self) -> None:
        self.done_signal.wait()
        self.done_signal.clear()

    def close(self) -> None:
        self.stopping = True
        self.start_signal.set()
        self.thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=200, help="update cycles per timed repeat")
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats of each way")
    parser.add_argument("overrides", nargs="*", help="overrides, e.g. model.padding=same env.num_envs=4")
    args = parser.parse_args()
    if args.updates < 1 or args.repeats < 1:
        parser.error("--updates and --repeats must be at least 1")
    cfg = compose_config(COMMON + ["model.padding=valid"] + args.overrides)
    torch.set_num_threads(2)
    envs = make_envs(cfg.env, seed=0)
    envs.reset()
    update = FixedBatchUpdate(cfg, envs.observation_shape, envs.num_actions)
    vector_steps = max(1, int(cfg.agent.train_freq) // envs.num_envs)

    def play() -> None:
        for _ in range(vector_steps):
            with torch.inference_mode():
                actions = update.q_network(torch.as_tensor(envs.observations)).argmax(dim=1).numpy()
            envs.step(actions)

    worker = EnvStepsInThread(play)

    def cycle_ms(overlapped: bool, updates: int) -> float:
        start = time.perf_counter()
        for _ in range(updates):
            if overlapped:
                worker.start()
                update.forward_backward()
                worker.wait()
                update.optimizer.step()
            else:
                update()
                play()
        return (time.perf_counter() - start) / updates * 1e3

    cycle_ms(False, 20), cycle_ms(True, 20)  # warm-up: oneDNN kernels, caches, the thread's torch state
    timings: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for overlapped in (False, True):
            timings[overlapped].append(cycle_ms(overlapped, args.updates))
    worker.close()
    sequential, overlapped = statistics.median(timings[False]), statistics.median(timings[True])
    print(f"{envs.num_envs} env(s), padding {cfg.model.padding}, {vector_steps} vector step(s) per update")
    print(f"sequential: {sequential:.2f} ms per update (repeats: {', '.join(f'{t:.2f}' for t in timings[False])})")
    print(f"overlapped: {overlapped:.2f} ms per update (repeats: {', '.join(f'{t:.2f}' for t in timings[True])})")
    print(f"overlapped / sequential: {overlapped / sequential:.3f}")
    envs.close()


if __name__ == "__main__":
    main()
