"""The intercom ("portaria") flow on a simulated or a real SIP stack; see README."""
