"""__NAME__: a Propeller workload in Python. It targets the `workload` world of
wit/proplet.wit (the WIT of the proplet that created it): the proplet calls `run`, which
reads the task's inputs, logs, and reports one result.

Build with `just build` (componentize-py); the logic lives in logic.py.
"""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, report, task

from logic import total


class Handler(exports.Handler):
    def run(self) -> None:
        inputs = task.inputs()
        log.write(log.Level.INFO, f"task {task.id()} started with {len(inputs)} inputs")
        try:
            value = total(inputs)
        except ValueError as e:
            raise Err(str(e))
        report.text(f"sum={value}")
