"""A workload in Python, built with componentize-py against the same wit/ world as the
Rust sample: it reads its task context, logs, and reports the sum of its inputs.

Build: componentize-py -d ../../wit -w workload componentize app -o workload-py.wasm
(`just guests` does it).
"""

from wit_world import exports
from wit_world.imports import atomics, log, report, task, wasi_keyvalue_store
from componentize_py_types import Err


class Handler(exports.Handler):
    def run(self) -> None:
        inputs = task.inputs()
        log.write(log.Level.INFO, f"python task {task.id()} started with {len(inputs)} inputs")
        if "fail" in task.args():
            raise Err("asked to fail")
        if "kv" in task.args():
            # Counts its runs in the bucket named by its first input (wasi:keyvalue).
            bucket = wasi_keyvalue_store.open(inputs[0])
            runs = atomics.increment(bucket, "python-runs", 1)
            bucket.set("python-last", task.id().encode())
            report.text(f"runs={runs} (python)")
            return
        if "raise" in task.args():
            print("about to raise")
            raise ValueError(f"asked to raise with {len(inputs)} inputs")
        total = 0
        for text in inputs:
            total += int(text.strip())
        report.text(f"sum={total} (python)")
