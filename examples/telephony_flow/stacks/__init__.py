"""Telephony stacks for the flow: ``simulate`` (seeded visitors) and ``sip`` (pjsua2).

``media`` is what both share: the paced playout of the flow's audio streams.
"""
