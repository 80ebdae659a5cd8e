"""The embedded broker (the demo's default and the tests' fallback) keeps MQTT's retained-message rules."""

from __future__ import annotations

import asyncio

import aiomqtt

from mullet.simulators.broker import EmbeddedBroker


async def test_embedded_broker_sends_retained_messages_only_to_subscribers() -> None:
    broker = EmbeddedBroker()
    await broker.start()
    try:
        async with aiomqtt.Client(broker.host, broker.port, identifier="publisher") as publisher:
            await publisher.subscribe("site/a/#", qos=1)  # a filter some other client holds
            await publisher.publish("site/a/set", b"retained-a", qos=1, retain=True)
            async with aiomqtt.Client(broker.host, broker.port, identifier="late") as late:
                await late.subscribe("site/b/#", qos=1)
                await publisher.publish("site/b/state", b"live-b", qos=1)
                async with asyncio.timeout(5):
                    message = await anext(aiter(late.messages))
                assert message.topic.value == "site/b/state"
                assert message.payload == b"live-b"
                await late.subscribe("site/a/#", qos=1)
                async with asyncio.timeout(5):
                    message = await anext(aiter(late.messages))
                assert (message.topic.value, message.payload, message.retain) == (
                    "site/a/set",
                    b"retained-a",
                    True,
                )
    finally:
        await broker.stop()
