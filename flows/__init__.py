"""Prefect flows: they only wire tasks together.

Wherever these flows run (the CLI, a deployment's worker, a test), Prefect logs a refusal
raised in one (a contract, config or governance error the message explains) as the line that
ends its run, without a traceback; any other exception keeps its traceback. Installed here, on
import, because a worker imports the flow's module and nothing of ours runs before it.
"""

from mlsteward.errors import quiet_refusals

quiet_refusals()
