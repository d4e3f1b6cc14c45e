"""A workload in Python, built with componentize-py against the proplet's `workload` world
(plus outbound HTTP, see wit/world.wit): it reads its task context, logs, and reports the
sum of its inputs; with the argument `kv` it counts its runs in a key-value bucket, with
`fetch` it GETs the URL in its first input.

Build: `just guests` (scripts/python-guest.sh).
"""

from urllib.parse import urlsplit

from wit_world import exports
from wit_world.imports import atomics, log, outgoing_handler, report, streams, task, types
from wit_world.imports import wasi_keyvalue_store
from componentize_py_types import Err, Ok

# The most of a response body kept.
MAX_BODY = 1 << 20


def fetch(url: str) -> str:
    """GETs `url` through wasi:http and returns its status and body as text. The proplet
    checks the URL against the task's grant: one outside it fails with an HTTP error code."""
    parts = urlsplit(url)
    request = types.OutgoingRequest(types.Fields())
    request.set_method(types.Method_Get())
    scheme = types.Scheme_Https() if parts.scheme == "https" else types.Scheme_Http()
    request.set_scheme(scheme)
    request.set_authority(parts.netloc)
    request.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    future = outgoing_handler.handle(request, None)
    with future.subscribe() as ready:
        ready.block()
    outcome = future.get()
    if outcome is None or isinstance(outcome, Err) or isinstance(outcome.value, Err):
        failure = outcome.value.value if outcome is not None and isinstance(outcome, Ok) else outcome
        raise Err(f"GET {url} failed: {failure}")
    response = outcome.value.value
    status = response.status()
    body = bytearray()
    with response.consume() as incoming:
        with incoming.stream() as stream:
            while len(body) < MAX_BODY:
                try:
                    body += stream.blocking_read(MAX_BODY - len(body))
                except Err as end:
                    if isinstance(end.value, streams.StreamError_Closed):
                        break
                    raise
    return f"{status} {body.decode(errors='replace')}"


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
        if "fetch" in task.args():
            report.text(f"{fetch(inputs[0])} (python)")
            return
        if "raise" in task.args():
            print("about to raise")
            raise ValueError(f"asked to raise with {len(inputs)} inputs")
        total = 0
        for text in inputs:
            total += int(text.strip())
        report.text(f"sum={total} (python)")
