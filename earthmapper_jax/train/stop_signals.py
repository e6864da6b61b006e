"""Stopping a training run on request: SIGTERM (a pre-emption notice) and Ctrl-C (SIGINT) ask
the loop to save a checkpoint after the current step and exit; a second Ctrl-C aborts.

    with StopSignals() as stop:      # the handlers are installed for the block only
        ... if stop.requested: save, break        # "SIGTERM" | "SIGINT" | None
"""

from __future__ import annotations

import signal

import jax


class StopSignals:
    """Remembers a SIGTERM (pre-emption notice) or a Ctrl-C (SIGINT) so the loop can save and
    exit cleanly; a second Ctrl-C aborts at once (KeyboardInterrupt, nothing more is saved)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested = None  # the name of the signal that asked to stop
        self._previous = {}

    def __enter__(self):
        # On multi-host runs JAX's preemption service owns SIGTERM (the trainer asks
        # ckpt.manager.reached_preemption instead).
        if jax.process_count() == 1:
            for sig in self.SIGNALS:
                try:
                    self._previous[sig] = signal.signal(sig, self._handle)
                except ValueError:  # not the main thread: no handler, rely on the default
                    pass
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        if signum == signal.SIGINT:
            print("\nCtrl-C: saving a checkpoint after this step (Ctrl-C again aborts without "
                  "saving)", flush=True)

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
