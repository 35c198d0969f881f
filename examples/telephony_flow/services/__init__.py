"""Stand-ins for the services the flow talks to: the building's directory and a TTS engine."""
