"""The intercom ("portaria") flow on bridge, on a simulated or a real SIP stack.

Run it with ``python -m examples.telephony_flow`` (see ``__main__`` for the
options). Read ``flow.py`` first: it is the conversation, and the only module
that shows how to use bridge in a call flow. The rest is scaffolding:

* ``telephony``: the ``Telephony`` / ``CallEvents`` / ``AudioStream`` seam
  between a stack and the flow;
* ``stacks/``: ``simulate`` (seeded visitors whose callbacks arrive on foreign
  threads), ``sip`` (a real SIP user agent on pjsua2, optional extra ``sip``),
  and ``media``, the paced playout of prompts both share;
* ``services/``: ``directory``, the building's HTTP directory on 127.0.0.1, and
  ``tts``, a simulated streaming TTS engine;
* ``ledger``: the flow's record of calls and figures; ``runner``: starts and
  stops a run on a fresh bridge; ``summary``: the table and the JSON line;
* ``legacy``: the same flow written with a thread and ``asyncio.run`` per event,
  for comparison (``--legacy``).
"""
