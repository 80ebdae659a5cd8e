"""The site controller core: given time and inputs, it returns what to do.

Nothing here reads a clock, opens a socket or awaits: every input carries its own time (`now_s`, Unix
seconds, for what is recorded and planned; `now_mono_s`, monotonic seconds, for deadlines and
staleness), and every output is a command in `commands.py` that the daemon's I/O shell carries out in
order. That makes a whole site story (an event from notice to recall, a frequency trip) a plain,
repeatable function call sequence in tests (tests/test_controller.py), and later a replay of a journal.
"""
