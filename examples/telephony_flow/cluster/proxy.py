"""The SIP proxy in front of the agents: a Kamailio configuration, and the commands to run it.

:func:`write_config` writes ``kamailio.cfg`` and ``dispatcher.list`` into a
directory (the cluster uses a temporary one) for a :class:`ProxyPlan`:

- one dispatcher set (id 1) with the agents, probed with SIP OPTIONS every
  second (``ds_probing_mode`` 1: every agent, so one that stops answering is
  marked inactive after one failed probe and active again after one answer);
- new INVITEs go to an agent chosen round robin (algorithm 4) or to the one
  with the fewest calls (algorithm 10, Kamailio's own call-load tracking by
  Call-ID, updated on 2xx, BYE and failures);
- the proxy ``record_route()``s the INVITE, so in-dialog requests (ACK, INFO,
  BYE, both ways) pass through it and ``loose_route()`` sends them on;
- a 486 (the agent is full), 503 (it is draining) or 408 (it did not answer:
  tm's timer fired) makes the failure route try the next agent; a 408 also
  marks that agent inactive until a probe succeeds;
- tm's timers are short (:data:`FR_TIMER_MS`, :data:`FR_INV_TIMER_MS`), so a
  dead agent costs a caller about two seconds, not thirty;
- the ``ctl`` module listens on a Unix socket in the same directory, for
  ``kamcmd`` (:func:`kamcmd_args`).

Kamailio itself runs in the foreground (``-DD``), logging to stderr (``-E``),
with everything it writes at run time inside that directory (``-Y``).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = [
    "BALANCE",
    "FR_INV_TIMER_MS",
    "FR_TIMER_MS",
    "AgentState",
    "ProxyPlan",
    "find_kamailio",
    "kamailio_args",
    "kamcmd_args",
    "parse_dispatcher_list",
    "write_config",
]

#: ``--balance`` choices and the dispatcher algorithm each one means.
BALANCE: Final = {"round-robin": 4, "least-loaded": 10}
#: tm's final-response timer: how long a request waits for any reply (ms).
FR_TIMER_MS: Final = 2000
#: tm's timer for an INVITE that got a provisional reply but no final one (ms).
FR_INV_TIMER_MS: Final = 15000
#: Seconds between two OPTIONS probes of an agent.
PROBE_INTERVAL_S: Final = 1
#: The dispatcher set that holds the agents.
SET_ID: Final = 1
_MODULE_DIRS: Final = (
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/aarch64-linux-gnu/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/local/lib64/kamailio/modules",
    "/usr/local/lib/kamailio/modules",
)
_INSTALL_HINT: Final = "Kamailio is missing: apt-get install kamailio (Debian/Ubuntu)"

AgentState = Literal["active", "inactive", "trying", "disabled"]
_STATES: Final[dict[str, AgentState]] = {
    "A": "active",
    "I": "inactive",
    "T": "trying",
    "D": "disabled",
}


@dataclass(frozen=True)
class ProxyPlan:
    """What the proxy listens on and where it sends calls."""

    #: The proxy's IP address and UDP port.
    listen: tuple[str, int]
    #: Each agent's IP address and UDP port, agent #1 first.
    agents: tuple[tuple[str, int], ...]
    #: A key of :data:`BALANCE`.
    balance: str = "round-robin"

    def agent_uri(self, index: int) -> str:
        """The SIP URI of agent *index* (0-based) as the dispatcher lists it."""
        host, port = self.agents[index]
        return f"sip:{host}:{port}"


def find_kamailio() -> tuple[str, str, str]:
    """The ``kamailio`` and ``kamcmd`` programs and the modules directory.

    Raises:
        FileNotFoundError: one of them is missing; the message names the package.
    """
    kamailio = shutil.which("kamailio") or _existing("/usr/sbin/kamailio")
    kamcmd = shutil.which("kamcmd") or _existing("/usr/sbin/kamcmd")
    modules = next((d for d in _MODULE_DIRS if Path(d, "dispatcher.so").exists()), None)
    if kamailio is None or kamcmd is None or modules is None:
        raise FileNotFoundError(_INSTALL_HINT)
    return kamailio, kamcmd, modules


def _existing(path: str) -> str | None:
    return path if Path(path).exists() else None


def write_config(plan: ProxyPlan, directory: Path, modules: str) -> Path:
    """Write ``kamailio.cfg`` and ``dispatcher.list`` into *directory*; return the config's path.

    Raises:
        ValueError: *plan* names an unknown balance, or no agent.
    """
    if plan.balance not in BALANCE:
        raise ValueError(f"balance must be one of {sorted(BALANCE)}, not {plan.balance!r}")
    if not plan.agents:
        raise ValueError("the plan has no agent")
    dispatcher_list = directory / "dispatcher.list"
    dispatcher_list.write_text(_dispatcher_list(plan), encoding="utf-8")
    config = directory / "kamailio.cfg"
    config.write_text(_config(plan, directory, modules), encoding="utf-8")
    return config


def control_socket(directory: Path) -> Path:
    """The ``ctl`` module's Unix socket inside *directory*."""
    return directory / "kamailio.ctl"


def kamailio_args(kamailio: str, config: Path) -> list[str]:
    """The command line that runs Kamailio in the foreground on *config*."""
    runtime = config.parent
    # -DD: no daemon, but its worker processes (all in its process group);
    # -E: log to stderr; -Y: runtime files in our directory; small memory pools.
    return [kamailio, "-f", str(config), "-DD", "-E", "-Y", str(runtime), "-m", "64", "-M", "8"]


def kamcmd_args(kamcmd: str, directory: Path, *command: str) -> list[str]:
    """The ``kamcmd`` command line that sends *command* over the control socket."""
    return [kamcmd, "-s", f"unix:{control_socket(directory)}", *command]


def parse_dispatcher_list(text: str) -> dict[str, AgentState]:
    """Each destination URI's state from ``kamcmd dispatcher.list`` output.

    The FLAGS field's first letter is the state (``A``, ``I``, ``T``, ``D``);
    the second says whether the destination is probed.
    """
    states: dict[str, AgentState] = {}
    for match in re.finditer(r"URI:\s*(\S+)\s+FLAGS:\s*([AITD])", text):
        states[match.group(1)] = _STATES[match.group(2)]
    return states


# -- the files ------------------------------------------------------------------------


def _dispatcher_list(plan: ProxyPlan) -> str:
    lines = ["# set destination flags priority attributes (written by the cluster)"]
    for index in range(len(plan.agents)):
        # flags 9: inactive and probed until it answers an OPTIONS probe;
        # duid names it for least-loaded dispatching.
        lines.append(f"{SET_ID} {plan.agent_uri(index)} 9 0 duid=agent{index + 1}")
    return "\n".join(lines) + "\n"


def _config(plan: ProxyPlan, directory: Path, modules: str) -> str:
    host, port = plan.listen
    algorithm = BALANCE[plan.balance]
    load = algorithm == 10
    return _TEMPLATE.format(
        host=host,
        port=port,
        modules=modules,
        ctl=control_socket(directory),
        dispatcher_list=directory / "dispatcher.list",
        fr_timer=FR_TIMER_MS,
        fr_inv_timer=FR_INV_TIMER_MS,
        probe=PROBE_INTERVAL_S,
        set_id=SET_ID,
        algorithm=algorithm,
        hash_size=8 if load else 0,
        on_bye='if (is_method("BYE")) {\n            ds_load_update();\n        }' if load else "",
        on_reply='t_on_reply("COUNT_LOAD");' if load else "",
        on_failure="ds_load_unset();" if load else "",
        reply_route=_LOAD_REPLY_ROUTE if load else "",
    )


_LOAD_REPLY_ROUTE: Final = """
# Least-loaded: a 2xx confirms the call's load on its agent.
onreply_route[COUNT_LOAD] {
    if (status =~ "^2[0-9][0-9]$") {
        ds_load_update();
    }
}
"""

_TEMPLATE: Final = """#!KAMAILIO
# Written by `python -m examples.telephony_flow cluster`: a stateful proxy that
# spreads incoming calls over the agents in dispatcher set {set_id}.

debug=1
log_stderror=yes
# One UDP worker: two would forward an agent's 180 and 200 out of order at
# times, which a strict caller (sipp) takes as a failed call.
children=1
auto_aliases=no
disable_tcp=yes
dns=no
rev_dns=no
use_dns_cache=off
listen=udp:{host}:{port}
mpath="{modules}"

loadmodule "ctl.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "dispatcher.so"

modparam("ctl", "binrpc", "unix:{ctl}")
modparam("tm", "fr_timer", {fr_timer})
modparam("tm", "fr_inv_timer", {fr_inv_timer})
modparam("dispatcher", "list_file", "{dispatcher_list}")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_from", "sip:cluster@{host}:{port}")
modparam("dispatcher", "ds_ping_interval", {probe})
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_hash_size", {hash_size})

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        route(IN_DIALOG);
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    if (is_method("OPTIONS") && uri == myself) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    t_check_trans();
    if (!is_method("INVITE")) {{
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    record_route();
    if (!ds_select_dst("{set_id}", "{algorithm}")) {{
        sl_send_reply("503", "No Agent Available");
        exit;
    }}
    t_on_failure("NEXT_AGENT");
    {on_reply}
    route(RELAY);
}}

# ACK, INFO and BYE of a call follow the route set the INVITE recorded.
route[IN_DIALOG] {{
    if (loose_route()) {{
        {on_bye}
        route(RELAY);
    }}
    if (is_method("ACK")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    sl_send_reply("404", "Not Here");
    exit;
}}

route[RELAY] {{
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}

# 486 (the agent is full), 503 (it drains) or 408 (it did not answer): next agent.
failure_route[NEXT_AGENT] {{
    if (t_is_canceled()) {{
        exit;
    }}
    {on_failure}
    if (t_check_status("408")) {{
        ds_mark_dst("ip");
    }}
    if (t_check_status("486|503|408") && ds_next_dst()) {{
        t_on_failure("NEXT_AGENT");
        {on_reply}
        t_relay();
    }}
}}
{reply_route}"""
