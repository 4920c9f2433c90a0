"""The CI webhook gateway: signed HTTP deliveries that start mlsteward deployments.

Open-source Prefect has no inbound webhooks (a Prefect Cloud feature), so CI reaches the
training, drift and scoring deployments through this small FastAPI service instead:
``signing`` (HMAC-SHA256 as GitHub signs), ``payloads`` (what a delivery asks for),
``limits`` (what a signed delivery may ask for: trials, files), ``deliveries`` (each delivery
accepted once), ``runs`` (starting deployment runs), ``refusals`` (refusals before
authentication, counted and summed into one audit record a minute), ``app`` (the HTTP
endpoint, its refusals and their audit records) and ``client`` (what CI and ``mlsteward
trigger`` send).
"""
