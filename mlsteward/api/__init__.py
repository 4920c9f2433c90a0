"""The governance REST API: mlsteward's state and decisions over HTTP, for people and tools
that are not at this machine's command line.

``app`` (``create_app``) wires one router per route group: ``identity`` (health, whoami),
``models`` (models, versions), ``decisions`` (validate, promote, approve, reject, rollback),
``approvals`` (the queue), ``runs`` (deployment runs), ``rollouts``, ``outcomes``, ``audit``,
``dashboard``. ``auth`` turns a bearer token into a principal and checks the route's
permission on its model; ``errors`` answers every refusal in one shape; ``schemas`` holds the
request and answer models; ``views`` reads the registry and audit trail for the read routes;
``launch`` starts deployment runs through the Prefect API as the gateway does. ``client`` is the
small HTTP client the CLI uses when ``MLSTEWARD_API_URL`` is set. Served by ``mlsteward api``
(``python -m mlsteward.api``).
"""
