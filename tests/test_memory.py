"""flywheel keeps freed scratch memory for reuse (flywheel.memory): a worker thread that
allocates, fills and frees the same large array chunk after chunk faults its pages in
once, not once per chunk. Measured in fresh processes (the setting is per process and
must precede the first worker thread), with and without importing flywheel."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from flywheel.memory import reuse_freed_memory

_CHUNKS = textwrap.dedent("""
    import json, resource, sys
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np
    if sys.argv[1] == "flywheel":
        import flywheel  # noqa: F401  (its import asks for the reuse)

    def chunk(i):
        # as a chunk's token arrays: several blocks of a few MB, more than 64 MB in all,
        # of sizes that vary a little from chunk to chunk
        blocks = [np.empty(1_000_000 + 1_000 * i + 50_000 * b, np.uint64) for b in range(10)]
        for block in blocks:
            block.fill(7)
        return sum(int(block[-1]) for block in blocks)

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(chunk, 0).result()  # the first chunk faults its memory in either way
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for i in range(1, 21):
            pool.submit(chunk, i).result()
        after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(json.dumps(after - before))
""")


def _page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _CHUNKS, mode], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_chunks_reuse_their_memory_instead_of_faulting_it_in_again():
    assert reuse_freed_memory() is True
    plain, reused = _page_faults("plain"), _page_faults("flywheel")
    # 20 chunks of about 90 MB each: without the setting the worker thread's heaps
    # (64 MB at most) are unmapped and mapped again, tens of thousands of pages faulted
    # in (about 49,000 here); with it, the first chunk's memory is reused (a few hundred)
    assert plain > 20_000, plain
    assert reused < plain / 10, (reused, plain)
