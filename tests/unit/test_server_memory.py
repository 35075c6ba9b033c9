"""bench.server_memory reads a server's memory from its Prometheus /metrics text."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bench.server_memory import MIB, memory

METRICS = """# HELP process_resident_memory_bytes Resident memory size in bytes.
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 1.073741824e+09
# HELP openr:process_peak_resident_memory_bytes Peak resident memory.
# TYPE openr:process_peak_resident_memory_bytes gauge
openr:process_peak_resident_memory_bytes 2.147483648e+09
# HELP openr:requests_total Requests.
# TYPE openr:requests_total counter
openr:requests_total 3.0
"""


def read(text: str) -> dict:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=text))

    async def go():
        async with httpx.AsyncClient(transport=transport) as client:
            return await memory(client, "http://server/metrics")

    return asyncio.run(go())


def test_the_resident_set_and_its_high_water_mark_are_read_in_mib():
    found = read(METRICS)
    assert found == {"process_resident_memory_bytes": 1024.0, "openr:process_peak_resident_memory_bytes": 2048.0}
    assert MIB == 1024 * 1024


def test_a_server_without_the_peak_gauge_is_refused_by_name():
    text = "\n".join(line for line in METRICS.splitlines() if "peak" not in line) + "\n"
    with pytest.raises(SystemExit, match="openr:process_peak_resident_memory_bytes"):
        read(text)
