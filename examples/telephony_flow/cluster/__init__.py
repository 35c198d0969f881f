"""The example's ``cluster`` mode: many ``sip`` user agents behind a Kamailio proxy.

``python -m examples.telephony_flow cluster --processes 3 --listen 127.0.0.1:5060``
starts Kamailio (dispatcher over the agents, OPTIONS probing, ``record_route``,
failover to the next agent on 486/503/408) and N agent processes, each with its
own bridge, all as ``run_process`` jobs of the cluster's bridge; counts the
calls from the agents' JSON event lines; drains agents (out of the dispatcher
first, then SIGTERM) and adds their summaries up.

Modules: :mod:`.proxy` (the Kamailio configuration and commands),
:mod:`.ledger` (the agents' events), :mod:`.report` (the summary),
:mod:`.run` (the run itself), :mod:`.cli` (the command line), :mod:`.agent`
(the agents' event lines and drain), :mod:`.netns` with ``netns.sh`` (the same
cluster across network namespaces, ``make cluster-netns``).
"""
