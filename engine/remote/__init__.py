"""Many hosts over plain OpenSSH: named hosts, the agent and its protocol.

``engine.remote.hosts`` reads hosts.toml; ``engine.remote.agent`` is
``vstui agent``, this host's engine on stdin/stdout; ``engine.remote.client``
reaches an agent through ``ssh`` (one multiplexed connection per host);
``engine.remote.protocol`` is the wire format both speak. Nothing here
imports a UI.
"""
