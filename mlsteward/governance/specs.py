"""What a promotion or rollback run does, worked out once at its start.

The flows' parameters, the model's config and the acting person or run become one typed spec
each (``PromotionSpec``, ``RollbackSpec``). A request that cannot be right (no version to
promote, a rollback without a reason) is refused here, before the config or the registry is
read. What the registry and the audit trail say about the version (already champion, failed
validation, rejected by a person) is the candidate's check (``governance.candidate``), made
when the run reads it. Who approves is never a parameter: under the manual policy the run asks
through the pause form, where only an approval token counts.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mlsteward.config.models import ModelConfig, get_model_config
from mlsteward.errors import PromotionError


class PromotionSpec(BaseModel):
    """One promote run: which version, for whom and why, and whether the gates run again
    even when the version's report is current."""

    model_config = ConfigDict(frozen=True)

    cfg: ModelConfig
    version: str
    reason: str | None = None
    revalidate: bool = False
    actor: str

    @staticmethod
    def check_request(version: str) -> None:
        """Raises:
        PromotionError: no version named.
        """
        if not version:
            raise PromotionError("promote needs a version number")

    @classmethod
    def resolve(
        cls,
        model: str,
        *,
        version: str,
        reason: str | None = None,
        revalidate: bool = False,
        actor: str,
    ) -> PromotionSpec:
        """The request checked (:meth:`check_request`), then the model's config.

        Raises:
            PromotionError: the request cannot be right.
            ConfigError: no (valid) config for ``model``.
        """
        cls.check_request(version)
        return cls(
            cfg=get_model_config(model),
            version=version,
            reason=reason,
            revalidate=revalidate,
            actor=actor,
        )


class RollbackSpec(BaseModel):
    """One rollback run: why, to which earlier champion (None: the one before the current),
    and who asked."""

    model_config = ConfigDict(frozen=True)

    cfg: ModelConfig
    reason: str
    to_version: str | None = None
    actor: str

    @staticmethod
    def check_request(reason: str) -> None:
        """Raises:
        PromotionError: no reason (it goes into the audit trail).
        """
        if not reason.strip():
            raise PromotionError("a rollback needs a reason (--reason TEXT)")

    @classmethod
    def resolve(
        cls, model: str, *, reason: str, to_version: str | None = None, actor: str
    ) -> RollbackSpec:
        """The request checked (:meth:`check_request`), then the model's config; an empty
        ``to_version`` means the previous champion, as an absent one does.

        Raises:
            PromotionError: no reason.
            ConfigError: no (valid) config for ``model``.
        """
        cls.check_request(reason)
        return cls(
            cfg=get_model_config(model), reason=reason, to_version=to_version or None, actor=actor
        )
