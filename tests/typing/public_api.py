"""The engine's public API as a user's script calls it, checked by mypy in CI (.ci/run).

Never run (pytest collects only test_*.py); mypy reads it with the annotations of src_core,
so a signature or return type that stops matching the documented use fails the check.
"""

import threading

import numpy as np

import src_core
from src_core import DIPError, DIPRun, Finished, History, Problem, Progress, RestoreResult, RunConfig


def documented_calls() -> None:
    img: np.ndarray = src_core.load_sample("table1/house.png")
    result: RestoreResult = src_core.restore(img, task="random", iterations=8, stop=threading.Event())
    summary: dict = result.history.summary
    histories: list = result.histories
    spread: np.ndarray | None = result.spread
    image: np.ndarray = result.image
    saved: dict = result.to_dict()
    print(summary, histories, spread, image, saved)

    config: RunConfig = src_core.preset("cpu", iterations=8).replace(lr=0.01).validate()
    problem: Problem = src_core.prepare(img, task="random", config=config)
    run: DIPRun = problem.run(0)
    for event in run:
        if isinstance(event, Progress):
            print(event.iteration, event.psnr)
        elif isinstance(event, Finished):
            history: History = event.history
            print(history.summary, event.output.shape)
    run.close()
    again: RestoreResult = src_core.restore_problem(problem, img)
    one: DIPRun = src_core.iterate(img, task="random", config=config)
    print(again.image, one.problem)

    tiled: RestoreResult = src_core.restore_tiled(img, task="random", tile=128, iterations=8)
    print(tiled.image)
    src_core.write_image("out.png", result.image)

    try:
        src_core.restore(img, task="no such task")
    except DIPError as error:
        partial: RestoreResult | None = error.partial
        print(error, partial)
