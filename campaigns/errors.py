"""The campaigns package's exception root.

Every class names the gRPC status it maps to in ``code``; serving's one error
interceptor turns ``code`` into the status and the message into the details. Messages
name the fix ("set budget.lifetime to at least the daily budget 50.0").
"""

from __future__ import annotations


class CampaignError(Exception):
    """Root of the campaigns package's errors; unknown subclasses map to INTERNAL."""

    code = "INTERNAL"


class ValidationError(CampaignError):
    """One or more validation rules failed; ``problems`` lists each (field, message)."""

    code = "INVALID_ARGUMENT"

    def __init__(self, problems: list[tuple[str, str]] | str, *, entity: str = "") -> None:
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems = list(problems)
        self.entity = entity
        lines = [f"{field}: {msg}" if field else msg for field, msg in self.problems]
        head = f"{entity} is invalid" if entity else "invalid input"
        super().__init__(head + ":\n  " + "\n  ".join(lines) if len(lines) > 1 else f"{head}: {lines[0]}")

    @property
    def field(self) -> str | None:
        """The first bad field (serving sends it as the ``x-error-field`` trailing metadata)."""
        return self.fields[0] if self.fields and self.fields[0] else None

    @property
    def fields(self) -> list[str]:
        return [field for field, _ in self.problems]


class NotFound(CampaignError):
    """The advertiser, campaign, creative or product does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(CampaignError):
    """An entity with that id exists already; update it instead."""

    code = "ALREADY_EXISTS"


class PermissionDenied(CampaignError):
    """The caller may not touch this advertiser's campaigns."""

    code = "PERMISSION_DENIED"


class StoreUnavailable(CampaignError):
    """The campaign database cannot be reached or migrated."""

    code = "UNAVAILABLE"
