"""A run killed mid-way and resumed from its checkpoint ends exactly where an uninterrupted one does."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import src_core
from src_core import DIPError, DIPRun, bernoulli_mask
from src_core.checkpoint import Checkpoint

KILLED_AT = 15

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    from conftest import tiny_config
    from src_core import DIPRun, bernoulli_mask, speed
    from src_core.checkpoint import Checkpoint
    speed.choose_threads(1)
    image, mask, held = np.load({arrays!r}).values()
    cfg = tiny_config(**{settings!r})
    run = DIPRun(image, mask, cfg, validation=held, threads=1, checkpoint=Checkpoint({path!r}, every_s=0))
    for event in run:
        if event.kind == "progress" and event.iteration == {killed_at}:
            os.kill(os.getpid(), signal.SIGKILL)   # no clean-up, no finally: like a crash
""")


def problem():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:32] / 31.0
    image = (0.5 + 0.3 * np.sin(6 * x) * np.cos(4 * y))[None].astype(np.float32)
    mask = bernoulli_mask((32, 32), 0.4, seed=1)
    held = mask & (rng.random((32, 32)) < 0.1)
    return image, mask & ~held, held


@pytest.mark.parametrize("settings", [
    dict(iterations=30, report_every=5, ema=0.9, guard_every=5),
    dict(iterations=30, report_every=5, early_stop=True, es_window=4, es_patience=100, guard=False),
], ids=["ema-validation-guard", "early-stop-window"])
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, tiny, settings):
    image, mask, held = problem()
    validation = held if not settings.get("early_stop") else None
    cfg = tiny(**settings)
    straight = DIPRun(image, mask, cfg, validation=validation, threads=1).run()

    arrays = tmp_path / "problem.npz"
    np.savez(arrays, image=image, mask=mask, held=validation if validation is not None else np.zeros_like(mask))
    path = tmp_path / "run.ckpt"
    script = SCRIPT.format(root=str(src_core.__path__[0] + "/../tests"), arrays=str(arrays),
                           settings=settings, path=str(path), killed_at=KILLED_AT)
    if validation is None:
        script = script.replace("validation=held", "validation=None")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, done.stderr[-2000:]   # killed, as planned
    assert path.is_file()

    resumed = DIPRun(image, mask, cfg, validation=validation, threads=1,
                     checkpoint=Checkpoint(path)).run()
    assert resumed.history.notes[-1] == f"resumed from a checkpoint at iteration {KILLED_AT}"
    np.testing.assert_array_equal(resumed.output, straight.output)
    assert resumed.history.loss == straight.history.loss
    assert resumed.history.iterations == straight.history.iterations
    assert resumed.history.answer_iteration == straight.history.answer_iteration


def test_a_checkpoint_of_another_problem_is_refused(tmp_path, tiny):
    image, mask, _ = problem()
    path = tmp_path / "run.ckpt"
    run = DIPRun(image, mask, tiny(iterations=10, report_every=5), checkpoint=Checkpoint(path, every_s=0))
    for event in run:
        if event.kind == "progress":
            run.request_stop()
    assert path.is_file()  # a stopped run keeps its checkpoint
    other = DIPRun(image, mask, tiny(iterations=10, report_every=5, seed=3), checkpoint=Checkpoint(path))
    with pytest.raises(DIPError, match=r"belongs to another run \(settings that differ: seed 0 -> 3\)"):
        other.run()
    with pytest.raises(DIPError, match="the same settings, another image, mask or seed"):
        DIPRun(image[:, ::-1].copy(), mask, tiny(iterations=10, report_every=5), checkpoint=Checkpoint(path)).run()
    path.write_bytes(b"garbage")
    with pytest.raises(DIPError, match="cannot read the checkpoint"):
        DIPRun(image, mask, tiny(iterations=10, report_every=5), checkpoint=Checkpoint(path)).run()
