"""A QoS 1 PUBLISH written straight to paho's socket: the fast path's broadcast.

paho's `publish()` plus `loop_write()` took ~0.18 ms of a trip at p50 and 0.4-0.6 ms at p99 on a
cold cache (bench/trip_latency.py), against a 1 ms budget for the whole fast path: topic validation,
debug logging, a byte to its socketpair, a writer registration through the loop's self-pipe, then
the write. When nothing is queued ahead of it, this frames the same PUBLISH (MQTT 3.1.1 section
3.3.1) and sends it at once (~0.09 / 0.25 ms), with the message in paho's own QoS 1 state
(`_out_messages`, the in-flight count) exactly as `publish()` leaves it, so that paho handles the
PUBACK, the keep-alive and a partial write as for any other publish.

This reads paho-mqtt 2.x internals; pyproject pins paho-mqtt below 3. tests/test_mqtt_link.py runs
it against a real mosquitto (framing, PUBACK, a partial write, the in-flight window) and
tests/test_mqtt_security.py over TLS.
"""

from __future__ import annotations

import time

from paho.mqtt.client import Client, MQTTMessage, MQTTv5, mqtt_ms_wait_for_puback

_PUBLISH_QOS1 = 0x32  # PUBLISH, QoS 1, no DUP, no RETAIN


def topic_field(topic: str) -> bytes:
    """The topic as the PUBLISH carries it (length-prefixed UTF-8); a filter is refused as paho would."""
    encoded = topic.encode()
    Client._raise_for_invalid_topic(encoded)
    return len(encoded).to_bytes(2, "big") + encoded


def publish_qos1(paho: Client, topic: bytes, payload: bytes) -> int | None:
    """Send `payload` on `topic` (a `topic_field`) now; its mid, or None when it must go through
    `paho.publish` instead (no socket, a packet already queued, the in-flight window full, MQTT 5)."""
    if paho._sock is None or paho._out_packet or paho._protocol == MQTTv5:
        # A partly written packet sits at the head of that queue: nothing may go before it. MQTT 5
        # (not used by Mullet) adds properties this does not frame.
        return None
    with paho._out_message_mutex:
        inflight_limit, queued_limit = paho._max_inflight_messages, paho._max_queued_messages
        if (inflight_limit and paho._inflight_messages >= inflight_limit) or (
            queued_limit and len(paho._out_messages) >= queued_limit
        ):
            return None
        mid = paho._mid_generate()
        if mid in paho._out_messages:
            return None
        body = topic + mid.to_bytes(2, "big") + payload
        frame = paho._pack_remaining_length(bytearray((_PUBLISH_QOS1,)), len(body)) + body
        message = MQTTMessage(mid, topic[2:])
        message.timestamp = time.monotonic()
        message.payload = payload
        message.qos = 1
        message.state = mqtt_ms_wait_for_puback
        paho._out_messages[mid] = message
        paho._inflight_messages += 1
        try:
            sent = paho._sock_send(frame)
        except OSError:
            # A full send buffer (BlockingIOError) or a dead connection: paho's writer sends the
            # frame later or meets the error itself, and the session's end fails the PUBACK future.
            sent = 0
        if sent < len(frame):
            paho._out_packet.append(
                {
                    "command": _PUBLISH_QOS1 & 0xF0,
                    "mid": mid,
                    "qos": 1,
                    "pos": sent,
                    "to_process": len(frame) - sent,
                    "packet": frame,
                    "info": message.info,
                }
            )
            paho._call_socket_register_write()
        return mid
