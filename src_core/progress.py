"""The one progress bar of the command line: ``dip <task>`` and every ``dip reproduce`` command.

A tqdm bar over all the iterations of a command, fed by the engine's
events: work already done (resumed units) counts as done, a unit that ends
early (early stopping) is counted in full, and guard recoveries and early
stops are printed above the bar.
"""

from __future__ import annotations


class ProgressBar:
    def __init__(self, total: int, label: str, quiet: bool = False, done: int = 0):
        from tqdm import tqdm

        self.bar = tqdm(total=max(total, 1), initial=min(done, total), desc=label, unit="it",
                        disable=quiet, dynamic_ncols=True)
        self.quiet = quiet
        self.unit_done = 0     # iterations of the current unit (slice, image, seed) counted so far
        self._unit = None

    def start(self, name: str) -> None:
        """A new unit of work begins (its name replaces the label)."""
        self.unit_done = 0
        self.bar.set_description(name, refresh=False)

    def __call__(self, event, unit=0) -> None:
        """An engine event; ``unit`` (e.g. the slice index) tells units apart."""
        if unit != self._unit:
            self._unit, self.unit_done = unit, 0
        if event.kind == "progress":
            self.bar.update(event.iteration - self.unit_done)
            self.unit_done = event.iteration
            info = {"loss": f"{event.loss:.2e}", "fit": f"{event.fit_psnr:.2f}dB"}
            if event.psnr is not None:
                info["psnr"] = f"{event.psnr:.2f}dB"
            self.bar.set_postfix(info, refresh=False)
        elif event.kind in ("recovery", "early_stop"):
            self.write(f"{'guard: ' if event.kind == 'recovery' else ''}{event.message}")

    callback = __call__

    def batch_callback(self, event, members: int) -> None:
        """A batch's progress: each of its iterations is ``members`` units' iterations."""
        if event.kind == "progress":
            self.bar.update(members * event.iteration - self.unit_done)
            self.unit_done = members * event.iteration
            if event.psnr[0] is not None:
                self.bar.set_postfix({"psnr": "/".join(f"{p:.2f}" for p in event.psnr)}, refresh=False)

    def finish(self, iterations: int) -> None:
        """Count the rest of a unit that stopped early as done."""
        if iterations > self.unit_done:
            self.bar.update(iterations - self.unit_done)
        self.unit_done = 0

    def write(self, text: str) -> None:
        if not self.quiet:
            self.bar.write(text)

    def close(self) -> None:
        self.bar.close()
