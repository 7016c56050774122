"""StartPacer: a burst of request starts is cut into turns of the event loop, in order, so that
the loop reads its sockets (and stamps what arrived) between them."""

from __future__ import annotations

import asyncio

import pytest

from benchmark.core.pacing import StartPacer


class _Turns:
    """Counts the turns of the event loop (a callback that re-schedules itself)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.count = 0
        self._loop = loop
        self._handle = loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.count += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def _burst(pacer: StartPacer, n: int) -> list[tuple[int, int]]:
    """``n`` starts at once; (start number, turn in which it went) in the order they went."""
    turns = _Turns(asyncio.get_running_loop())
    went: list[tuple[int, int]] = []

    async def start(i: int) -> None:
        await pacer.turn()
        went.append((i, turns.count))

    await asyncio.gather(*(start(i) for i in range(n)))
    turns.stop()
    return went


def test_starts_within_the_budget_go_in_one_turn() -> None:
    went = asyncio.run(_burst(StartPacer(budget_ns=10**12), 50))
    assert [i for i, _ in went] == list(range(50))
    assert len({turn for _, turn in went}) == 1


def test_a_spent_budget_sends_the_rest_to_later_turns_in_order() -> None:
    # budget 0: each turn lets exactly one start go (the first of a turn always goes)
    went = asyncio.run(_burst(StartPacer(budget_ns=0), 20))
    assert [i for i, _ in went] == list(range(20))
    turns = [turn for _, turn in went]
    assert len(set(turns)) == 20 and turns == sorted(turns)


def test_the_loop_reads_its_sockets_between_two_slices() -> None:
    """What arrives while a burst is being started is read before the next slice goes (the
    engine's first-token stamp is taken when the socket is read)."""

    async def main() -> list[str]:
        pacer = StartPacer(budget_ns=0)
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(*await _echo_server())
        log: list[str] = []
        read = asyncio.ensure_future(reader.readexactly(3))
        read.add_done_callback(lambda _: log.append("read"))

        async def start(i: int) -> None:
            await pacer.turn()
            log.append(f"start {i}")
            if i == 0:
                writer.write(b"abc")  # the answer arrives while the burst goes on

        await asyncio.gather(*(start(i) for i in range(30)))
        await read
        writer.close()
        return log

    log = asyncio.run(main())
    assert log.index("read") < log.index("start 29")


async def _echo_server() -> tuple[str, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readexactly(3))
        await writer.drain()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server.sockets[0].getsockname()[:2]


def test_a_cancelled_start_does_not_hold_the_others() -> None:
    async def main() -> list[int]:
        pacer = StartPacer(budget_ns=0)
        went: list[int] = []

        async def start(i: int) -> None:
            await pacer.turn()
            went.append(i)

        tasks = [asyncio.create_task(start(i)) for i in range(10)]
        await asyncio.sleep(0)          # all have asked; 0 went, the others wait
        tasks[1].cancel()
        tasks[2].cancel()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
        return went

    assert asyncio.run(main()) == [0, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("budget_ns", [0, 10**12])
def test_starts_that_come_later_queue_behind_the_waiting_ones(budget_ns: int) -> None:
    async def main() -> list[str]:
        pacer = StartPacer(budget_ns=budget_ns)
        went: list[str] = []

        async def start(name: str) -> None:
            await pacer.turn()
            went.append(name)

        first = [asyncio.create_task(start(f"a{i}")) for i in range(5)]
        await asyncio.sleep(0)
        later = [asyncio.create_task(start(f"b{i}")) for i in range(3)]
        await asyncio.gather(*first, *later)
        return went

    assert asyncio.run(main()) == [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(3)]
