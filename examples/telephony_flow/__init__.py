"""The intercom ("portaria") flow on bridge, on a simulated or a real SIP stack.

Run it with ``python -m examples.telephony_flow`` (see ``__main__`` for the
options). The modules:

* ``telephony``: the ``Telephony`` / ``CallEvents`` interface between a stack
  and the flow;
* ``flow``: the conversation as async code on one bridge (the point of the
  example);
* ``simulate``: a stack of seeded visitors whose callbacks arrive on foreign
  threads; ``sip``: a real SIP user agent on pjsua2 (optional extra ``sip``);
* ``directory``: the building's HTTP directory service on 127.0.0.1;
* ``legacy``: the same flow written with a thread and ``asyncio.run`` per event,
  for comparison (``--legacy``);
* ``summary``: the table and the JSON line printed at the end.
"""
